#!/usr/bin/env bash
# Load benchmark: Portcullis against NGINX over the same upstream, on loopback, in one run.
#
#   bench/run.sh                      # default: 5 interleaved rounds of 5 s per scenario
#   ROUNDS=2 DURATION=2 bench/run.sh  # quick run
#
# Scenarios (each round runs all of them, starting one later each round, so slow drifts of the machine and
# the place in a round hit all alike):
#   direct      wrk -> upstream NGINX
#   nginx       wrk -> NGINX reverse proxy (1 worker, keepalive upstream pool) -> upstream
#   portcullis  wrk -> Portcullis (workers: 1, bench/configs/plain.yaml) -> upstream
#   portcullis-traced      the same with `traces:` on, every request sampled, spans exported to the upstream
#   portcullis-apikey      the same with an API key (X-API-Key, declared by hash in bench/configs/apikey.yaml)
#   portcullis-jwt-es256   the same with a JWT bearer token, ES256, keys from a JWKS file (bench/mint.py)
#   portcullis-jwt-rs256   the same with RS256
#   nginx-tls, portcullis-tls              wrk https://, HTTP/1.1 keep-alive, TLS 1.3, same ECDSA P-256 cert
#   nginx-h2, portcullis-h2                h2load, HTTP/2 over TLS (ALPN h2), -c32 -m8, same servers
#   nginx-handshake, portcullis-handshake  full TLS 1.3 handshakes: bursts of h2load --h1 -c B -n B (one
#                                          request per new connection, no session offered), same servers
#   nginx-c1000, portcullis-c1000          wrk -c1000, plain HTTP (Portcullis: bench/configs/c1000.yaml)
#   portcullis-limit-local  the plain route with a rate limit by client IP that never refuses, in memory
#   portcullis-limit-redis  the same limit with `store: redis`, against a redis-server this script starts
#                           (on a free loopback port, pinned with the upstream, stopped on exit)
#   nginx-full, portcullis-full            POST /orders, ~2 KiB JSON bodies and ES256 tokens rotating
#                           (bench/full.lua): NGINX proxies it with no checks; Portcullis runs JWT, a role,
#                           a rate limit, OpenAPI validation and inspection on it (bench/configs/full.yaml)
#   portcullis-events-off, portcullis-events   the API key route with 10% of requests refused (401, no key;
#                           bench/events.lua): without, then with security events exported to an unreachable
#                           syslog collector and the audit trail recording them (bench/configs/events*.yaml)
#   portcullis-admin-off, portcullis-admin-load   the plain route with the admin API on (bench/configs/admin.yaml):
#                           without, then with a bounded loop calling the admin API (ADMIN_RATE, 20/s) during
#                           the measured run
# (AUTH_SCENARIOS=0 leaves the authenticated ones out; TLS_SCENARIOS=0 all TLS ones; HTTPS=0, H2=0,
# HANDSHAKE=0, C1000=0 one group each; LIMIT_SCENARIOS=0 the two rate-limit ones; FULL_SCENARIO=0 the full one;
# EVENTS_SCENARIO=0 the two events ones; TRACE_SCENARIO=0 the traced one; ANOMALY_SCENARIO=0 the anomaly
# one; ADMIN_SCENARIO=0 the two admin
# ones.) More are one `add_portcullis` line each.
#
# The proxy under test runs on CPU $PROXY_CPU, wrk/h2load and the upstream on CPU $LOAD_CPU. Per scenario it
# prints the medians over rounds of requests/s, p50 and p99 latency, CPU microseconds per request of the
# proxy process (utime+stime of all its threads from /proc/PID/stat, over the measured run, divided by
# the requests counted), split into user and kernel microseconds per request, peak RSS (VmHWM), and
# Portcullis' idle RSS. Results: target/bench/summary.json.
#
# Environment: ROUNDS (5), DURATION (seconds, 5), WARMUP (seconds, 1), CONNECTIONS (32), THREADS (1),
# PROXY_CPU (0), LOAD_CPU (1), SKIP_BUILD=1 (use the existing release binary), PORTCULLIS (binary path),
# COMPARE_BIN (a second Portcullis binary, measured as scenario portcullis-compare, for A/B of a change),
# H2_CONNECTIONS (32), H2_STREAMS (8), HANDSHAKE_BATCH (100 new connections per h2load burst),
# C1000_CONNECTIONS (1000), NOFILE (open-file limit to raise to, 65536, capped by the hard limit),
# KEEP_WORK=1 (keep the temp dir: configs, server logs, each run's wrk/h2load output).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
AUTH_SCENARIOS=${AUTH_SCENARIOS:-1}
TLS_SCENARIOS=${TLS_SCENARIOS:-1}
HTTPS=${HTTPS:-1}
H2=${H2:-1}
HANDSHAKE=${HANDSHAKE:-1}
C1000=${C1000:-1}
LIMIT_SCENARIOS=${LIMIT_SCENARIOS:-1}
ADMIN_SCENARIO=${ADMIN_SCENARIO:-1}
# Admin API calls a second during portcullis-admin-load.
ADMIN_RATE=${ADMIN_RATE:-20}
FULL_SCENARIO=${FULL_SCENARIO:-1}
EVENTS_SCENARIO=${EVENTS_SCENARIO:-1}
if [ "$TLS_SCENARIOS" != 1 ]; then HTTPS=0 H2=0 HANDSHAKE=0; fi
H2_CONNECTIONS=${H2_CONNECTIONS:-32}
H2_STREAMS=${H2_STREAMS:-8}
HANDSHAKE_BATCH=${HANDSHAKE_BATCH:-100}
C1000_CONNECTIONS=${C1000_CONNECTIONS:-1000}
NOFILE=${NOFILE:-65536}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PORTCULLIS=${PORTCULLIS:-$TARGET_DIR/release/portcullis}
OUT_DIR=$ROOT/target/bench

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------------
# Tools
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
if [ "$H2" = 1 ] || [ "$HANDSHAKE" = 1 ]; then
  command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client)
fi
if [ "$LIMIT_SCENARIOS" = 1 ]; then
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
fi
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
command -v python3 >/dev/null 2>&1 || die "python3 is needed"
command -v taskset >/dev/null 2>&1 || die "taskset (util-linux) is needed"
if [ "$HTTPS" = 1 ] || [ "$H2" = 1 ] || [ "$HANDSHAKE" = 1 ]; then
  command -v openssl >/dev/null 2>&1 || die "openssl is needed for the TLS scenarios (TLS_SCENARIOS=0 leaves them out)"
fi
# Open files: 1,000 client connections plus as many upstream ones, in one process each (children inherit).
hard_nofile=$(ulimit -Hn)
if [ "$hard_nofile" != unlimited ] && [ "$hard_nofile" -lt "$NOFILE" ]; then NOFILE=$hard_nofile; fi
soft_nofile=$(ulimit -n)
if [ "$soft_nofile" != unlimited ] && [ "$soft_nofile" -lt "$NOFILE" ]; then
  ulimit -n "$NOFILE" || log "could not raise the open-file limit"
fi
log "open-file limit (ulimit -n): $(ulimit -n)"
CLK_TCK=$(getconf CLK_TCK)
NCPU=$(nproc)
if [ "$NCPU" -lt 2 ]; then
  log "only $NCPU CPU: proxy, upstream and wrk share it"
  PROXY_CPU=0
  LOAD_CPU=0
