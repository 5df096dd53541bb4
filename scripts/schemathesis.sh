#!/usr/bin/env bash
# Runs Schemathesis (a real peer of `portcullis scan api`) against an API, for the comparison in
# tests/scan_api.rs and the README. Usage: scripts/schemathesis.sh OPENAPI_FILE BASE_URL
#
# - Schemathesis is pinned and installed into a virtual environment of its own
#   (${SCHEMATHESIS_VENV:-$HOME/.cache/portcullis/schemathesis-venv}), never into the system Python.
# - Bounded and reproducible: --max-examples and a fixed --seed; only the given base URL is tested.
# - A bearer token for the API may be given in SCHEMATHESIS_TOKEN (the environment, not the command line).
# - Exit 77 (the "skipped" convention) when the virtual environment cannot be made; otherwise
#   Schemathesis's own exit code (1 when it found failures).
set -uo pipefail

VERSION="4.32.5"
SEED="${SCHEMATHESIS_SEED:-20261130}"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-20}"
VENV="${SCHEMATHESIS_VENV:-$HOME/.cache/portcullis/schemathesis-venv}"

if [ $# -ne 2 ]; then
  echo "usage: $0 OPENAPI_FILE BASE_URL" >&2
  exit 64
fi
doc="$(realpath "$1")"
base="$2"

if [ ! -x "$VENV/bin/schemathesis" ] || ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$VERSION"; then
  mkdir -p "$(dirname "$VENV")"
  if ! python3 -m venv "$VENV" >&2; then
    echo "schemathesis.sh: cannot make a virtual environment (install python3-venv)" >&2
    exit 77
  fi
  if ! "$VENV/bin/pip" install --quiet "schemathesis==$VERSION" >&2; then
    echo "schemathesis.sh: cannot install schemathesis==$VERSION" >&2
    exit 77
  fi
fi

args=(run "$doc" --url "$base" --checks all --max-examples "$MAX_EXAMPLES" --seed "$SEED"
      --request-timeout 5 --workers 1 --no-color)
if [ -n "${SCHEMATHESIS_TOKEN:-}" ]; then
  args+=(-H "Authorization: Bearer $SCHEMATHESIS_TOKEN")
fi
echo "schemathesis $VERSION: seed $SEED, max examples $MAX_EXAMPLES, base $base"
# Run in a fresh directory: Schemathesis keeps a crash cache (.schemathesis/) in its working directory,
# which would leave files in the repository and replay earlier failures (a run would not be reproducible).
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && "$VENV/bin/schemathesis" "${args[@]}")
