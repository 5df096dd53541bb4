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
#   portcullis-apikey      the same with an API key (X-API-Key, declared by hash in bench/configs/apikey.yaml)
#   portcullis-jwt-es256   the same with a JWT bearer token, ES256, keys from a JWKS file (bench/mint.py)
#   portcullis-jwt-rs256   the same with RS256
# (AUTH_SCENARIOS=0 leaves the authenticated ones out.) More are one `add_portcullis` line each.
#
# The proxy under test runs on CPU $PROXY_CPU, wrk and the upstream on CPU $LOAD_CPU. Per scenario it
# prints the medians over rounds of requests/s, p50 and p99 latency, CPU microseconds per request of the
# proxy process (utime+stime of all its threads from /proc/PID/stat, over the measured run, divided by
# the requests wrk counted), peak RSS (VmHWM), and Portcullis' idle RSS. Results: target/bench/summary.json.
#
# Environment: ROUNDS (5), DURATION (seconds, 5), WARMUP (seconds, 1), CONNECTIONS (32), THREADS (1),
# PROXY_CPU (0), LOAD_CPU (1), SKIP_BUILD=1 (use the existing release binary), PORTCULLIS (binary path),
# COMPARE_BIN (a second Portcullis binary, measured as scenario portcullis-compare, for A/B of a change).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
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
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
command -v python3 >/dev/null 2>&1 || die "python3 is needed"
command -v taskset >/dev/null 2>&1 || die "taskset (util-linux) is needed"
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
  rm -rf "$WORK"
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

