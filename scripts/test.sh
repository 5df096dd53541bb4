#!/usr/bin/env bash
# Runs every check and test on a fresh machine, installing what the tests need first.
# Usage: scripts/test.sh        (the README's test command; .ci/run calls it)
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# the fleet tests (tests/limits_redis.rs) start their own redis-server per test on a free loopback port
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# the SIEM export tests (tests/events_export.rs) start their own rsyslogd with UDP, TCP and TLS (gtls) inputs
command -v rsyslogd >/dev/null 2>&1 || [ -x /usr/sbin/rsyslogd ] || need_apt+=(rsyslog)
dpkg -s rsyslog-gnutls >/dev/null 2>&1 || need_apt+=(rsyslog-gnutls)
# the PostgreSQL store and fleet tests (tests/store_pg.rs, tests/fleet.rs) make a throwaway cluster with
# Debian's initdb (/usr/lib/postgresql/<version>/bin), run as an unprivileged user they create (runuser)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v runuser >/dev/null 2>&1 || need_apt+=(util-linux)
# the real `portcullis quickstart` test (tests/quickstart.rs) runs it in its own network namespace:
# unshare and nsenter (util-linux) and ip (iproute2) to bring its loopback up
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || need_apt+=(iproute2)
command -v nsenter >/dev/null 2>&1 || need_apt+=(util-linux)
# the dashboard's real-browser test (tests/dashboard.rs) drives headless Chromium through chromedriver
# from Python's selenium (tests/ui/driver.py, run with the system /usr/bin/python3)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
/usr/bin/python3 -c 'import selenium' >/dev/null 2>&1 || need_apt+=(python3-selenium)
# the live scan's peer comparison (tests/scan_api.rs) installs a pinned Schemathesis into a virtual
# environment of its own (scripts/schemathesis.sh)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing: ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --features sim-clock --quiet -- -D warnings
echo "== cargo clippy, the otel feature off"
cargo clippy --no-default-features --lib --quiet -- -D warnings
echo "== OpenID Provider for the OIDC tests (tests/idp: oidc-provider on Node.js)"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
fi
npm ci --prefix tests/idp --no-audit --no-fund --loglevel=error

# The alert rules' structure and metric names are checked by tests/observability.rs; promtool (Debian's
# large `prometheus` package, not installed for this) also checks their PromQL when it is on the PATH.
if command -v promtool >/dev/null 2>&1; then
  echo "== promtool check rules"
  promtool check rules deploy/prometheus/alerts.yml
fi

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --features sim-clock --no-fail-fast --test-threads 4
else
  cargo test --features sim-clock --no-fail-fast
fi
