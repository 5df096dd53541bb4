#!/usr/bin/env bash
# WAF accuracy and cost: Portcullis against NGINX + ModSecurity v3 + OWASP CRS, on the same corpus, in one run.
#
#   bench/waf.sh                    # builds the release binary, replays tests/corpus/ through both
#   SKIP_BUILD=1 bench/waf.sh       # with the existing release binary ($CARGO_TARGET_DIR/release/portcullis)
#   MODSEC_ONLY=1 bench/waf.sh      # only the ModSecurity half (no Portcullis binary needed)
#
# Both proxies sit on loopback in front of one upstream (an NGINX `return 200`, pinned to $LOAD_CPU):
#   modsecurity  NGINX (1 worker) with Debian's libnginx-mod-http-modsecurity (libmodsecurity 3) and
#                modsecurity-crs (CRS 3.3): SecRuleEngine On, paranoia level 1, inbound anomaly threshold 5
#                (bench/modsecurity/main.conf), proxying with a keep-alive upstream pool
#   portcullis   the release binary, workers: 1, `inspect: { mode: block, paranoia: 1 }` (bench/configs/waf.yaml)
# Each proxy runs on CPU $PROXY_CPU. bench/waf_replay.py (Python 3 standard library) sends every corpus line
# once, in its place (tests/corpus/README.md), on one keep-alive connection, pinned to $LOAD_CPU, and records
# the status. An attack counts as stopped when the answer is a 4xx (neither proxy forwards those); a benign value
# is a false positive when it is not answered 2xx. CPU per request: utime+stime of the proxy's processes (all
# threads; NGINX master and worker) from /proc/PID/stat before and after the replay, over the requests sent.
# PASSES=N replays the corpus N times for the CPU figure (statuses come from the first pass): with 10 ms clock
# ticks, one pass of a fast proxy is only a few ticks.
#
# It ends with:
#   portcullis/modsecurity cpu-per-request ratio: X.XXX
#   portcullis detection: X.X% fp: X.X%
#   modsecurity detection: X.X% fp: X.X%
#
# With BASELINE=1 (the default) the corpus also goes through the same NGINX without ModSecurity (nginx-plain) and
# Portcullis without inspection (portcullis-plain, bench/configs/plain.yaml), so the WAF's own cost shows apart
# from proxying: the line before the last three gives each WAF's CPU per request over its plain proxy.
#
# Environment: PROXY_CPU (0), LOAD_CPU (1), PASSES (1), BASELINE (1), SKIP_BUILD=1, PORTCULLIS (binary path), MODSEC_ONLY=1,
# KEEP_WORK=1 (keep the temp dir: configs, logs, the ModSecurity audit log, per-line statuses).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PASSES=${PASSES:-1}
MODSEC_ONLY=${MODSEC_ONLY:-0}
BASELINE=${BASELINE:-1}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PORTCULLIS=${PORTCULLIS:-$TARGET_DIR/release/portcullis}
CORPUS=$ROOT/tests/corpus
MODSEC_MODULE=/usr/lib/nginx/modules/ngx_http_modsecurity_module.so

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'waf bench: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------------
# Tools
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
[ -f "$MODSEC_MODULE" ] || need+=(libnginx-mod-http-modsecurity)
[ -f /etc/modsecurity/crs/crs-setup.conf ] && [ -d /usr/share/modsecurity-crs/rules ] || need+=(modsecurity-crs)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
command -v python3 >/dev/null 2>&1 || die "python3 is needed"
command -v taskset >/dev/null 2>&1 || die "taskset (util-linux) is needed"
[ -f /etc/nginx/modsecurity.conf ] || die "no /etc/nginx/modsecurity.conf (Debian's libnginx-mod-http-modsecurity installs it)"
if [ "$(nproc)" -lt 2 ]; then
  log "only one CPU: proxy, upstream and replay share it"
  PROXY_CPU=0
  LOAD_CPU=0
fi

if [ "$MODSEC_ONLY" != 1 ]; then
  if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet)
  fi
  [ -x "$PORTCULLIS" ] || die "no binary at $PORTCULLIS (MODSEC_ONLY=1 runs the ModSecurity half alone)"
fi