fi

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "cargo build --release"
  (cd "$ROOT" && cargo build --release --quiet)
fi
[ -x "$PORTCULLIS" ] || die "no binary at $PORTCULLIS"

# ---------------------------------------------------------------------------------------------------
# Process bookkeeping: everything started here is killed on exit, by PID.
WORK=$(mktemp -d /tmp/portcullis-bench.XXXXXX)
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
  if [ "${KEEP_WORK:-0}" = 1 ]; then log "kept $WORK (configs, logs, load tool output)"; else rm -rf "$WORK"; fi
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

# CPU ticks of the given PIDs as "utime stime"; /proc/PID/stat covers all threads of the process.
cpu_ticks() {
  local user=0 sys=0 pid line rest
  for pid in "$@"; do
    line=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    rest=${line##*) }             # fields after "(comm) ", starting at field 3 (state)
    # shellcheck disable=SC2086
    set -- $rest
    user=$((user + ${12}))        # field 14: utime
    sys=$((sys + ${13}))          # field 15: stime
  done
  echo "$user $sys"
}

# The kernel's count of connections dropped at a full accept queue (TcpExt ListenDrops, the whole machine,
# so other processes' drops count too): a server with a short listen backlog (Portcullis listened with 128
# before issue 10) drops SYNs when many clients connect at once, and they retry after 1 s, which shows in latency.
listen_drops() {
  awk '$1 == "TcpExt:" { if (!n) { for (i = 2; i <= NF; i++) if ($i == "ListenDrops") c = i; n = 1 } else print $c }' \
    /proc/net/netstat 2>/dev/null || echo 0
}

status_kib() { # pid field (VmRSS, VmHWM)
  awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0
}

children_of() { # direct children of a PID (NGINX workers of a master)
  pgrep -P "$1" || true
}

# ---------------------------------------------------------------------------------------------------
# NGINX instances: own prefix and config, one worker, foreground, pinned.
BODY=$(python3 -c 'print("x" * 127)') # 127 + "\n" = 128 bytes

nginx_common() { # prefix
  cat <<EOF
worker_processes 1;
$( [ "$(id -u)" = 0 ] && echo "user root root;" )
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; multi_accept on; }
http {
    access_log off;
    server_tokens off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path $1/client_body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
EOF
}

start_nginx() { # name cpu conf-body... ; sets NGINX_MASTER, NGINX_WORKERS
  local name=$1 cpu=$2 body=$3 prefix="$WORK/$1"
  mkdir -p "$prefix"
  { nginx_common "$prefix"; printf '%s\n}\n' "$body"; } >"$prefix/nginx.conf"
  "$NGINX" -t -q -p "$prefix" -e "$prefix/error.log" -c "$prefix/nginx.conf" || die "bad nginx config for $name"
  taskset -c "$cpu" "$NGINX" -p "$prefix" -e "$prefix/error.log" -c "$prefix/nginx.conf" -g 'daemon off;' &
  NGINX_MASTER=$!
  PIDS+=("$NGINX_MASTER")
  local tries=100
  NGINX_WORKERS=""
  while [ $tries -gt 0 ] && [ -z "$NGINX_WORKERS" ]; do
    sleep 0.05
    NGINX_WORKERS=$(children_of "$NGINX_MASTER" | tr '\n' ' ')
    tries=$((tries - 1))
  done
  [ -n "$NGINX_WORKERS" ] || die "nginx $name did not start: $(cat "$prefix/error.log" 2>/dev/null)"
  local w
  for w in $NGINX_WORKERS; do PIDS+=("$w"); done
}

# ---------------------------------------------------------------------------------------------------
# Scenario registry
# Per scenario: URL, proxy PIDs, KIND (upstream, nginx, portcullis), GROUP (the scenarios compared with
# each other: plain, tls, h2, handshake, c1000), TOOL (wrk, h2load, handshake) and CONNS (connections).
SCENARIOS=()
declare -A TLS_PROBED
declare -A S_URL S_CPU_PIDS S_RSS_PID S_HEADERS S_KIND S_IDLE_KIB S_GROUP S_TOOL S_CONNS S_SCRIPT S_SCRIPT_ARGS
# S_EXTRA_PIDS: processes a scenario depends on besides the proxy (redis-server), whose CPU is reported apart.
declare -A S_EXTRA_PIDS
# S_BODY: for a scenario that POSTs, a file whose first line is the body its 200 check sends.
declare -A S_BODY
# S_DURING: a command run in the background during a scenario's measured run (and stopped after it).
declare -A S_DURING S_ADMIN_PORT

# alias_scenario NEW EXISTING GROUP TOOL CONNS [SCHEME]: another load on a server already started (the same
# process, so the same CPU and memory bookkeeping), e.g. h2 and handshakes on the TLS listener.
alias_scenario() {
  local new=$1 old=$2
  SCENARIOS+=("$new")
  S_KIND[$new]=${S_KIND[$old]}
  S_URL[$new]=${S_URL[$old]}
  [ -n "${6:-}" ] && S_URL[$new]="$6://${S_URL[$old]#*://}"
  S_CPU_PIDS[$new]=${S_CPU_PIDS[$old]}
  S_RSS_PID[$new]=${S_RSS_PID[$old]}
  S_IDLE_KIB[$new]=${S_IDLE_KIB[$old]:-}
  S_HEADERS[$new]=${S_HEADERS[$old]:-}
  S_GROUP[$new]=$3
  S_TOOL[$new]=$4
  S_CONNS[$new]=$5
}

UPSTREAM_PORT=$(free_port)
start_nginx upstream "$LOAD_CPU" "
    server {
        listen 127.0.0.1:$UPSTREAM_PORT reuseport backlog=4096;
        location / {
            default_type text/plain;
            return 200 \"$BODY\n\";
        }
    }"
wait_port "$UPSTREAM_PORT" || die "upstream did not listen"
UPSTREAM_PIDS="$NGINX_MASTER $NGINX_WORKERS"
SCENARIOS+=(direct)
S_KIND[direct]=upstream
S_GROUP[direct]=plain
S_TOOL[direct]=wrk
S_CONNS[direct]=$CONNECTIONS
S_URL[direct]="http://127.0.0.1:$UPSTREAM_PORT/"
S_CPU_PIDS[direct]=$UPSTREAM_PIDS
S_RSS_PID[direct]=${NGINX_WORKERS%% *}

# The proxy locations of the NGINX reverse proxy (plain and TLS servers alike).
nginx_proxy_location() {
  cat <<EOF
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Request-Id \$request_id;
            proxy_buffering on;${1:-}
        }
EOF
}

nginx_upstream_block() { # [idle keep-alive connections kept, 64]
  cat <<EOF
    upstream up {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive ${1:-64};
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }
EOF
}

add_nginx() { # name [group tool conns upstream-keepalive]
  local name=$1 port
  port=$(free_port)
  start_nginx "$name" "$PROXY_CPU" "
$(nginx_upstream_block "${5:-64}")
    server {
        listen 127.0.0.1:$port backlog=4096;
$(nginx_proxy_location)
    }"
  wait_port "$port" || die "nginx $name did not listen"
  SCENARIOS+=("$name")
  S_KIND[$name]=nginx
  S_URL[$name]="http://127.0.0.1:$port/"
  S_CPU_PIDS[$name]="$NGINX_MASTER $NGINX_WORKERS"
  S_RSS_PID[$name]=${NGINX_WORKERS%% *}
  S_GROUP[$name]=${2:-plain}
  S_TOOL[$name]=${3:-wrk}
  S_CONNS[$name]=${4:-$CONNECTIONS}
}

