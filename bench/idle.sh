#!/usr/bin/env bash
# Connection-scale benchmark: memory per idle connection, Portcullis against NGINX, in one run.
#
#   bench/idle.sh                    # N=10000 idle connections per server and mode
#   bench/idle.sh N=100000           # (or N=100000 bench/idle.sh); see "Limits" below
#   bench/idle.sh check              # also the limit checks at scale (CHECK=only: the checks alone)
#   MODES="plain tls" SERVERS=portcullis SKIP_BUILD=1 bench/idle.sh N=2000
#
# For each server (NGINX reverse proxy, one worker; Portcullis, workers: 1) and each mode (plain HTTP/1.1
# keep-alive, TLS 1.3 HTTP/1.1 keep-alive, HTTP/2 over TLS by ALPN, HTTP/2 by prior knowledge over plain
# TCP) it starts a fresh server, reads its RSS, opens N connections with examples/idle_clients.rs (bounded
# concurrency; every connection completes its TLS handshake and one GET answered 200 by the upstream),
# makes sure the server counts them all (Portcullis: portcullis_active_connections on the admin listener's
# /metrics; NGINX: stub_status "Active connections"), waits SETTLE seconds, reads VmRSS again and prints
# (after - before) / N. The upstream is the same NGINX `return 200` (128-byte body) as bench/run.sh's.
#
# Arguments are KEY=VALUE (the same as the environment variables) or `check`.
# Environment: N (10000), MODES ("plain tls h2 h2c"), SERVERS ("nginx portcullis"), CONCURRENCY (100
# connections opening at once), SILENT_RATE (2000 silent connections per second in the check), SETTLE (4 s between "all counted" and reading RSS), WARMUP_CONNS (16,
# opened and closed before the "before" reading), PER_SOURCE (5000 connections per loopback source
# address), OPEN_TIMEOUT (seconds for opening all N; default 60 + N/500), CHECK (0, 1 or only), CHECK_N
# (N), SKIP_BUILD=1, PORTCULLIS (binary; default $CARGO_TARGET_DIR/release/portcullis), CLIENT (the
# idle_clients binary), STRICT=1 (fail instead of lowering N when the open-file limit cannot be raised).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
log() { printf '== %s\n' "$*" >&2; }
die() { printf 'idle: %s\n' "$*" >&2; exit 1; }

for arg in "$@"; do
  case $arg in
    check) CHECK=1 ;;
    [A-Z_]*=*) export "${arg%%=*}=${arg#*=}" ;;
    *) die "unknown argument '$arg' (KEY=VALUE or check)" ;;
  esac
done

N=${N:-10000}
MODES=${MODES:-"plain tls h2 h2c"}
SERVERS=${SERVERS:-"nginx portcullis"}
# 100: gentle on the accept queues (Portcullis listened with a backlog of 128 before issue 10, and a burst
# of 500 connects overflowed it; both servers now ask for 4096).
CONCURRENCY=${CONCURRENCY:-100}
SILENT_RATE=${SILENT_RATE:-2000}
SETTLE=${SETTLE:-4}
WARMUP_CONNS=${WARMUP_CONNS:-16}
# 5000, far below the 28,232 ports of the default ephemeral range: bind() to port 0 searches for a free
# port, and with 17,000 ports of one address taken, opening slowed from 1.6 s to 10.5 s (measured here).
PER_SOURCE=${PER_SOURCE:-5000}
CHECK=${CHECK:-0}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PORTCULLIS=${PORTCULLIS:-$TARGET_DIR/release/portcullis}
CLIENT=${CLIENT:-$TARGET_DIR/release/examples/idle_clients}
OUT_DIR=$ROOT/target/bench
IDLE_TIMEOUT_S=600 # measurement runs: nothing may time out while connections are being counted
case $N in '' | *[!0-9]*) die "N must be a number" ;; esac
[ "$N" -ge 1 ] || die "N must be at least 1"
T0=$(date +%s)

# ---------------------------------------------------------------------------------------------------
# Tools
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "cargo build --release (portcullis and examples/idle_clients)"
  (cd "$ROOT" && cargo build --release --quiet && cargo build --release --quiet --example idle_clients)
fi
[ -x "$PORTCULLIS" ] || die "no portcullis binary at $PORTCULLIS"
[ -x "$CLIENT" ] || die "no idle_clients binary at $CLIENT (cargo build --release --example idle_clients)"