# CPU ticks (utime+stime) of the given PIDs; /proc/PID/stat covers all threads of the process.
cpu_ticks() {
  local total=0 pid line rest
  for pid in "$@"; do
    line=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    rest=${line##*) }             # fields after "(comm) ", starting at field 3 (state)
    # shellcheck disable=SC2086
    set -- $rest
    total=$((total + ${12} + ${13})) # fields 14 and 15: utime, stime
  done
  echo "$total"
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
SCENARIOS=()
declare -A S_URL S_CPU_PIDS S_RSS_PID S_HEADERS S_KIND S_IDLE_KIB

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
S_URL[direct]="http://127.0.0.1:$UPSTREAM_PORT/"
S_CPU_PIDS[direct]=$UPSTREAM_PIDS
S_RSS_PID[direct]=${NGINX_WORKERS%% *}

add_nginx() { # name
  local name=$1 port
  port=$(free_port)
  start_nginx "$name" "$PROXY_CPU" "
    upstream up {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }
    server {
        listen 127.0.0.1:$port backlog=4096;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Request-Id \$request_id;
            proxy_buffering on;
        }
    }"
  wait_port "$port" || die "nginx $name did not listen"
  SCENARIOS+=("$name")
  S_KIND[$name]=nginx
  S_URL[$name]="http://127.0.0.1:$port/"
  S_CPU_PIDS[$name]="$NGINX_MASTER $NGINX_WORKERS"
  S_RSS_PID[$name]=${NGINX_WORKERS%% *}
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
  sed -e "s|@LISTEN@|127.0.0.1:$port|g" -e "s|@UPSTREAM@|127.0.0.1:$UPSTREAM_PORT|g" -e "s|@WORK@|$WORK|g" \
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
}

# ---------------------------------------------------------------------------------------------------
# Scenarios. Each Portcullis variant is one add_portcullis line; authenticated ones send their credential.
add_nginx nginx
add_portcullis portcullis "$ROOT/bench/configs/plain.yaml" http
if [ "${AUTH_SCENARIOS:-1}" = 1 ]; then
  python3 "$ROOT/bench/mint.py" "$WORK" || die "could not mint the JWT bench keys"
  # The quickstart's demo key, declared by its keyed hash in apikey.yaml.
  add_portcullis portcullis-apikey "$ROOT/bench/configs/apikey.yaml" http \
    "X-API-Key: pcs_vukq26u5_67m2su4ux6jqs7q4fnbjkz6tyifqqjz2cotjxva"
  add_portcullis portcullis-jwt-es256 "$ROOT/bench/configs/jwt-es256.yaml" http \
    "Authorization: Bearer $(cat "$WORK/es256.token")"
  add_portcullis portcullis-jwt-rs256 "$ROOT/bench/configs/jwt-rs256.yaml" http \
    "Authorization: Bearer $(cat "$WORK/rs256.token")"
fi
# A/B: COMPARE_BIN=/path/to/other/portcullis adds the same scenario run by another build.
if [ -n "${COMPARE_BIN:-}" ]; then
  BIN=$COMPARE_BIN add_portcullis portcullis-compare "$ROOT/bench/configs/plain.yaml" http
fi

# Every scenario answers 200 before anything is measured.
for s in "${SCENARIOS[@]}"; do
  code=$(python3 - "${S_URL[$s]}" "${S_HEADERS[$s]:-}" <<'EOF'
import ssl, sys, urllib.request
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
req = urllib.request.Request(sys.argv[1])
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

# ---------------------------------------------------------------------------------------------------
# Measurement
RESULTS=$WORK/results.jsonl
: >"$RESULTS"

run_wrk() { # scenario seconds output-file
  local s=$1 args=() h
  while IFS= read -r h; do
    [ -n "$h" ] && args+=(-H "$h")
  done <<<"${S_HEADERS[$s]:-}"
  timeout $(($2 + 15)) taskset -c "$LOAD_CPU" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$2"s --timeout 2s --latency \
    "${args[@]}" "${S_URL[$s]}" >"$3" 2>&1 || true
}

measure() { # scenario round
  local s=$1 round=$2 before after out="$WORK/wrk-$1-$2.txt"
  run_wrk "$s" "$WARMUP" /dev/null
  # shellcheck disable=SC2086
  before=$(cpu_ticks ${S_CPU_PIDS[$s]})
  run_wrk "$s" "$DURATION" "$out"
  # shellcheck disable=SC2086
  after=$(cpu_ticks ${S_CPU_PIDS[$s]})
  python3 - "$s" "$round" "$((after - before))" "$CLK_TCK" "$out" >>"$RESULTS" <<'EOF'
import json, re, sys
name, rnd, ticks, clk, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
text = open(path).read()
def lat(p):
    m = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s)\s*$" % p, text, re.M)
    if not m:
        return None
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
m = re.search(r"(\d+) requests in", text)
reqs = int(m.group(1)) if m else 0
m = re.search(r"Requests/sec:\s+([\d.]+)", text)
rps = float(m.group(1)) if m else 0.0
m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
bad = int(m.group(1)) if m else 0
m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
sock = sum(int(x) for x in m.groups()) if m else 0
cpu_us = ticks * 1e6 / clk / reqs if reqs else None
print(json.dumps({"scenario": name, "round": rnd, "requests": reqs, "rps": rps, "p50_ms": lat(50),
                  "p99_ms": lat(99), "cpu_us_per_req": cpu_us, "cpu_ticks": ticks,
                  "non_2xx": bad, "socket_errors": sock}))
EOF
  tail -n1 "$RESULTS" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("   %-22s round %d: %9.0f req/s  p50 %6.3f ms  p99 %6.3f ms  cpu %6.2f us/req%s" % (r["scenario"], r["round"], r["rps"], r["p50_ms"] or 0, r["p99_ms"] or 0, r["cpu_us_per_req"] or 0, "  (non-2xx %d, socket errors %d)" % (r["non_2xx"], r["socket_errors"]) if r["non_2xx"] or r["socket_errors"] else ""))' >&2
}

log "scenarios: ${SCENARIOS[*]}; $ROUNDS rounds x ${DURATION}s (+${WARMUP}s warmup), wrk -t$THREADS -c$CONNECTIONS; proxy on CPU $PROXY_CPU, wrk+upstream on CPU $LOAD_CPU"
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
    printf '"%s": {"kind": "%s", "peak_rss_kib": %s, "idle_rss_kib": %s}' "$s" "${S_KIND[$s]}" \
      "$(status_kib "${S_RSS_PID[$s]}" VmHWM)" "${S_IDLE_KIB[$s]:-null}"
  done
  echo "}"
} >"$MEM"

mkdir -p "$OUT_DIR"
python3 - "$RESULTS" "$MEM" "$OUT_DIR/summary.json" "$ROUNDS" "$DURATION" "$CONNECTIONS" <<'EOF'
import json, statistics, sys
results_path, mem_path, out_path = sys.argv[1:4]
rounds, duration, conns = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
rows = [json.loads(l) for l in open(results_path) if l.strip()]
mem = json.load(open(mem_path))
order = list(mem.keys())
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
summary = {"rounds": rounds, "duration_s": duration, "connections": conns, "scenarios": {}}
for s in order:
    rs = [r for r in rows if r["scenario"] == s]
    summary["scenarios"][s] = {
        "kind": mem[s]["kind"],
        "rps": med([r["rps"] for r in rs]),
        "p50_ms": med([r["p50_ms"] for r in rs]),
        "p99_ms": med([r["p99_ms"] for r in rs]),
        "cpu_us_per_req": med([r["cpu_us_per_req"] for r in rs]),
        "peak_rss_mib": mem[s]["peak_rss_kib"] / 1024,
        "idle_rss_mib": None if mem[s]["idle_rss_kib"] is None else mem[s]["idle_rss_kib"] / 1024,
        "non_2xx": sum(r["non_2xx"] for r in rs),
        "socket_errors": sum(r["socket_errors"] for r in rs),
        "runs": rs,
    }
