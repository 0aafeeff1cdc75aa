#!/usr/bin/env bash
# Runs the test suite. Sets up what the tests need first, so it works on a fresh machine:
#  - Debian packages for the real peers: nginx (reverse-proxy test), Chromium (browser test),
#    Node 20 (interop; the machine image has it), curl with HTTP/2 (plain request over h2) —
#    installed with apt-get when missing and root;
#  - a Python venv (.venv) with `websockets` and `h2`, the independent peers of the interop tests.
# Extra arguments go to `swift test` (e.g. `scripts/test.sh --filter Handshake`).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v curl >/dev/null 2>&1 || missing+=(curl)
python3 -c "import venv, ensurepip" >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "scripts/test.sh: installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "scripts/test.sh: missing ${missing[*]}; install them (apt-get install ${missing[*]}) or the tests that use them fail" >&2
    fi
fi

if ! .venv/bin/python -c "import websockets, h2" 2>/dev/null; then
    echo "scripts/test.sh: creating .venv with Python websockets and h2"
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check 'websockets>=15,<18' 'h2>=4.1,<5'
fi
export WS_TEST_PYTHON="$PWD/.venv/bin/python"
# Serially: many tests measure timeouts (keepalive, closeTimeout, slow clients), and on a
# 2-core machine parallel tests starve each other's event loops.
exec swift test --no-parallel "$@"