# ---------------------------------------------------------------------------------------------------
# Process bookkeeping: everything started here is ended on exit, by PID; sysctls changed are restored.
WORK=$(mktemp -d /tmp/portcullis-idle.XXXXXX)
PIDS=()
SYSCTL_RESTORE=()
restore_sysctls() {
  local kv
  for kv in "${SYSCTL_RESTORE[@]}"; do
    sysctl -q -w "$kv" >/dev/null 2>&1 && log "restored $kv" || log "could not restore $kv"
  done
  SYSCTL_RESTORE=()
}
cleanup() {
  local pid
  { exec 7>&-; } 2>/dev/null || true
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  sleep 0.3
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  restore_sysctls
  [ "${KEEP_WORK:-0}" = 1 ] && log "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_pid() { # pid: TERM, up to 5 s, then KILL
  local pid=$1 t=50
  kill -TERM "$pid" 2>/dev/null || return 0
  while [ $t -gt 0 ] && kill -0 "$pid" 2>/dev/null; do sleep 0.1; t=$((t - 1)); done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# ---------------------------------------------------------------------------------------------------
# Limits. Each of the client and the server holds N sockets (the check mode N+100), so the open-file
# limit is raised to N + 2048 for this script; the client and the servers inherit it. NGINX also gets
# worker_rlimit_nofile and worker_connections to match. Raising the hard limit needs CAP_SYS_RESOURCE;
# without it the script lowers N to what fits (STRICT=1: fails instead) and says so.
CHECK_N=${CHECK_N:-$N}
big=$N
[ "$CHECK" = 0 ] || [ $((CHECK_N + 100)) -le "$big" ] || big=$((CHECK_N + 100))
FD_NEED=$((big + 2048))

sysctl_get() { cat "/proc/sys/${1//.//}" 2>/dev/null || echo ""; }
sysctl_raise() { # key minimum: raise a sysctl for the run (restored on exit) if it is below minimum
  local key=$1 min=$2 cur
  cur=$(sysctl_get "$key")
  [ -n "$cur" ] || return 0
  if [ "$cur" -lt "$min" ]; then
    if sysctl -q -w "$key=$min" >/dev/null 2>&1; then
      SYSCTL_RESTORE+=("$key=$cur")
      log "raised $key from $cur to $min for this run"
    else
      log "could not raise $key from $cur to $min (read-only here)"
    fi
  fi
}
sysctl_raise fs.nr_open "$FD_NEED"
sysctl_raise fs.file-max $((3 * big + 65536))
sysctl_raise net.netfilter.nf_conntrack_max $((3 * big + 65536))

SOFT0=$(ulimit -Sn) HARD0=$(ulimit -Hn)
if [ "$HARD0" != unlimited ] && [ "$HARD0" -lt "$FD_NEED" ]; then
  ulimit -Hn "$FD_NEED" 2>/dev/null || true
fi
HARD=$(ulimit -Hn)
if [ "$HARD" != unlimited ] && [ "$HARD" -lt "$FD_NEED" ]; then
  fit=$(( (HARD - 2048) / 1000 * 1000 ))
  msg="open-file hard limit is $HARD and cannot be raised here (needs root with CAP_SYS_RESOURCE); $FD_NEED needed"
  [ "${STRICT:-0}" = 1 ] && die "$msg"
  [ "$fit" -ge 1000 ] || die "$msg"
  log "WARNING: $msg: lowering N from $N to $fit (and CHECK_N to at most $((fit - 100)))"
  [ "$N" -le "$fit" ] || N=$fit
  [ "$CHECK_N" -le $((fit - 100)) ] || CHECK_N=$((fit - 100))
  FD_NEED=$HARD
  big=$N
  [ "$CHECK" = 0 ] || [ $((CHECK_N + 100)) -le "$big" ] || big=$((CHECK_N + 100))
fi
ulimit -Sn "$FD_NEED"
FD_LIMIT=$(ulimit -Sn)
# worker_connections: twice the connections plus 1024. With N + 1024, NGINX logged "worker_connections
# are not enough, reusing connections" at N=17000 and closed a couple of hundred idle ones; the slots it
# preallocates are in its RSS from the start, so they do not enter the per-connection figure.
NGINX_CONNS=$((2 * big + 1024))

read -r PORT_LO PORT_HI < /proc/sys/net/ipv4/ip_local_port_range
PORTS=$((PORT_HI - PORT_LO + 1))
# one loopback source address per PER_SOURCE connections, well inside the ephemeral port range
if [ "$PER_SOURCE" -gt $((PORTS - 1000)) ]; then PER_SOURCE=$((PORTS - 1000)); fi
SOURCES=$(( (N + PER_SOURCE - 1) / PER_SOURCE ))
# Each client run binds its sockets to its own block of loopback addresses (127.R.B.1, 127.R.B.2, ...; R
# the run number, B random per script run), so a run never meets the TIME_WAIT ports of an earlier one.
SRC_B=$((RANDOM % 200 + 20))
RUN=1

log "N=$N idle connections per server and mode; modes: $MODES; servers: $SERVERS"
log "open files (ulimit -n) for this script, the client and the servers: soft $FD_LIMIT, hard $HARD (were $SOFT0/$HARD0)"
log "nginx: worker_rlimit_nofile $FD_LIMIT, worker_connections $NGINX_CONNS"
log "sysctl: fs.nr_open $(sysctl_get fs.nr_open), fs.file-max $(sysctl_get fs.file-max), ip_local_port_range $PORT_LO-$PORT_HI ($PORTS ports per source address), tcp_tw_reuse $(sysctl_get net.ipv4.tcp_tw_reuse)$( [ -n "$(sysctl_get net.netfilter.nf_conntrack_max)" ] && echo ", nf_conntrack_max $(sysctl_get net.netfilter.nf_conntrack_max)")"
log "client: $CONCURRENCY connections opening at once, up to $PER_SOURCE per loopback source address ($SOURCES address(es) per run at N=$N)"

# ---------------------------------------------------------------------------------------------------
# Helpers
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Waits until something listens on 127.0.0.1:port, without connecting (a probe connection would be
# counted, and would make the "before" figure not the start-up one): reads /proc/net/tcp.
wait_listen() { # port [seconds]
  local hex tries=$(( ${2:-10} * 20 ))
  hex=$(printf '0100007F:%04X 00000000:0000 0A' "$1")
  while [ $tries -gt 0 ]; do
    grep -q "$hex" /proc/net/tcp 2>/dev/null && return 0
    sleep 0.05
    tries=$((tries - 1))
  done
  return 1
}

# System-wide count of connections dropped because a listener's accept queue was full (TcpExt
# ListenOverflows); a non-zero change during a run is reported beside its figures.
listen_overflows() {
  awk '$1 == "TcpExt:" { if (!h) { for (i = 2; i <= NF; i++) k[i] = $i; h = 1 } else { for (i = 2; i <= NF; i++) if (k[i] == "ListenOverflows") print $i } }' /proc/net/netstat 2>/dev/null || echo 0
}

rss_kib() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

http_get() { # url: body on stdout (loopback only, 5 s)
  python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1" 2>/dev/null
}

# Connections the server under test counts as open.
#   portcullis: portcullis_active_connections (the admin listener's own connections are not in it)
#   nginx: stub_status "Active connections" (on a second server block) minus the status request itself
server_count() {
  local v
  if [ "$KIND" = portcullis ]; then
    v=$(http_get "http://$ADMIN/metrics" | awk '$1 == "portcullis_active_connections" { print $2 }' || true)
    echo "${v:--1}"
  else
    v=$(http_get "http://127.0.0.1:$STATUS_PORT/status" | awk '/^Active connections:/ { print $3 }' || true)
    echo $(( ${v:-0} - 1 ))
  fi
}

wait_count() { # expected seconds: waits until server_count equals expected; prints the last count
  local want=$1 t=$(( $2 * 5 )) c=-1
  while [ $t -gt 0 ]; do
    c=$(server_count)
    [ "$c" = "$want" ] && break
    sleep 0.2
    t=$((t - 1))
  done
  echo "$c"
}

# ---------------------------------------------------------------------------------------------------
# Per-run ECDSA P-256 certificate: a CA (the client's only trust anchor) and a leaf for localhost.
CERTS=$WORK/certs
mkdir -p "$CERTS"
(
  cd "$CERTS"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 \
    -subj /CN=portcullis-idle-bench-ca 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key -out leaf.csr \
    -subj /CN=localhost 2>/dev/null
  printf '%s\n' 'subjectAltName=DNS:localhost,IP:127.0.0.1' 'basicConstraints=critical,CA:FALSE' \
    'keyUsage=critical,digitalSignature' 'extendedKeyUsage=serverAuth' >leaf.ext
  openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile leaf.ext \
    -out leaf.pem 2>/dev/null
) || die "openssl could not make the certificates"

# ---------------------------------------------------------------------------------------------------
# NGINX (as bench/run.sh: own prefix, one worker, foreground)
BODY=$(python3 -c 'print("x" * 127)') # 127 + "\n" = 128 bytes

nginx_conf() { # prefix conns body
  cat <<EOF
worker_processes 1;
worker_rlimit_nofile $FD_LIMIT;
$( [ "$(id -u)" = 0 ] && echo "user root root;" )
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections $2; multi_accept on; }
http {
    access_log off;
    server_tokens off;
    keepalive_requests 1000000;
    keepalive_timeout ${IDLE_TIMEOUT_S}s;
    client_body_temp_path $1/client_body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
$3
}
EOF
}

start_nginx() { # name conns body; sets NGINX_MASTER, NGINX_WORKER
  local name=$1 prefix="$WORK/nginx-$1" tries=100
  mkdir -p "$prefix"
  nginx_conf "$prefix" "$2" "$3" >"$prefix/nginx.conf"
  "$NGINX" -t -q -p "$prefix" -e "$prefix/error.log" -c "$prefix/nginx.conf" 2>"$prefix/test.err" ||
    die "bad nginx config for $name: $(cat "$prefix/test.err")"
  "$NGINX" -p "$prefix" -e "$prefix/error.log" -c "$prefix/nginx.conf" -g 'daemon off;' 2>>"$prefix/error.log" &
  NGINX_MASTER=$!
  PIDS+=("$NGINX_MASTER")
  NGINX_WORKER=""
  while [ $tries -gt 0 ] && [ -z "$NGINX_WORKER" ]; do
    sleep 0.05
    NGINX_WORKER=$(pgrep -P "$NGINX_MASTER" | head -1 || true)
    tries=$((tries - 1))
  done
  [ -n "$NGINX_WORKER" ] || die "nginx $name did not start: $(cat "$prefix/error.log" 2>/dev/null)"
  PIDS+=("$NGINX_WORKER")
}

UPSTREAM_PORT=$(free_port)
start_nginx upstream 4096 "
    server {
        listen 127.0.0.1:$UPSTREAM_PORT reuseport backlog=4096;
        location / {
            default_type text/plain;
            return 200 \"$BODY\n\";
        }
    }"
wait_listen "$UPSTREAM_PORT" || die "upstream did not listen"
UPSTREAM_PIDS="$NGINX_MASTER $NGINX_WORKER"

# The server under test; sets KIND, PORT, SERVER_PID (whose RSS is measured), MASTER_PID, ADMIN,
# STATUS_PORT, START_KIB.
start_server() { # kind mode [max_connections header_read_timeout idle_timeout]
  KIND=$1
  local mode=$2 maxc=${3:-$((N + 1000))} hrt=${4:-10s} idle=${5:-${IDLE_TIMEOUT_S}s}
  PORT=$(free_port)
  MASTER_PID=""
  if [ "$KIND" = nginx ]; then
    local listen tls=""
    case $mode in
      plain) listen="listen 127.0.0.1:$PORT backlog=4096;" ;;
      tls) listen="listen 127.0.0.1:$PORT ssl backlog=4096;" ;;
      h2) listen="listen 127.0.0.1:$PORT ssl http2 backlog=4096;" ;;
      h2c) listen="listen 127.0.0.1:$PORT http2 backlog=4096;" ;;
    esac
    case $mode in tls | h2) tls="
        ssl_certificate $CERTS/leaf.pem;
        ssl_certificate_key $CERTS/leaf.key;
        ssl_protocols TLSv1.3;
        ssl_session_tickets off;" ;;
    esac
    STATUS_PORT=$(free_port)
    NGINX_PREFIX=$WORK/nginx-$mode-$RUN
    start_nginx "$mode-$RUN" "$NGINX_CONNS" "
    client_header_timeout $hrt;
    upstream up {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }
    server {
        $listen$tls
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
    }
    server {
        listen 127.0.0.1:$STATUS_PORT;
        location = /status { stub_status; }
    }"
    wait_listen "$PORT" || die "nginx $mode did not listen"
    SERVER_PID=$NGINX_WORKER
    MASTER_PID=$NGINX_MASTER
  else
    local template conf
    case $mode in
      plain) template=idle-plain.yaml ;;
      tls | h2) template=idle-tls.yaml ;;
      h2c) template=idle-h2c.yaml ;;
    esac
    ADMIN=127.0.0.1:$(free_port)
    conf="$WORK/portcullis-$mode-$RUN.yaml"
    sed -e "s|@LISTEN@|127.0.0.1:$PORT|g" -e "s|@UPSTREAM@|127.0.0.1:$UPSTREAM_PORT|g" -e "s|@ADMIN@|$ADMIN|g" \
      -e "s|@MAX_CONNECTIONS@|$maxc|g" -e "s|@MAX_PER_IP@|$maxc|g" -e "s|@HEADER_READ_TIMEOUT@|$hrt|g" \
      -e "s|@IDLE_TIMEOUT@|$idle|g" -e "s|@CERT@|$CERTS/leaf.pem|g" -e "s|@KEY@|$CERTS/leaf.key|g" \
      "$ROOT/bench/configs/$template" >"$conf"
    "$PORTCULLIS" check -c "$conf" >"$WORK/check.out" 2>&1 || die "portcullis check refused $conf: $(cat "$WORK/check.out")"
    "$PORTCULLIS" run -c "$conf" >"$WORK/portcullis-$mode-$RUN.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    wait_listen "$PORT" || die "portcullis $mode did not listen: $(tail -5 "$WORK/portcullis-$mode-$RUN.log")"
    wait_listen "${ADMIN##*:}" || die "portcullis admin did not listen"
  fi
  sleep 0.5
  kill -0 "$SERVER_PID" 2>/dev/null || die "$KIND $mode exited"
  START_KIB=$(rss_kib "$SERVER_PID")
}