# add_nginx_tls NAME GROUP TOOL CONNS: NGINX as the same reverse proxy behind a TLS 1.3 listener with h2
# (ALPN), the run's certificate, the cipher suite and HSTS header Portcullis uses, and no session
# resumption (no cache, no tickets), so every new connection is a full handshake. Up to 1,024 idle upstream
# connections are kept (as Portcullis in configs/tls.yaml): h2 has 256 requests in flight, and with a pool
# of 64 both proxies opened and closed upstream connections by the thousand per second, filling the
# machine with TIME_WAIT sockets towards the one upstream port.
add_nginx_tls() {
  local name=$1 port
  port=$(free_port)
  start_nginx "$name" "$PROXY_CPU" "
$(nginx_upstream_block 1024)
    server {
        listen 127.0.0.1:$port ssl http2 backlog=4096;
        ssl_certificate $WORK/tls/cert.pem;
        ssl_certificate_key $WORK/tls/key.pem;
        ssl_protocols TLSv1.3;
        ssl_prefer_server_ciphers on;
        ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256;
        ssl_session_cache off;
        ssl_session_tickets off;
$(nginx_proxy_location "
            add_header Strict-Transport-Security \"max-age=31536000\" always;")
    }"
  wait_port "$port" || die "nginx $name did not listen"
  SCENARIOS+=("$name")
  S_KIND[$name]=nginx
  S_URL[$name]="https://127.0.0.1:$port/"
  S_CPU_PIDS[$name]="$NGINX_MASTER $NGINX_WORKERS"
  S_RSS_PID[$name]=${NGINX_WORKERS%% *}
  S_GROUP[$name]=$2
  S_TOOL[$name]=$3
  S_CONNS[$name]=$4
}

# add_portcullis NAME CONFIG_TEMPLATE [SCHEME] [WRK_HEADER...]
#   CONFIG_TEMPLATE is a Portcullis config with @LISTEN@ and @UPSTREAM@ placeholders (and @WORK@ for
#   files the scenario writes, e.g. certificates); SCHEME is http (default) or https; each WRK_HEADER
#   ("Name: value") is sent with every request (API keys, bearer tokens). BIN=path overrides the binary.
add_portcullis() {
  local name=$1 template=$2 scheme=${3:-http}
  shift 3 2>/dev/null || shift $#
  local port conf pid
  port=$(free_port)
  conf="$WORK/$name.yaml"
  S_ADMIN_PORT[$name]=$(free_port)
  sed -e "s|@LISTEN@|127.0.0.1:$port|g" -e "s|@UPSTREAM@|127.0.0.1:$UPSTREAM_PORT|g" -e "s|@WORK@|$WORK|g" \
    -e "s|@ADMIN@|127.0.0.1:${S_ADMIN_PORT[$name]}|g" -e "s|@NAME@|$name|g" \
    -e "s|@REDIS@|127.0.0.1:${REDIS_PORT:-0}|g" -e "s|@ROOT@|$ROOT|g" -e "s|@CLOSED@|127.0.0.1:${CLOSED_PORT:-0}|g" \
    "$template" >"$conf"
  taskset -c "$PROXY_CPU" "${BIN:-$PORTCULLIS}" run -c "$conf" >"$WORK/$name.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  wait_port "$port" || die "portcullis $name did not listen: $(tail -5 "$WORK/$name.log")"
  sleep 0.5
  kill -0 "$pid" 2>/dev/null || die "portcullis $name exited: $(tail -5 "$WORK/$name.log")"
  SCENARIOS+=("$name")
  S_KIND[$name]=portcullis
  S_URL[$name]="$scheme://127.0.0.1:$port/"
  S_CPU_PIDS[$name]=$pid
  S_RSS_PID[$name]=$pid
  S_IDLE_KIB[$name]=$(status_kib "$pid" VmRSS)
  local h headers=""
  for h in "$@"; do headers+="$h"$'\n'; done
  S_HEADERS[$name]=$headers
  set_load "$name" plain wrk "$CONNECTIONS"
}

set_load() { # scenario group tool connections
  S_GROUP[$1]=$2
  S_TOOL[$1]=$3
  S_CONNS[$1]=$4
}

# The run's certificate for both TLS servers: ECDSA P-256, self-signed for localhost and 127.0.0.1, in the
# temp dir (removed on exit). Key as PKCS#8, which both read.
make_cert() {
  mkdir -p "$WORK/tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$WORK/tls/key.pem" -out "$WORK/tls/cert.pem" -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >/dev/null 2>&1 || die "openssl could not make the certificate"
}

# ---------------------------------------------------------------------------------------------------
# Scenarios. Each Portcullis variant is one add_portcullis line; authenticated ones send their credential.
add_nginx nginx
add_portcullis portcullis "$ROOT/bench/configs/plain.yaml" http
# portcullis-traced: the same with `traces:` on and every request sampled, spans exported to the upstream
# NGINX (TRACE_SCENARIO=0 leaves it out)
if [ "${TRACE_SCENARIO:-1}" = 1 ]; then
  add_portcullis portcullis-traced "$ROOT/bench/configs/traced.yaml" http
fi
if [ "${AUTH_SCENARIOS:-1}" = 1 ]; then
  python3 "$ROOT/bench/mint.py" "$WORK" || die "could not mint the JWT bench keys"
  # The quickstart's demo key, declared by its keyed hash in apikey.yaml.
  add_portcullis portcullis-apikey "$ROOT/bench/configs/apikey.yaml" http \
    "X-API-Key: pcs_vukq26u5_67m2su4ux6jqs7q4fnbjkz6tyifqqjz2cotjxva"
  add_portcullis portcullis-jwt-es256 "$ROOT/bench/configs/jwt-es256.yaml" http \
    "Authorization: Bearer $(cat "$WORK/es256.token")"
  add_portcullis portcullis-jwt-rs256 "$ROOT/bench/configs/jwt-rs256.yaml" http \
    "Authorization: Bearer $(cat "$WORK/rs256.token")"
  # JWT ES256 plus a role and an ownership rule, over 256 principals and random object ids (bench/authz.lua).
  add_portcullis portcullis-authz "$ROOT/bench/configs/authz.yaml" http \
    "Authorization: Bearer $(head -1 "$WORK/es256.tokens")"
  S_URL[portcullis-authz]="${S_URL[portcullis-authz]}users/user-0/orders/1"
  S_SCRIPT[portcullis-authz]="$ROOT/bench/authz.lua"
  S_SCRIPT_ARGS[portcullis-authz]="$WORK/es256.tokens"
  # All of the security on one route (issue 13): JWT ES256, a role, a local rate limit, OpenAPI validation
  # and inspection, on POST /orders with ~2 KiB JSON bodies rotating over 256 documents and 256 tokens
  # (bench/full.lua); compared with NGINX proxying the same load with no checks at all (nginx-full).
  if [ "$FULL_SCENARIO" = 1 ]; then
    python3 "$ROOT/bench/bodies.py" "$WORK/bodies.jsonl" 256 || die "could not write the bench bodies"
    add_portcullis portcullis-full "$ROOT/bench/configs/full.yaml" http \
      "Authorization: Bearer $(head -1 "$WORK/es256.tokens")" "Content-Type: application/json"
    S_URL[portcullis-full]="${S_URL[portcullis-full]}orders"
    S_BODY[portcullis-full]="$WORK/bodies.jsonl"
    set_load portcullis-full full wrk "$CONNECTIONS"
    S_SCRIPT[portcullis-full]="$ROOT/bench/full.lua"
    S_SCRIPT_ARGS[portcullis-full]="$WORK"
    alias_scenario nginx-full nginx full wrk "$CONNECTIONS"
    S_BODY[nginx-full]="$WORK/bodies.jsonl"
    S_SCRIPT[nginx-full]="$ROOT/bench/full.lua"
    S_SCRIPT_ARGS[nginx-full]="$WORK"
  fi