sc = summary["scenarios"]
def ratio(a, b, key):
    if a not in sc or b not in sc or not sc[a][key] or not sc[b][key]:
        return None
    return sc[a][key] / sc[b][key]
summary["ratios"] = {}
for s in order:
    if sc[s]["kind"] == "portcullis":
        summary["ratios"][s] = {k: ratio(s, "nginx", key) for k, key in
                                [("throughput", "rps"), ("cpu_per_request", "cpu_us_per_req"), ("p99", "p99_ms")]}
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
    summary["ratios"][s]["paired_throughput"] = paired(s, "nginx", "rps")
    summary["ratios"][s]["paired_cpu_per_request"] = paired(s, "nginx", "cpu_us_per_req")
    if s != "portcullis":
        summary["ratios"][s]["paired_throughput_vs_plain_portcullis"] = paired(s, "portcullis", "rps")
# Best round: the least CPU per request and the most requests/s a scenario reached in any round. On a
# shared machine, noise only ever adds cost, so the best round is the closest to the uncontended figure.
def best(s, key, pick):
    xs = [r[key] for r in sc.get(s, {}).get("runs", []) if r[key]]
    return pick(xs) if xs else None
for s in summary["ratios"]:
    b_cpu, n_cpu = best(s, "cpu_us_per_req", min), best("nginx", "cpu_us_per_req", min)
    b_rps, n_rps = best(s, "rps", max), best("nginx", "rps", max)
    summary["ratios"][s]["best_round_cpu_per_request"] = b_cpu / n_cpu if b_cpu and n_cpu else None
    summary["ratios"][s]["best_round_throughput"] = b_rps / n_rps if b_rps and n_rps else None
json.dump(summary, open(out_path, "w"), indent=2)

def f(x, fmt):
    return "-" if x is None else fmt % x
print()
print("%-22s %10s %9s %9s %11s %10s %10s" % ("scenario", "req/s", "p50 ms", "p99 ms", "cpu us/req", "peak MiB", "idle MiB"))
for s in order:
    r = sc[s]
    print("%-22s %10s %9s %9s %11s %10s %10s" % (s, f(r["rps"], "%.0f"), f(r["p50_ms"], "%.3f"), f(r["p99_ms"], "%.3f"),
          f(r["cpu_us_per_req"], "%.2f"), f(r["peak_rss_mib"], "%.1f"), f(r["idle_rss_mib"], "%.1f")))
    if r["non_2xx"] or r["socket_errors"]:
        print("  warning: %s had %d non-2xx responses and %d socket errors" % (s, r["non_2xx"], r["socket_errors"]))
print("(medians of %d rounds of %d s; cpu and peak RSS are the proxy process's, the upstream's for direct)" % (rounds, duration))
print("summary: %s" % out_path)
for s, rt in summary["ratios"].items():
    if s == "portcullis":
        continue
    print("%s/nginx: throughput %s, cpu-per-request %s, p99 %s; %s/portcullis throughput %s" % (
          s, f(rt["throughput"], "%.2f"), f(rt["cpu_per_request"], "%.2f"), f(rt["p99"], "%.2f"), s,
          f(rt.get("throughput_vs_plain_portcullis"), "%.2f")))
rt = summary["ratios"].get("portcullis", {})
for s, rt2 in summary["ratios"].items():
    print("%s/nginx paired by round: throughput %s, cpu-per-request %s%s" % (s, f(rt2["paired_throughput"], "%.2f"),
          f(rt2["paired_cpu_per_request"], "%.2f"),
          "" if s == "portcullis" else "; vs portcullis throughput %s" % f(rt2["paired_throughput_vs_plain_portcullis"], "%.2f")))
for s, rt2 in summary["ratios"].items():
    print("%s/nginx best round: throughput %s, cpu-per-request %s" % (s, f(rt2["best_round_throughput"], "%.2f"),
          f(rt2["best_round_cpu_per_request"], "%.2f")))
print("portcullis/nginx throughput ratio: %s" % f(rt.get("throughput"), "%.2f"))
print("portcullis/nginx cpu-per-request ratio: %s" % f(rt.get("cpu_per_request"), "%.2f"))
print("portcullis/nginx p99 ratio: %s" % f(rt.get("p99"), "%.2f"))
EOF