stop_server() {
  if [ -n "$MASTER_PID" ]; then
    stop_pid "$MASTER_PID"
    stop_pid "$SERVER_PID"
  else
    stop_pid "$SERVER_PID"
  fi
}

# ---------------------------------------------------------------------------------------------------
# The client: examples/idle_clients, stdin on a FIFO held by this script (closing it ends the client).
client_mode() { case $1 in plain) echo h1 ;; *) echo "$1" ;; esac; }

start_client() { # mode n [rate]; sets CLIENT_PID, CLIENT_OUT
  local n=$2 rate=${3:-0} timeout
  timeout=${OPEN_TIMEOUT:-$((60 + n / 500))}
  CLIENT_OUT=$WORK/client-$RUN.out
  rm -f "$WORK/ctl"
  mkfifo "$WORK/ctl"
  "$CLIENT" --addr "127.0.0.1:$PORT" --n "$n" --mode "$1" --concurrency "$CONCURRENCY" --rate "$rate" \
    --source-base "127.$RUN.$SRC_B.1" --per-source "$PER_SOURCE" --ca "$CERTS/ca.pem" --server-name localhost \
    --open-timeout "$timeout" --conn-timeout 20 <"$WORK/ctl" >"$CLIENT_OUT" 2>"$WORK/client-$RUN.err" &
  CLIENT_PID=$!
  PIDS+=("$CLIENT_PID")
  exec 7<>"$WORK/ctl" # read-write: never blocks; the client sees EOF once this is closed
  RUN=$((RUN + 1))
  CLIENT_TIMEOUT=$((timeout + 30))
}