fi
# Security events (issue 14): the same mix, 10% refused with 401 (bench/events.lua: every 10th request has no
# API key), without and with security events, an exporter to a syslog collector that is not there (TCP to a
# free loopback port nothing listens on) and the audit trail recording security events. Target: the events
# scenario keeps at least 0.97x the throughput of the other, in the same run.
if [ "$EVENTS_SCENARIO" = 1 ]; then
  EVENTS_KEY=pcs_vukq26u5_67m2su4ux6jqs7q4fnbjkz6tyifqqjz2cotjxva
  CLOSED_PORT=$(free_port)
  "${BIN:-$PORTCULLIS}" audit keygen --out "$WORK/audit.key" >"$WORK/audit-keygen.log" 2>&1 ||
    die "portcullis audit keygen failed (EVENTS_SCENARIO=0 leaves the events scenarios out): $(tail -3 "$WORK/audit-keygen.log")"
  for s in portcullis-events-off portcullis-events; do
    add_portcullis "$s" "$ROOT/bench/configs/${s#portcullis-}.yaml" http "X-API-Key: $EVENTS_KEY"
    S_SCRIPT[$s]="$ROOT/bench/events.lua"
    S_SCRIPT_ARGS[$s]=$EVENTS_KEY
  done
fi
# Rate limits that never refuse (keyed by client IP): in memory, and in a redis-server started here on a
# free loopback port, pinned to the load CPU like the upstream, and stopped on exit with the rest.
if [ "$LIMIT_SCENARIOS" = 1 ]; then
  add_portcullis portcullis-limit-local "$ROOT/bench/configs/limit-local.yaml" http
  REDIS_PORT=$(free_port)
  taskset -c "$LOAD_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --protected-mode no >"$WORK/redis.log" 2>&1 &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  wait_port "$REDIS_PORT" || die "redis-server did not listen: $(tail -5 "$WORK/redis.log")"
  add_portcullis portcullis-limit-redis "$ROOT/bench/configs/limit-redis.yaml" http
  S_EXTRA_PIDS[portcullis-limit-redis]=$REDIS_PID
fi
# The admin API under load (issue 15): the plain route on a gateway with its admin API on, measured without
# and with a bounded loop of admin calls (one curl process on the load CPU, keep-alive, --rate ADMIN_RATE/s,
# reads of routes, health, events, bans, quotas, keys and the OpenAPI document). Target: the loaded scenario
# keeps at least 0.97x the throughput of the other, in the same run.
if [ "$ADMIN_SCENARIO" = 1 ]; then
  for s in portcullis-admin-off portcullis-admin-load; do
    add_portcullis "$s" "$ROOT/bench/configs/admin.yaml" http
  done
  ADMIN_TOKEN=$("${BIN:-$PORTCULLIS}" admin token create --role viewer -c "$WORK/portcullis-admin-load.yaml" 2>>"$WORK/admin-token.log") ||
    die "portcullis admin token create failed: $(tail -3 "$WORK/admin-token.log")"
  admin_base="http://127.0.0.1:${S_ADMIN_PORT[portcullis-admin-load]}/admin/v1"
  admin_urls=""
  for _ in $(seq 1 $(( (DURATION + 2) * ADMIN_RATE / 7 + 1 ))); do
    for p in routes health "events?limit=50" bans quotas keys openapi.json; do admin_urls+=" -o /dev/null $admin_base/$p"; done
  done
  printf 'header = "Authorization: Bearer %s"\n' "$ADMIN_TOKEN" >"$WORK/admin-curlrc"
  chmod 600 "$WORK/admin-curlrc"
  S_DURING[portcullis-admin-load]="exec timeout $((DURATION + 5)) taskset -c $LOAD_CPU curl -sS -K $WORK/admin-curlrc --rate $ADMIN_RATE/s -w '%{http_code}\\n' $admin_urls"
fi
# The anomaly detector on (issue 16): the plain route with `anomaly:` (monitor mode); its detector thread
# shares the proxy's CPU. Target: at least 0.97x the throughput of portcullis (plain) in the same run.
if [ "${ANOMALY_SCENARIO:-1}" = 1 ]; then
  add_portcullis portcullis-anomaly "$ROOT/bench/configs/anomaly.yaml" http
fi
# A/B: COMPARE_BIN=/path/to/other/portcullis adds the same scenario run by another build.
if [ -n "${COMPARE_BIN:-}" ]; then
  BIN=$COMPARE_BIN add_portcullis portcullis-compare "$ROOT/bench/configs/plain.yaml" http
fi
# TLS: one NGINX and one Portcullis TLS server, each measured three ways (HTTPS/1.1 with wrk, h2 with
# h2load, new connections with full handshakes); the scenario of the first enabled way starts the server.
if [ "$HTTPS" = 1 ] || [ "$H2" = 1 ] || [ "$HANDSHAKE" = 1 ]; then
  make_cert
  tls_ways=()
  [ "$HTTPS" = 1 ] && tls_ways+=("tls wrk $CONNECTIONS")
  [ "$H2" = 1 ] && tls_ways+=("h2 h2load $H2_CONNECTIONS")
  [ "$HANDSHAKE" = 1 ] && tls_ways+=("handshake handshake $HANDSHAKE_BATCH")
  read -r g t c <<<"${tls_ways[0]}"
  add_nginx_tls "nginx-$g" "$g" "$t" "$c"
  add_portcullis "portcullis-$g" "$ROOT/bench/configs/tls.yaml" https
  set_load "portcullis-$g" "$g" "$t" "$c"
  for way in "${tls_ways[@]:1}"; do
    read -r g2 t2 c2 <<<"$way"
    alias_scenario "nginx-$g2" "nginx-$g" "$g2" "$t2" "$c2"
    alias_scenario "portcullis-$g2" "portcullis-$g" "$g2" "$t2" "$c2"
  done
fi
# 1,000 connections, plain HTTP: NGINX and Portcullis as in the plain scenario, but both keep up to 1,024
# idle upstream connections (instead of 64), so that, once warm, the upstream side is not opened and closed
# per request and the figures are about the 1,000 client connections; Portcullis also has the per-client-IP
# connection limit raised (bench/configs/c1000.yaml). NGINX: worker_connections 4096.
if [ "$C1000" = 1 ]; then
  add_nginx nginx-c1000 c1000 wrk "$C1000_CONNECTIONS" 1024
  add_portcullis portcullis-c1000 "$ROOT/bench/configs/c1000.yaml" http
  set_load portcullis-c1000 c1000 wrk "$C1000_CONNECTIONS"
fi

