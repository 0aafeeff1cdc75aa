#!/usr/bin/env bash
# Runs the test suite. Sets up what the tests need first: a Python venv (.venv) with the
# `websockets` package, the independent peer the interop tests talk to. Extra arguments go to
# `swift test` (e.g. `scripts/test.sh --filter Handshake`).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! .venv/bin/python -c "import websockets" 2>/dev/null; then
    echo "scripts/test.sh: creating .venv with Python websockets"
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check 'websockets>=15,<18'
fi
# nginx (the reverse-proxy test) from Debian's packages, when we may install it.
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "scripts/test.sh: installing nginx-light"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null
fi
export WS_TEST_PYTHON="$PWD/.venv/bin/python"
exec swift test "$@"