wait_ready() { # sets OPENED, FAILED; returns 1 when the client did not report in time
  local t=$((CLIENT_TIMEOUT * 10)) line
  OPENED=0 FAILED=0
  while [ $t -gt 0 ]; do
    line=$(grep -m1 '^ready ' "$CLIENT_OUT" 2>/dev/null || true)
    if [ -n "$line" ]; then
      OPENED=$(sed -n 's/.* opened=\([0-9]*\).*/\1/p' <<<"$line")
      FAILED=$(sed -n 's/.* failed=\([0-9]*\).*/\1/p' <<<"$line")
      return 0
    fi
    kill -0 "$CLIENT_PID" 2>/dev/null || break
    sleep 0.1
    t=$((t - 1))
  done
  return 1
}

client_closed() { # the client's latest count of connections the server closed
  local v
  v=$(grep '^holding ' "$CLIENT_OUT" 2>/dev/null | tail -1 | sed -n 's/.* closed=\([0-9]*\).*/\1/p')
  echo "${v:-0}"
}

stop_client() {
  exec 7>&-
  local t=50
  while [ $t -gt 0 ] && kill -0 "$CLIENT_PID" 2>/dev/null; do sleep 0.1; t=$((t - 1)); done
  stop_pid "$CLIENT_PID"
  rm -f "$WORK/ctl"
}