# Every scenario answers 200 before anything is measured.
for s in "${SCENARIOS[@]}"; do
  code=$(python3 - "${S_URL[$s]}" "${S_HEADERS[$s]:-}" "${S_BODY[$s]:-}" <<'EOF'
import ssl, sys, urllib.request
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
# A scenario that POSTs (S_BODY: a file of bodies, one per line) is checked with its first body.
body = open(sys.argv[3], "rb").readline().rstrip(b"\n") if sys.argv[3] else None
req = urllib.request.Request(sys.argv[1], data=body)
for line in sys.argv[2].splitlines():
    if line:
        name, value = line.split(":", 1)
        req.add_header(name.strip(), value.strip())
try:
    print(urllib.request.urlopen(req, timeout=5, context=ctx).status)
except Exception as e:
    print(getattr(e, "code", e))
EOF
)
  [ "$code" = 200 ] || die "$s answered $code, not 200"
done

# TLS servers: both must negotiate TLS 1.3 with the same suite and group, and offer h2 by ALPN. Whether a
# server resumes a session when a client offers one is printed (the handshake scenario offers none: every
# h2load client of a burst connects once, with a fresh process and context).
tls_probe() { # port [extra s_client args...]
  local port=$1
  shift
  (printf 'GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n'; sleep 0.3) |
    timeout 10 openssl s_client -connect "127.0.0.1:$port" -servername localhost "$@" 2>&1 | tr -d '\000' || true
}
for s in "${SCENARIOS[@]}"; do
  case ${S_URL[$s]} in https://*) ;; *) continue ;; esac
  port=${S_URL[$s]##*:}
  port=${port%/}
  [ -z "${TLS_PROBED[$port]:-}" ] || continue
  TLS_PROBED[$port]=1
  out=$(tls_probe "$port" -alpn h2,http/1.1 -sess_out "$WORK/tls/sess-$port.pem")
  proto=$(grep -oE '^New, TLSv[0-9.]+, Cipher is [A-Z0-9_]+' <<<"$out" | head -1)
  temp=$(grep -oE '^Server Temp Key: [^,]+' <<<"$out" | head -1)
  alpn=$(grep -oE '^ALPN protocol: .*' <<<"$out" | head -1)
  [[ $proto == "New, TLSv1.3, Cipher is TLS_AES_128_GCM_SHA256" ]] || die "$s negotiated '$proto', not TLS 1.3 with TLS_AES_128_GCM_SHA256"
  [[ $temp == "Server Temp Key: X25519" ]] || die "$s key exchange: '$temp'"
  if [ "$H2" = 1 ] && [[ $alpn != "ALPN protocol: h2" ]]; then die "$s did not choose h2 by ALPN ($alpn)"; fi
  again=$(tls_probe "$port" -sess_in "$WORK/tls/sess-$port.pem" | grep -oE '^(New|Reused), TLSv[0-9.]+' | head -1)
  log "${S_KIND[$s]} TLS on port $port: ${proto#New, }, X25519, ${alpn:-no ALPN}; a client offering its previous session: ${again%%,*}"
done

# ---------------------------------------------------------------------------------------------------
# Measurement
RESULTS=$WORK/results.jsonl
: >"$RESULTS"

run_wrk() { # scenario seconds output-file
  local s=$1 args=() tail=() h
  if [ -n "${S_SCRIPT[$s]:-}" ]; then
    # The script makes every request itself (path and headers).
    args+=(-s "${S_SCRIPT[$s]}")
    tail=(-- "${S_SCRIPT_ARGS[$s]}")
  else
    while IFS= read -r h; do
      [ -n "$h" ] && args+=(-H "$h")
    done <<<"${S_HEADERS[$s]:-}"
  fi
  timeout $(($2 + 15)) taskset -c "$LOAD_CPU" wrk -t"$THREADS" -c"${S_CONNS[$s]}" -d"$2"s --timeout 2s --latency \
    "${args[@]}" "${S_URL[$s]}" "${tail[@]}" >"$3" 2>&1 || true
}

# h2 over TLS: h2load, one thread, S_CONNS connections with H2_STREAMS concurrent streams each, for the
# given seconds (-D); per-request times go to a log file for the percentiles.
run_h2load() { # scenario seconds output-file
  local s=$1
  timeout $(($2 + 15)) taskset -c "$LOAD_CPU" h2load -t1 -c"${S_CONNS[$s]}" -m"$H2_STREAMS" -D "$2" \
    --log-file="$3.log" "${S_URL[$s]}" >"$3" 2>&1 || true
}

# Full handshakes: bursts of h2load --h1 with as many clients as requests (-c B -n B), so each client opens
# one new connection, does its TLS 1.3 handshake and one request, and closes; a new h2load process per burst
# has no session to offer. Bursts follow each other until the given seconds are over (each bounded by
# `timeout`). B stays far below the listen backlogs (4096), so no SYN is dropped and retried after 1 s.
run_handshake() { # scenario seconds output-file
  local s=$1 end
  end=$(( $(date +%s%N) + $2 * 1000000000 ))
  : >"$3"
  while [ "$(date +%s%N)" -lt "$end" ]; do
    timeout 10 taskset -c "$LOAD_CPU" h2load --h1 -t1 -c"${S_CONNS[$s]}" -n"${S_CONNS[$s]}" "${S_URL[$s]}" \
      >>"$3" 2>&1 || echo "burst failed or timed out" >>"$3"
  done
}

measure() { # scenario round
  local s=$1 round=$2 before after t0 t1 drops0 drops1 out="$WORK/out-$1-$2.txt" run=run_wrk
  case ${S_TOOL[$s]} in
    h2load) run=run_h2load ;;
    handshake) run=run_handshake ;;
  esac
  "$run" "$s" "$WARMUP" "$WORK/warmup.txt"
  # shellcheck disable=SC2086
  before=$(cpu_ticks ${S_CPU_PIDS[$s]})
  # shellcheck disable=SC2086
  extra0=$(cpu_ticks ${S_EXTRA_PIDS[$s]:-})
  drops0=$(listen_drops)
  local during_pid=""
  if [ -n "${S_DURING[$s]:-}" ]; then
    bash -c "${S_DURING[$s]}" >>"$WORK/during-$s.log" 2>&1 &
    during_pid=$!
  fi
  t0=$(date +%s%N)
  "$run" "$s" "$DURATION" "$out"
  t1=$(date +%s%N)
  if [ -n "$during_pid" ]; then
    kill "$during_pid" 2>/dev/null || true
    wait "$during_pid" 2>/dev/null || true
  fi
  drops1=$(listen_drops)
  # shellcheck disable=SC2086
  after=$(cpu_ticks ${S_CPU_PIDS[$s]})
  # shellcheck disable=SC2086
  extra1=$(cpu_ticks ${S_EXTRA_PIDS[$s]:-})
  python3 - "$s" "$round" "$before" "$after" "$CLK_TCK" "$out" "${S_TOOL[$s]}" "$(( (t1 - t0) / 1000 ))" \
    "${S_GROUP[$s]}" "$((drops1 - drops0))" "$extra0" "$extra1" >>"$RESULTS" <<'EOF'