# ---------------------------------------------------------------------------------------------------
# Process bookkeeping: everything started here is stopped on exit, by PID.
WORK=$(mktemp -d /tmp/portcullis-waf.XXXXXX)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  sleep 0.3
  for pid in "${PIDS[@]}"; do
    kill -KILL "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [ "${KEEP_WORK:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_port() { # port [seconds]
  local port=$1 tries=$(( ${2:-10} * 20 ))
  while [ $tries -gt 0 ]; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.05
    tries=$((tries - 1))
  done
  return 1
}

# CPU ticks (utime + stime) of the given PIDs; /proc/PID/stat covers all threads of the process.
cpu_ticks() {
  local total=0 pid line rest
  for pid in "$@"; do
    line=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    rest=${line##*) }
    # shellcheck disable=SC2086
    set -- $rest
    total=$((total + ${12} + ${13}))
  done
  echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)

# NGINX instances: own prefix and config, one worker, foreground, pinned. Sets NGINX_PIDS (master and workers).
start_nginx() { # name cpu main-context-lines http-body
  local name=$1 cpu=$2 main=$3 body=$4 prefix="$WORK/$1" tries=100 workers=""
  mkdir -p "$prefix"
  cat >"$prefix/nginx.conf" <<EOF
$main
worker_processes 1;
$( [ "$(id -u)" = 0 ] && echo "user root root;" )
pid $prefix/nginx.pid;
error_log $prefix/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    server_tokens off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path $prefix/client_body;
    proxy_temp_path $prefix/proxy;
    fastcgi_temp_path $prefix/fastcgi;
    uwsgi_temp_path $prefix/uwsgi;
    scgi_temp_path $prefix/scgi;
$body
}
EOF
  "$NGINX" -t -q -p "$prefix" -e "$prefix/error.log" -c "$prefix/nginx.conf" || die "bad nginx config for $name"
  taskset -c "$cpu" "$NGINX" -p "$prefix" -e "$prefix/error.log" -c "$prefix/nginx.conf" -g 'daemon off;' &
  local master=$!
  PIDS+=("$master")
  while [ $tries -gt 0 ] && [ -z "$workers" ]; do
    sleep 0.05
    workers=$(pgrep -P "$master" | tr '\n' ' ' || true)
    tries=$((tries - 1))
  done
  [ -n "$workers" ] || die "nginx $name did not start: $(cat "$prefix/error.log" 2>/dev/null)"
  local w
  for w in $workers; do PIDS+=("$w"); done
  NGINX_PIDS="$master $workers"
}

# ---------------------------------------------------------------------------------------------------
# The upstream, the two proxies.
UPSTREAM_PORT=$(free_port)
start_nginx upstream "$LOAD_CPU" "" "
    server {
        listen 127.0.0.1:$UPSTREAM_PORT;
        client_max_body_size 1m;
        location / {
            default_type application/json;
            return 200 '{\"ok\":true}\n';
        }
    }"
wait_port "$UPSTREAM_PORT" || die "upstream did not listen"

MODSEC_PORT=$(free_port)
sed -e "s|@WORK@|$WORK|g" "$ROOT/bench/modsecurity/main.conf" >"$WORK/modsecurity.conf"
start_nginx modsecurity "$PROXY_CPU" "load_module $MODSEC_MODULE;" "
    upstream up {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 16;
    }
    server {
        listen 127.0.0.1:$MODSEC_PORT;
        client_max_body_size 1m;
        modsecurity on;
        modsecurity_rules_file $WORK/modsecurity.conf;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host \$host;
        }
    }"
MODSEC_PIDS=$NGINX_PIDS
wait_port "$MODSEC_PORT" 30 || die "nginx + modsecurity did not listen: $(tail -5 "$WORK/modsecurity/error.log")"

# Baselines (BASELINE=1, the default): the same NGINX without ModSecurity, and Portcullis without inspection,
# so that the cost of the WAF itself shows apart from the cost of proxying.
if [ "$BASELINE" = 1 ]; then
  NGINX_PLAIN_PORT=$(free_port)
  start_nginx nginx-plain "$PROXY_CPU" "" "
    upstream up {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 16;
    }
    server {
        listen 127.0.0.1:$NGINX_PLAIN_PORT;
        client_max_body_size 1m;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host \$host;
        }
    }"
  NGINX_PLAIN_PIDS=$NGINX_PIDS
  wait_port "$NGINX_PLAIN_PORT" || die "plain nginx did not listen"
fi