# ---------------------------------------------------------------------------------------------------
# Measurement of one server and mode.
RESULTS=$WORK/results.tsv
: >"$RESULTS"
FAILURES=0

measure() { # kind mode
  local kind=$1 mode=$2 before after master_before="" master_after="" count closed_c note=""
  start_server "$kind" "$mode"
  log "$kind $mode: started (pid $SERVER_PID$( [ -n "$MASTER_PID" ] && echo ", master $MASTER_PID"), RSS $START_KIB KiB)"
  # Warm-up: a few connections of the same mode, closed again, so one-time costs (first upstream
  # connection, lazily built state) are not charged to the idle connections.
  if [ "$WARMUP_CONNS" -gt 0 ]; then
    start_client "$(client_mode "$mode")" "$WARMUP_CONNS"
    wait_ready || die "$kind $mode: warm-up client did not report: $(tail -3 "$WORK/client-$((RUN - 1)).err")"
    [ "$OPENED" = "$WARMUP_CONNS" ] || die "$kind $mode: warm-up opened $OPENED of $WARMUP_CONNS: $(tail -3 "$WORK/client-$((RUN - 1)).err")"
    stop_client
    count=$(wait_count 0 10)
    [ "$count" = 0 ] || log "$kind $mode: after warm-up the server still counts $count connections"
    sleep 1
  fi
  before=$(rss_kib "$SERVER_PID")
  [ -z "$MASTER_PID" ] || master_before=$(rss_kib "$MASTER_PID")

  local ovf0 ovf
  ovf0=$(listen_overflows)
  start_client "$(client_mode "$mode")" "$N"
  wait_ready || die "$kind $mode: the client did not report in ${CLIENT_TIMEOUT}s: $(tail -3 "$WORK/client-$((RUN - 1)).err")"
  log "$kind $mode: client: $(grep -m1 '^ready ' "$CLIENT_OUT")"
  if [ "$OPENED" != "$N" ]; then
    note="only $OPENED of $N opened"
    log "$kind $mode: WARNING $note; first errors: $(head -3 "$WORK/client-$((RUN - 1)).err" | tr '\n' ' ')"
    FAILURES=$((FAILURES + 1))
  fi
  # Every connection the client holds must be counted by the server before RSS is read.
  count=$(wait_count "$OPENED" 30)
  if [ "$count" != "$OPENED" ]; then
    note="${note:+$note; }server counts $count of $OPENED"
    log "$kind $mode: WARNING the server counts $count connections, the client holds $OPENED"
    FAILURES=$((FAILURES + 1))
  else
    log "$kind $mode: server counts $count open connections$( [ "$kind" = portcullis ] && echo ' (portcullis_active_connections)' || echo ' (stub_status)')"
  fi
  ovf=$(( $(listen_overflows) - ovf0 ))
  if [ "$ovf" -gt 0 ]; then
    note="${note:+$note; }$ovf accept-queue overflows (TcpExt ListenOverflows, system-wide)"
    log "$kind $mode: $ovf accept-queue overflows while opening (TcpExt ListenOverflows, system-wide)"
  fi
  sleep "$SETTLE"
  after=$(rss_kib "$SERVER_PID")
  [ -z "$MASTER_PID" ] || master_after=$(rss_kib "$MASTER_PID")
  closed_c=$(client_closed)
  count=$(server_count)
  if [ "$closed_c" != 0 ] || [ "$count" != "$OPENED" ]; then
    note="${note:+$note; }after settling: $closed_c closed by the server, server counts $count"
    log "$kind $mode: WARNING $note"
    FAILURES=$((FAILURES + 1))
  fi
  stop_client
  stop_server
  if [ "$kind" = nginx ]; then
    local alerts
    # (the warning that worker_connections exceed the open-file limit is expected: see NGINX_CONNS)
    alerts=$(grep -E '\[(warn|alert|crit|emerg)\]' "$NGINX_PREFIX/error.log" 2>/dev/null | grep -c -v 'exceed open file resource limit' || true)
    if [ "${alerts:-0}" -gt 0 ]; then
      note="${note:+$note; }$alerts nginx alerts"
      log "$kind $mode: nginx error.log: $(grep -E '\[(warn|alert|crit|emerg)\]' "$NGINX_PREFIX/error.log" | grep -v 'exceed open file resource limit' | head -1)"
    fi
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$mode" "$OPENED" "$START_KIB" "$before" "$after" \
    "${master_before:--}" "${master_after:--}" "${note:--}" >>"$RESULTS"
  log "$kind $mode: RSS $before -> $after KiB: $(awk -v a="$after" -v b="$before" -v n="$OPENED" 'BEGIN { printf "%.1f", n ? (a - b) / n : 0 }') KiB per idle connection"
}