import json, os, re, statistics, sys
name, rnd, before, after, clk, path, tool, wall_us, group, drops, extra0, extra1 = sys.argv[1:13]
extra_ticks = sum(map(int, extra1.split())) - sum(map(int, extra0.split()))
status = None
rnd, clk, wall_s = int(rnd), int(clk), int(wall_us) / 1e6
(u0, s0), (u1, s1) = (map(int, before.split())), (map(int, after.split()))
utime, stime = u1 - u0, s1 - s0
ticks = utime + stime
text = open(path).read()
p50 = p99 = None
def seconds(v, unit):
    return float(v) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[unit]
if tool == "wrk":
    def lat(p):
        m = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s)\s*$" % p, text, re.M)
        return seconds(*m.groups()) * 1000 if m else None
    p50, p99 = lat(50), lat(99)
    m = re.search(r"(\d+) requests in", text)
    reqs = int(m.group(1)) if m else 0
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    rps = float(m.group(1)) if m else 0.0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    bad = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    sock = sum(int(x) for x in m.groups()) if m else 0
else:
    # h2load: "finished in 3.01s, 11479.00 req/s", "requests: N total, N started, N done, N succeeded,
    # N failed, N errored, N timeout", "status codes: N 2xx, N 3xx, N 4xx, N 5xx"; handshake: one such
    # report per burst, and requests/s is the requests over the bursts' own durations (not the gaps between
    # h2load processes).
    fins = [(seconds(v, u), float(r)) for v, u, r in
            re.findall(r"^finished in ([\d.]+)(us|ms|s), ([\d.]+) req/s", text, re.M)]
    req_lines = re.findall(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                           r"(\d+) errored, (\d+) timeout", text, re.M)
    codes = re.findall(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text, re.M)
    reqs = sum(int(c[0]) for c in codes)
    bad = sum(int(c[1]) + int(c[2]) + int(c[3]) for c in codes)
    status = {k: sum(int(c[i]) for c in codes) for i, k in enumerate(["2xx", "3xx", "4xx", "5xx"])}
    sock = sum(int(r[0]) - int(r[3]) for r in req_lines) + text.count("burst failed or timed out")
    if tool == "h2load":
        rps = fins[-1][1] if fins else 0.0
        try:
            times = sorted(int(l.split("\t")[2]) / 1000.0 for l in open(path + ".log") if l.count("\t") >= 2)
        except OSError:
            times = []
        if times:
            p50 = times[int(0.50 * (len(times) - 1))]
            p99 = times[int(0.99 * (len(times) - 1))]
    else:
        busy = sum(f for f, _ in fins)
        rps = reqs / busy if busy else 0.0
def per_req(t):
    return t * 1e6 / clk / reqs if reqs else None
print(json.dumps({"scenario": name, "group": group, "tool": tool, "round": rnd, "requests": reqs, "rps": rps,
                  "p50_ms": p50, "p99_ms": p99, "cpu_us_per_req": per_req(ticks),
                  "user_us_per_req": per_req(utime), "sys_us_per_req": per_req(stime),
                  "cpu_ticks": ticks, "user_ticks": utime, "sys_ticks": stime, "wall_s": wall_s,
                  "extra_cpu_us_per_req": per_req(extra_ticks),
                  "proxy_cpu_busy": ticks / clk / wall_s if wall_s else None,
                  "non_2xx": bad, "socket_errors": sock, "listen_drops": int(drops), "status": status}))
EOF
  tail -n1 "$RESULTS" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("   %-22s round %d: %9.0f req/s  p50 %6.3f ms  p99 %6.3f ms  cpu %6.2f us/req (user %6.2f, kernel %6.2f; busy %3.0f%%)%s%s" % (r["scenario"], r["round"], r["rps"], r["p50_ms"] or 0, r["p99_ms"] or 0, r["cpu_us_per_req"] or 0, r["user_us_per_req"] or 0, r["sys_us_per_req"] or 0, 100 * (r["proxy_cpu_busy"] or 0), "  (non-2xx %d, socket errors %d%s)" % (r["non_2xx"], r["socket_errors"], "; %s" % r["status"] if r["status"] else "") if r["non_2xx"] or r["socket_errors"] else "", "  (machine-wide listen drops: %d)" % r["listen_drops"] if r["listen_drops"] else ""))' >&2
}