if [ "$MODSEC_ONLY" != 1 ]; then
  if [ "$BASELINE" = 1 ]; then
    PLAIN_PORT=$(free_port)
    sed -e "s|@LISTEN@|127.0.0.1:$PLAIN_PORT|g" -e "s|@UPSTREAM@|127.0.0.1:$UPSTREAM_PORT|g" \
      "$ROOT/bench/configs/plain.yaml" >"$WORK/portcullis-plain.yaml"
    taskset -c "$PROXY_CPU" "$PORTCULLIS" run -c "$WORK/portcullis-plain.yaml" >"$WORK/portcullis-plain.log" 2>&1 &
    PLAIN_PID=$!
    PIDS+=("$PLAIN_PID")
    wait_port "$PLAIN_PORT" || die "portcullis (plain) did not listen: $(tail -5 "$WORK/portcullis-plain.log")"
  fi
  PORTCULLIS_PORT=$(free_port)
  sed -e "s|@LISTEN@|127.0.0.1:$PORTCULLIS_PORT|g" -e "s|@UPSTREAM@|127.0.0.1:$UPSTREAM_PORT|g" \
    "$ROOT/bench/configs/waf.yaml" >"$WORK/portcullis.yaml"
  taskset -c "$PROXY_CPU" "$PORTCULLIS" run -c "$WORK/portcullis.yaml" >"$WORK/portcullis.log" 2>&1 &
  PORTCULLIS_PID=$!
  PIDS+=("$PORTCULLIS_PID")
  wait_port "$PORTCULLIS_PORT" || die "portcullis did not listen: $(tail -5 "$WORK/portcullis.log")"
  sleep 0.3
  kill -0 "$PORTCULLIS_PID" 2>/dev/null || die "portcullis exited: $(tail -5 "$WORK/portcullis.log")"
fi

# Both answer a plain request with 200 before anything is measured.
probe() { # port
  python3 -c 'import sys, urllib.request; print(urllib.request.urlopen("http://127.0.0.1:%s/echo/ok?q=hello" % sys.argv[1], timeout=5).status)' "$1" 2>/dev/null || echo 0
}
[ "$(probe "$MODSEC_PORT")" = 200 ] || die "nginx + modsecurity does not answer 200"
[ "$MODSEC_ONLY" = 1 ] || [ "$(probe "$PORTCULLIS_PORT")" = 200 ] || die "portcullis does not answer 200"

# replay NAME PORT PIDS...: prints the CPU microseconds per request of PIDS over the replay.
replay() {
  local name=$1 port=$2
  shift 2
  local before after sent
  before=$(cpu_ticks "$@")
  sent=$(taskset -c "$LOAD_CPU" python3 "$ROOT/bench/waf_replay.py" replay "$port" "$CORPUS" "$WORK/$name.json" "$PASSES")
  after=$(cpu_ticks "$@")
  log "$name: $sent requests, $((after - before)) CPU ticks (1/$CLK_TCK s)"
  python3 -c 'import sys; t, hz, n = map(int, sys.argv[1:]); print("%.3f" % (t * 1e6 / hz / max(n, 1)))' \
    "$((after - before))" "$CLK_TCK" "$sent"
}

args=()
if [ "$MODSEC_ONLY" != 1 ]; then
  log "replaying the corpus through portcullis"
  PORTCULLIS_CPU=$(replay portcullis "$PORTCULLIS_PORT" "$PORTCULLIS_PID")
  args+=("portcullis=$WORK/portcullis.json:$PORTCULLIS_CPU")
fi
log "replaying the corpus through nginx + modsecurity + crs"
# shellcheck disable=SC2086
MODSEC_CPU=$(replay modsecurity "$MODSEC_PORT" $MODSEC_PIDS)
args+=("modsecurity=$WORK/modsecurity.json:$MODSEC_CPU")
if [ "$BASELINE" = 1 ]; then
  if [ "$MODSEC_ONLY" != 1 ]; then
    log "replaying the corpus through portcullis without inspection"
    PLAIN_CPU=$(replay portcullis-plain "$PLAIN_PORT" "$PLAIN_PID")
    args+=("portcullis-plain=$WORK/portcullis-plain.json:$PLAIN_CPU")
  fi
  log "replaying the corpus through nginx without modsecurity"
  # shellcheck disable=SC2086
  NGINX_PLAIN_CPU=$(replay nginx-plain "$NGINX_PLAIN_PORT" $NGINX_PLAIN_PIDS)
  args+=("nginx-plain=$WORK/nginx-plain.json:$NGINX_PLAIN_CPU")
fi

echo
echo "WAF corpus ($(date -u +%Y-%m-%d), $(nproc) CPUs, proxy on CPU $PROXY_CPU, load on CPU $LOAD_CPU):"
echo "stopped = answered 4xx (not forwarded); fp = benign not answered 2xx"
python3 "$ROOT/bench/waf_replay.py" report "${args[@]}"