# ---------------------------------------------------------------------------------------------------
# Limit checks at scale (Portcullis). Each prints one PASS/FAIL line.
CHECKS=$WORK/checks.txt
: >"$CHECKS"
check_line() { # PASS|FAIL text
  printf 'check %s: %s\n' "$2" "$1" >>"$CHECKS"
  log "check $2: $1"
  [ "$1" = PASS ] || FAILURES=$((FAILURES + 1))
}

run_checks() {
  local k=$CHECK_N count closed_c t refused
  # 1. max_connections: K+100 clients, exactly K served and counted, the rest closed at accept.
  start_server portcullis plain "$k" 10s "${IDLE_TIMEOUT_S}s"
  start_client h1 $((k + 100))
  wait_ready || die "check max_connections: the client did not report"
  count=$(wait_count "$k" 15)
  refused=$(http_get "http://$ADMIN/metrics" | awk '/^portcullis_rejected_connections_total/ && /max_connections"/ { print $2 }' || true)
  if [ "$OPENED" = "$k" ] && [ "$FAILED" = 100 ] && [ "$count" = "$k" ]; then
    check_line PASS "max_connections=$k, $((k + 100)) connections: $OPENED served, $FAILED refused, $count counted, rejected_connections_total{reason=max_connections} ${refused:-?}"
  else
    check_line FAIL "max_connections=$k, $((k + 100)) connections: $OPENED served, $FAILED refused (want 100), $count counted, rejected_connections_total{reason=max_connections} ${refused:-?}"
  fi
  stop_client
  stop_server

  # 2. header_read_timeout: K silent connections (connect, send nothing) all closed by the server.
  start_server portcullis plain $((k + 1000)) 3s "${IDLE_TIMEOUT_S}s"
  start_client silent "$k" "$SILENT_RATE"
  wait_ready || die "check header_read_timeout: the client did not report"
  t=300 # 3 s timeout + up to 30 s: waits at most 30 s after all are connected
  while [ $t -gt 0 ] && [ "$(client_closed)" != "$OPENED" ]; do sleep 0.1; t=$((t - 1)); done
  closed_c=$(client_closed)
  count=$(wait_count 0 5)
  if [ "$OPENED" = "$k" ] && [ "$closed_c" = "$k" ] && [ "$count" = 0 ]; then
    check_line PASS "header_read_timeout=3s: $k silent connections, $closed_c closed by the server, $count counted after"
  else
    check_line FAIL "header_read_timeout=3s: $k silent connections, $OPENED connected, $closed_c closed by the server, $count counted after"
  fi
  stop_client
  stop_server

  # 3. idle_timeout: K kept-alive connections after one request, all closed by the server.
  start_server portcullis plain $((k + 1000)) 10s 4s
  start_client h1 "$k"
  wait_ready || die "check idle_timeout: the client did not report"
  t=300
  while [ $t -gt 0 ] && [ "$(client_closed)" != "$OPENED" ]; do sleep 0.1; t=$((t - 1)); done
  closed_c=$(client_closed)
  count=$(wait_count 0 5)
  if [ "$OPENED" = "$k" ] && [ "$closed_c" = "$k" ] && [ "$count" = 0 ]; then
    check_line PASS "idle_timeout=4s: $k idle keep-alive connections, $closed_c closed by the server, $count counted after"
  else
    check_line FAIL "idle_timeout=4s: $k idle keep-alive connections, $OPENED served, $closed_c closed by the server, $count counted after"
  fi
  stop_client
  stop_server
}

