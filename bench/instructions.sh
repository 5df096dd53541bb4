#!/usr/bin/env bash
# User-space instructions per proxied request, counted with callgrind (repeatable whatever the machine
# is doing, unlike CPU time).
#
#   bench/instructions.sh                       # public route (bench/configs/plain.yaml), 5 windows
#   WINDOWS=7 REQUESTS=4000 bench/instructions.sh
#   CONFIG=bench/configs/apikey.yaml HEADER='X-API-Key: ...' bench/instructions.sh
#   REQ_PATH=/users/user-0/orders/1 ...          # the request's path (default /)
#   WITH_NGINX=1 bench/instructions.sh          # also count an NGINX reverse proxy over the same upstream
#   KEEP_DUMPS=/tmp/cg bench/instructions.sh    # keep each window's callgrind dump (callgrind_annotate)
#
# Portcullis runs under `valgrind --tool=callgrind` in front of an NGINX upstream (`return 200`, 128
# bytes). After a warm-up, each window zeroes the counters, sends REQUESTS keep-alive requests from one
# connection-pool client (8 connections), and dumps the counters; instructions per request = the
# window's total Ir / REQUESTS. The windows include the proxy's idle work between requests (timers,
# epoll), as a real load does. Prints every window and the median and mean. Everything started here
# is stopped by PID on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WINDOWS=${WINDOWS:-5}
REQUESTS=${REQUESTS:-3000}
CONFIG=${CONFIG:-$ROOT/bench/configs/plain.yaml}
HEADER=${HEADER:-}
REQ_PATH=${REQ_PATH:-/}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PORTCULLIS=${PORTCULLIS:-$TARGET_DIR/release/portcullis}

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'instructions: %s\n' "$*" >&2; exit 1; }

need=()
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "cargo build --release"
  (cd "$ROOT" && cargo build --release --quiet)
fi
[ -x "$PORTCULLIS" ] || die "no binary at $PORTCULLIS"

WORK=$(mktemp -d /tmp/portcullis-instr.XXXXXX)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
wait_port() { # port seconds
  local tries=$(( $2 * 20 ))
  while [ $tries -gt 0 ]; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
    tries=$((tries - 1))
  done
  return 1
}

# The upstream (and, with WITH_NGINX=1, an NGINX reverse proxy in front of it).
UP_PORT=$(free_port)
NGX_PORT=$(free_port)
BODY=$(python3 -c 'print("x" * 127)')
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
$( [ "$(id -u)" = 0 ] && echo "user root root;" )
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/cb; proxy_temp_path $WORK/nginx/p;
    fastcgi_temp_path $WORK/nginx/f; uwsgi_temp_path $WORK/nginx/u; scgi_temp_path $WORK/nginx/s;
    keepalive_requests 1000000;
    server { listen 127.0.0.1:$UP_PORT; location / { default_type text/plain; return 200 "$BODY\n"; } }
    upstream up { server 127.0.0.1:$UP_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$NGX_PORT;
        location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
EOF
"$NGINX" -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
wait_port "$UP_PORT" 10 || die "upstream did not listen"

# A keep-alive client that sends exactly N requests over 8 connections and checks every answer is 200.
cat >"$WORK/load.py" <<'EOF'
import socket, sys, threading
port, total, header, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
extra = (header + "\r\n") if header else ""
req = ("GET " + path + " HTTP/1.1\r\nHost: bench\r\n" + extra + "\r\n").encode()
bad = []
def worker(n):
    s = socket.create_connection(("127.0.0.1", port))
    buf = b""
    for _ in range(n):
        s.sendall(req)
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                head = buf[:end].decode("latin-1").lower()
                length = next(int(l.split(":", 1)[1]) for l in head.split("\r\n") if l.startswith("content-length:"))
                if len(buf) >= end + 4 + length:
                    if not head.startswith("http/1.1 200"):
                        bad.append(head.split("\r\n")[0])
                    buf = buf[end + 4 + length:]
                    break
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("connection closed")
            buf += chunk
    s.close()
conns = 8
threads = [threading.Thread(target=worker, args=(total // conns + (1 if i < total % conns else 0),)) for i in range(conns)]
for t in threads: t.start()
for t in threads: t.join()
if bad:
    raise SystemExit(f"{len(bad)} answers were not 200, first: {bad[0]}")
EOF

count() { # name pid port -> prints per-window figures and the median
  local name=$1 pid=$2 port=$3 w total
  local -a per=()
  python3 "$WORK/load.py" "$port" 300 "$HEADER" "$REQ_PATH" # warm-up: pools, caches
  for w in $(seq 1 "$WINDOWS"); do
    callgrind_control -z "$pid" >/dev/null 2>&1
    python3 "$WORK/load.py" "$port" "$REQUESTS" "$HEADER" "$REQ_PATH"
    callgrind_control -d "$pid" >/dev/null 2>&1
    local dump
    dump=$(ls -t "$WORK"/cg."$pid".* 2>/dev/null | head -n 1)
    total=$(awk '/^(summary|totals):/ { print $2; exit }' "$dump")
    per+=($((total / REQUESTS)))
    if [ -n "${KEEP_DUMPS:-}" ]; then mkdir -p "$KEEP_DUMPS" && cp "$dump" "$KEEP_DUMPS/$name.$w.out"; fi
    rm -f "$dump"
  done
  printf '%s: instructions per request by window: %s\n' "$name" "${per[*]}"
  printf '%s\n' "${per[@]}" | sort -n | awk -v n="$name" '{ v[NR] = $1; s += $1 }
    END { printf "%s: median %d, mean %d over %d windows\n", n, v[int((NR + 1) / 2)], s / NR, NR }'
}

PC_PORT=$(free_port)
sed -e "s|@LISTEN@|127.0.0.1:$PC_PORT|g" -e "s|@UPSTREAM@|127.0.0.1:$UP_PORT|g" -e "s|@WORK@|$WORK|g" \
  "$CONFIG" >"$WORK/portcullis.yaml"
valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.%p" \
  "$PORTCULLIS" run -c "$WORK/portcullis.yaml" >"$WORK/portcullis.log" 2>&1 &
PC_PID=$!
PIDS+=("$PC_PID")
wait_port "$PC_PORT" 120 || die "portcullis did not listen under valgrind: $(tail -5 "$WORK/portcullis.log")"
log "portcullis under callgrind (pid $PC_PID), $WINDOWS windows of $REQUESTS requests"
count portcullis "$PC_PID" "$PC_PORT"

if [ "${WITH_NGINX:-0}" = 1 ]; then
  # NGINX's proxy runs as the same master as the upstream here; count a separate one under callgrind.
  NP=$(free_port)
  sed -e "s|listen 127.0.0.1:$NGX_PORT|listen 127.0.0.1:$NP|" -e "/listen 127.0.0.1:$UP_PORT/d" \
    -e "s|$WORK/nginx/nginx.pid|$WORK/nginx/proxy.pid|" "$WORK/nginx/nginx.conf" >"$WORK/nginx/proxy.conf"
  sed -i 's|^worker_processes 1;|worker_processes 1; master_process off;|' "$WORK/nginx/proxy.conf"
  valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.%p" \
    "$NGINX" -p "$WORK/nginx" -e "$WORK/nginx/proxy-error.log" -c "$WORK/nginx/proxy.conf" -g 'daemon off;' \
    >"$WORK/nginx-proxy.log" 2>&1 &
  NG_PID=$!
  PIDS+=("$NG_PID")
  wait_port "$NP" 120 || die "nginx proxy did not listen under valgrind"
  count nginx "$NG_PID" "$NP"
fi