log "scenarios: ${SCENARIOS[*]}; $ROUNDS rounds x ${DURATION}s (+${WARMUP}s warmup), wrk -t$THREADS -c$CONNECTIONS; proxy on CPU $PROXY_CPU, wrk+upstream on CPU $LOAD_CPU"
[ "$H2" = 1 ] && log "h2: h2load -t1 -c$H2_CONNECTIONS -m$H2_STREAMS -D $DURATION"
[ "$HANDSHAKE" = 1 ] && log "handshakes: bursts of h2load --h1 -t1 -c$HANDSHAKE_BATCH -n$HANDSHAKE_BATCH (one request per new connection) for ${DURATION}s"
[ "$C1000" = 1 ] && log "c1000: wrk -t$THREADS -c$C1000_CONNECTIONS"
# Each round starts one scenario later than the previous one (direct, nginx, portcullis, ...; then nginx,
# portcullis, ..., direct), so no scenario always runs in the same place of a round.
n=${#SCENARIOS[@]}
for round in $(seq 1 "$ROUNDS"); do
  for i in $(seq 0 $((n - 1))); do
    measure "${SCENARIOS[$(((i + round - 1) % n))]}" "$round"
  done
done

# Peak and idle memory, read before anything is stopped.
MEM=$WORK/mem.json
{
  echo "{"
  first=1
  for s in "${SCENARIOS[@]}"; do
    [ $first = 1 ] || echo ","
    first=0
    printf '"%s": {"kind": "%s", "group": "%s", "tool": "%s", "connections": %s, "peak_rss_kib": %s, "idle_rss_kib": %s}' \
      "$s" "${S_KIND[$s]}" "${S_GROUP[$s]}" "${S_TOOL[$s]}" "${S_CONNS[$s]}" \
      "$(status_kib "${S_RSS_PID[$s]}" VmHWM)" "${S_IDLE_KIB[$s]:-null}"
  done
  echo "}"
} >"$MEM"

mkdir -p "$OUT_DIR"
python3 - "$RESULTS" "$MEM" "$OUT_DIR/summary.json" "$ROUNDS" "$DURATION" "$CONNECTIONS" "$(ulimit -n)" \
  "$H2_CONNECTIONS" "$H2_STREAMS" "$HANDSHAKE_BATCH" <<'EOF'
import json, statistics, sys
results_path, mem_path, out_path = sys.argv[1:4]
rounds, duration, conns, nofile = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
h2_conns, h2_streams, hs_batch = int(sys.argv[8]), int(sys.argv[9]), int(sys.argv[10])
rows = [json.loads(l) for l in open(results_path) if l.strip()]
mem = json.load(open(mem_path))
order = list(mem.keys())
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
summary = {"rounds": rounds, "duration_s": duration, "connections": conns, "open_file_limit": nofile,
           "h2_connections": h2_conns, "h2_streams_per_connection": h2_streams, "handshake_batch": hs_batch,
           "scenarios": {}}
for s in order:
    rs = [r for r in rows if r["scenario"] == s]
    summary["scenarios"][s] = {
        "kind": mem[s]["kind"],
        "group": mem[s]["group"],
        "tool": mem[s]["tool"],
        "connections": mem[s]["connections"],
        "rps": med([r["rps"] for r in rs]),
        "p50_ms": med([r["p50_ms"] for r in rs]),
        "p99_ms": med([r["p99_ms"] for r in rs]),
        "cpu_us_per_req": med([r["cpu_us_per_req"] for r in rs]),
        "user_us_per_req": med([r["user_us_per_req"] for r in rs]),
        "sys_us_per_req": med([r["sys_us_per_req"] for r in rs]),
        "extra_cpu_us_per_req": med([r.get("extra_cpu_us_per_req") for r in rs]),
        "proxy_cpu_busy": med([r["proxy_cpu_busy"] for r in rs]),
        "peak_rss_mib": mem[s]["peak_rss_kib"] / 1024,
        "idle_rss_mib": None if mem[s]["idle_rss_kib"] is None else mem[s]["idle_rss_kib"] / 1024,
        "non_2xx": sum(r["non_2xx"] for r in rs),
        "socket_errors": sum(r["socket_errors"] for r in rs),
        "listen_drops": sum(r["listen_drops"] for r in rs),
        "runs": rs,
    }
sc = summary["scenarios"]
# Each Portcullis scenario is compared with the NGINX scenario of its group (plain: `nginx`).
peer = {}
for s in order:
    if sc[s]["kind"] == "portcullis":
        peer[s] = next((n for n in order if sc[n]["kind"] == "nginx" and sc[n]["group"] == sc[s]["group"]), None)
def ratio(a, b, key):
    if a not in sc or b not in sc or not sc[a][key] or not sc[b][key]:
        return None
    return sc[a][key] / sc[b][key]
summary["ratios"] = {}
for s in order:
    if sc[s]["kind"] == "portcullis":
        n = peer[s]
        summary["ratios"][s] = {"against": n}
        summary["ratios"][s].update({k: ratio(s, n, key) for k, key in
                                [("throughput", "rps"), ("cpu_per_request", "cpu_us_per_req"), ("p99", "p99_ms"),
                                 ("user_time_per_request", "user_us_per_req"),
                                 ("kernel_time_per_request", "sys_us_per_req")]})
        if s != "portcullis":
            summary["ratios"][s]["throughput_vs_plain_portcullis"] = ratio(s, "portcullis", "rps")
# Paired: the median over rounds of each round's ratio (scenarios of one round ran back to back, so a
# slow stretch of the machine cancels out); a second view beside the ratio of medians above.
def paired(a, b, key):
    ra = {r["round"]: r for r in sc.get(a, {}).get("runs", [])}
    rb = {r["round"]: r for r in sc.get(b, {}).get("runs", [])}
    xs = [ra[k][key] / rb[k][key] for k in ra if k in rb and ra[k][key] and rb[k][key]]
    return statistics.median(xs) if xs else None
for s in summary["ratios"]:
    summary["ratios"][s]["paired_throughput"] = paired(s, peer[s], "rps")
    summary["ratios"][s]["paired_cpu_per_request"] = paired(s, peer[s], "cpu_us_per_req")
    if s != "portcullis":
        summary["ratios"][s]["paired_throughput_vs_plain_portcullis"] = paired(s, "portcullis", "rps")
# Best round: the least CPU per request and the most requests/s a scenario reached in any round. On a
# shared machine, noise only ever adds cost, so the best round is the closest to the uncontended figure.
def best(s, key, pick):
    xs = [r[key] for r in sc.get(s, {}).get("runs", []) if r[key]]
    return pick(xs) if xs else None
for s in summary["ratios"]:
    b_cpu, n_cpu = best(s, "cpu_us_per_req", min), best(peer[s], "cpu_us_per_req", min)
    b_rps, n_rps = best(s, "rps", max), best(peer[s], "rps", max)
    summary["ratios"][s]["best_round_cpu_per_request"] = b_cpu / n_cpu if b_cpu and n_cpu else None
    summary["ratios"][s]["best_round_throughput"] = b_rps / n_rps if b_rps and n_rps else None
json.dump(summary, open(out_path, "w"), indent=2)

def f(x, fmt):
    return "-" if x is None else fmt % x
print()
print("%-22s %10s %9s %9s %11s %10s %10s %6s %10s %10s" % ("scenario", "req/s", "p50 ms", "p99 ms", "cpu us/req",
      "user us", "kernel us", "busy", "peak MiB", "idle MiB"))
for s in order:
    r = sc[s]
    print("%-22s %10s %9s %9s %11s %10s %10s %6s %10s %10s" % (s, f(r["rps"], "%.0f"), f(r["p50_ms"], "%.3f"),
          f(r["p99_ms"], "%.3f"), f(r["cpu_us_per_req"], "%.2f"), f(r["user_us_per_req"], "%.2f"),
          f(r["sys_us_per_req"], "%.2f"), f(None if r["proxy_cpu_busy"] is None else 100 * r["proxy_cpu_busy"], "%.0f%%"),
          f(r["peak_rss_mib"], "%.1f"), f(r["idle_rss_mib"], "%.1f")))
    if r["non_2xx"] or r["socket_errors"]:
        print("  warning: %s had %d non-2xx responses and %d socket errors" % (s, r["non_2xx"], r["socket_errors"]))
    if r["listen_drops"]:
        print("  note: during %s, %d connections were dropped at a full accept queue on this machine (TcpExt"
              " ListenDrops, any process; over all rounds; the client retries after 1 s)" % (s, r["listen_drops"]))
print("(medians of %d rounds of %d s; cpu (user + kernel) and peak RSS are the proxy process's, the upstream's for direct;"
      % (rounds, duration))
print(" busy: the proxy's CPU time over the run's wall time, below 100% means the load generator, not the proxy, was")
print(" the limit; the -tls, -h2 and -handshake scenarios share one server each, so their RSS is that server's;")
print(" handshake: req/s is new TLS connections (one request each) per second, p50/p99 not taken)")
print("summary: %s" % out_path)
for s, rt in summary["ratios"].items():
    if s == "portcullis" or sc[s]["group"] != "plain":
        continue
    print("%s/nginx: throughput %s, cpu-per-request %s, p99 %s; %s/portcullis throughput %s" % (
          s, f(rt["throughput"], "%.2f"), f(rt["cpu_per_request"], "%.2f"), f(rt["p99"], "%.2f"), s,
          f(rt.get("throughput_vs_plain_portcullis"), "%.2f")))
for s, rt in summary["ratios"].items():
    if sc[s]["group"] == "plain":
        continue
    print("%s/%s: throughput %s, cpu-per-request %s (user %s, kernel %s), p99 %s" % (
          s, rt["against"], f(rt["throughput"], "%.2f"), f(rt["cpu_per_request"], "%.2f"),
          f(rt["user_time_per_request"], "%.2f"), f(rt["kernel_time_per_request"], "%.2f"), f(rt["p99"], "%.2f")))
rt = summary["ratios"].get("portcullis", {})
for s, rt2 in summary["ratios"].items():
    print("%s/%s paired by round: throughput %s, cpu-per-request %s%s" % (s, rt2["against"], f(rt2["paired_throughput"], "%.2f"),
          f(rt2["paired_cpu_per_request"], "%.2f"),
          "" if s == "portcullis" or sc[s]["group"] != "plain" else
          "; vs portcullis throughput %s" % f(rt2["paired_throughput_vs_plain_portcullis"], "%.2f")))
for s, rt2 in summary["ratios"].items():
    print("%s/%s best round: throughput %s, cpu-per-request %s" % (s, rt2["against"], f(rt2["best_round_throughput"], "%.2f"),
          f(rt2["best_round_cpu_per_request"], "%.2f")))
# New groups' ratio lines first, so the last three lines stay the plain scenario's, as before.
def group_ratio(name, key):
    return summary["ratios"].get(name, {}).get(key)
# Rate limits: against plain Portcullis in the same run (targets: local >= 0.97x throughput; redis CPU per
# request <= 1.3x the local limiter's), and redis-server's own CPU per request apart.
if "portcullis-limit-local" in sc:
    print("portcullis-limit-local/portcullis throughput ratio: %s (paired by round %s), cpu-per-request ratio: %s" % (
          f(ratio("portcullis-limit-local", "portcullis", "rps"), "%.2f"),
          f(paired("portcullis-limit-local", "portcullis", "rps"), "%.2f"),
          f(ratio("portcullis-limit-local", "portcullis", "cpu_us_per_req"), "%.2f")))
if "portcullis-limit-redis" in sc:
    print("portcullis-limit-redis/portcullis throughput ratio: %s, cpu-per-request ratio: %s" % (
          f(ratio("portcullis-limit-redis", "portcullis", "rps"), "%.2f"),
          f(ratio("portcullis-limit-redis", "portcullis", "cpu_us_per_req"), "%.2f")))
if "portcullis-limit-redis" in sc and "portcullis-limit-local" in sc:
    extra = sc["portcullis-limit-redis"]["extra_cpu_us_per_req"]
    print("portcullis-limit-redis/portcullis-limit-local cpu-per-request ratio: %s (paired by round %s); "
          "redis-server's own cpu per request: %s us" % (
          f(ratio("portcullis-limit-redis", "portcullis-limit-local", "cpu_us_per_req"), "%.2f"),
          f(paired("portcullis-limit-redis", "portcullis-limit-local", "cpu_us_per_req"), "%.2f"), f(extra, "%.2f")))
# The admin API under a bounded loop of calls, against the same gateway nobody calls (target: at least 0.97x).
if "portcullis-admin-load" in sc and "portcullis-admin-off" in sc:
    print("portcullis-admin-load/portcullis-admin-off throughput ratio: %s (paired by round %s; target >= 0.97), "
          "cpu-per-request ratio: %s (paired by round %s)" % (
          f(ratio("portcullis-admin-load", "portcullis-admin-off", "rps"), "%.2f"),
          f(paired("portcullis-admin-load", "portcullis-admin-off", "rps"), "%.2f"),
          f(ratio("portcullis-admin-load", "portcullis-admin-off", "cpu_us_per_req"), "%.2f"),
          f(paired("portcullis-admin-load", "portcullis-admin-off", "cpu_us_per_req"), "%.2f")))
# Security events, the audit trail and an unreachable exporter, against the same 401 mix without them (target:
# at least 0.97x the throughput). 10% of each run's requests are 401s by design (wrk's "non-2xx" count).
if "portcullis-events" in sc and "portcullis-events-off" in sc:
    print("portcullis-events/portcullis-events-off throughput ratio: %s (paired by round %s; target >= 0.97), "
          "cpu-per-request ratio: %s (paired by round %s)" % (
          f(ratio("portcullis-events", "portcullis-events-off", "rps"), "%.2f"),
          f(paired("portcullis-events", "portcullis-events-off", "rps"), "%.2f"),
          f(ratio("portcullis-events", "portcullis-events-off", "cpu_us_per_req"), "%.2f"),
          f(paired("portcullis-events", "portcullis-events-off", "cpu_us_per_req"), "%.2f")))
# All of the security (JWT, role, rate limit, OpenAPI validation, inspection) against NGINX proxying the same
# POSTs with none of it (target: at most 1.0x CPU per request).
if "portcullis-full" in sc and "nginx-full" in sc:
    print("portcullis-full/nginx-full cpu-per-request ratio: %s (paired by round %s), throughput ratio: %s" % (
          f(ratio("portcullis-full", "nginx-full", "cpu_us_per_req"), "%.2f"),
          f(paired("portcullis-full", "nginx-full", "cpu_us_per_req"), "%.2f"),
          f(ratio("portcullis-full", "nginx-full", "rps"), "%.2f")))
print("portcullis/nginx user-time-per-request ratio: %s" % f(rt.get("user_time_per_request"), "%.2f"))
print("portcullis/nginx kernel-time-per-request ratio: %s" % f(rt.get("kernel_time_per_request"), "%.2f"))
if "portcullis-authz" in sc and "portcullis-jwt-es256" in sc and sc["portcullis-jwt-es256"]["rps"]:
    print("portcullis-authz/portcullis-jwt-es256 throughput ratio: %s" % f(
          None if sc["portcullis-authz"]["rps"] is None else sc["portcullis-authz"]["rps"] / sc["portcullis-jwt-es256"]["rps"], "%.2f"))
if "portcullis-tls" in summary["ratios"]:
    print("portcullis/nginx tls throughput ratio: %s" % f(group_ratio("portcullis-tls", "throughput"), "%.2f"))
    print("portcullis/nginx tls cpu-per-request ratio: %s" % f(group_ratio("portcullis-tls", "cpu_per_request"), "%.2f"))
    print("portcullis/nginx tls p99 ratio: %s" % f(group_ratio("portcullis-tls", "p99"), "%.2f"))
if "portcullis-h2" in summary["ratios"]:
    print("portcullis/nginx h2 throughput ratio: %s" % f(group_ratio("portcullis-h2", "throughput"), "%.2f"))
    print("portcullis/nginx h2 cpu-per-request ratio: %s" % f(group_ratio("portcullis-h2", "cpu_per_request"), "%.2f"))
    print("portcullis/nginx h2 p99 ratio: %s" % f(group_ratio("portcullis-h2", "p99"), "%.2f"))
if "portcullis-handshake" in summary["ratios"]:
    print("portcullis/nginx handshake ratio: %s" % f(group_ratio("portcullis-handshake", "throughput"), "%.2f"))
    print("portcullis/nginx handshake cpu-per-handshake ratio: %s" % f(group_ratio("portcullis-handshake", "cpu_per_request"), "%.2f"))
    busy = [sc[n]["proxy_cpu_busy"] for n in ("portcullis-handshake", peer["portcullis-handshake"]) if n in sc]
    if busy and all(b is not None and b < 0.9 for b in busy):
        print("  (handshakes: the proxies were busy %s of the time: the load generator was the limit, the "
              "cpu-per-handshake ratio is the one to read)" % " and ".join("%.0f%%" % (100 * b) for b in busy))
if "portcullis-c1000" in summary["ratios"]:
    print("portcullis/nginx c1000 throughput ratio: %s" % f(group_ratio("portcullis-c1000", "throughput"), "%.2f"))
    print("portcullis/nginx c1000 cpu-per-request ratio: %s" % f(group_ratio("portcullis-c1000", "cpu_per_request"), "%.2f"))
    print("portcullis/nginx c1000 p99 ratio: %s" % f(group_ratio("portcullis-c1000", "p99"), "%.2f"))
print("portcullis/nginx throughput ratio: %s" % f(rt.get("throughput"), "%.2f"))
print("portcullis/nginx cpu-per-request ratio: %s" % f(rt.get("cpu_per_request"), "%.2f"))
print("portcullis/nginx p99 ratio: %s" % f(rt.get("p99"), "%.2f"))
EOF