# ---------------------------------------------------------------------------------------------------
log "portcullis limits for the measured runs: max_connections $((N + 1000)), max_connections_per_ip $((N + 1000)), header_read_timeout 10s, idle_timeout ${IDLE_TIMEOUT_S}s (bench/configs/idle-*.yaml, validated with portcullis check)"
if [ "$CHECK" != only ]; then
  for mode in $MODES; do
    case $mode in plain | tls | h2 | h2c) ;; *) die "unknown mode $mode (plain tls h2 h2c)" ;; esac
    for kind in $SERVERS; do
      case $kind in nginx | portcullis) ;; *) die "unknown server $kind" ;; esac
      measure "$kind" "$mode"
    done
  done
fi
if [ "$CHECK" != 0 ]; then
  log "checks: portcullis with CHECK_N=$CHECK_N"
  run_checks
fi

# ---------------------------------------------------------------------------------------------------
# Report (every server and client has been stopped by now)
restore_sysctls
mkdir -p "$OUT_DIR"
cp "$RESULTS" "$OUT_DIR/idle.tsv"
echo
extra() { # master-before master-after note
  local out=""
  [ "$1" = - ] || out="nginx master $1 -> $2 KiB"
  [ "$3" = - ] || out="${out:+$out; }$3"
  echo "$out"
}
if [ -s "$RESULTS" ]; then
  printf '%-11s %-6s %7s %10s %10s %10s %10s %9s  %s\n' server mode conns "start KiB" "before KiB" "after KiB" "delta KiB" "KiB/conn" note
  while IFS=$'\t' read -r kind mode n start before after mb ma note; do
    printf '%-11s %-6s %7s %10s %10s %10s %10s %9s  %s\n' "$kind" "$mode" "$n" "$start" "$before" "$after" \
      $((after - before)) "$(awk -v a="$after" -v b="$before" -v n="$n" 'BEGIN { printf "%.1f", n ? (a - b) / n : 0 }')" \
      "$(extra "$mb" "$ma" "$note")"
  done <"$RESULTS"
  echo "(RSS is VmRSS of the Portcullis process and of the NGINX worker; 'start' right after start-up, 'before' after"
  echo " $WARMUP_CONNS warm-up connections were opened and closed, 'after' with all $N connections open and counted + ${SETTLE}s)"
fi
[ ! -s "$CHECKS" ] || { echo; cat "$CHECKS"; }
echo "run time: $(( $(date +%s) - T0 )) s; N=$N; results: $OUT_DIR/idle.tsv"
if [ "$CHECK" = only ]; then
  [ "$FAILURES" = 0 ] || echo "WARNING: $FAILURES check(s) failed"
  [ "$FAILURES" = 0 ]
  exit
fi
per_conn() { # kind mode
  awk -F'\t' -v k="$1" -v m="$2" '$1 == k && $2 == m { printf "%.1f", $3 ? ($6 - $5) / $3 : 0; found = 1 } END { if (!found) printf "-" }' "$RESULTS"
}
for mode in tls h2 h2c; do
  case " $MODES " in *" $mode "*) ;; *) continue ;; esac
  for kind in $SERVERS; do echo "$kind $mode idle KiB per connection: $(per_conn "$kind" "$mode")"; done
done
if grep -q "^portcullis	plain	" "$RESULTS"; then
  echo "portcullis idle RSS at start: $(awk -F'\t' '$1 == "portcullis" && $2 == "plain" { printf "%.1f", $4 / 1024 }' "$RESULTS") MiB (target: at most 15 MiB)"
fi
if [ "$FAILURES" -gt 0 ]; then echo "WARNING: $FAILURES problem(s) above"; fi
case " $MODES " in
  *" plain "*)
    for kind in portcullis nginx; do
      case " $SERVERS " in *" $kind "*) echo "$kind idle KiB per connection: $(per_conn "$kind" plain)" ;; esac
    done
    ;;
esac
[ "$FAILURES" = 0 ]
