#!/usr/bin/env bash
# Runs the test suite. Sets up what the tests need first, so it works on a fresh machine:
#  - Debian packages for the real peers: nginx (reverse-proxy test), Chromium (browser test),
#    Node 20 (interop; the machine image has it), curl with HTTP/2 (plain request over h2),
#    PostgreSQL 15 (the cluster tests start throwaway servers of their own) —
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
# PostgreSQL 15 for the cluster tests: each starts a throwaway server of its own (initdb, pg_ctl).
[ -x /usr/lib/postgresql/15/bin/initdb ] || missing+=(postgresql)
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
# In parallel, in two passes:
#  1. everything but the suites that measure the process itself (its resident memory) and the
#     suites and tests that load the machine for seconds, in parallel: the timing tests run on
#     virtual time, and the tests over real sockets wait for events rather than for fixed times,
#     so they do not depend on the machine's load. (FaultTests' shutDown under load, 8 clients
#     sending as fast as they can for up to 10 s, is one: run in parallel, its shutDown overran
#     its bound once, and a neighbouring FaultTests handshake waited over 5 s at the same time.)
#  2. those suites alone, one test at a time, so that nothing else runs in the process or takes
#     the cores while they measure (swift-testing's `.serialized` orders the tests of one suite
#     only, not against the other suites).
# With a --filter or --skip of your own, one parallel pass of what it selects. Under a sanitizer
# (scripts/sanitizers.sh sets WS_SANITIZER; the code runs 5-15 times slower) the suite runs
# serially, as before: its parallel run was not measured.
isolated='IdleMemoryTests|DeflateMemoryTests|BackpressureTests|BenchCommandTests|BrowserTests|HostilePeerTests|FaultTests/shutDownUnderLoad'
# swift-testing starts every test at once by default: ~300 tests opening sockets and starting
# peers together on 2 cores stretch each one's waits past their bounds. At most two per core.
# (swift-testing of Swift 6.3.1 honours the variable: 8 parameterised sleeping tests ran 8 at once
# without it, 2 at once with it set to 2; `--experimental-maximum-parallelization-width N` too.)
export SWT_EXPERIMENTAL_MAXIMUM_PARALLELIZATION_WIDTH="${SWT_EXPERIMENTAL_MAXIMUM_PARALLELIZATION_WIDTH:-$(( $(nproc) * 2 ))}"
if [ -n "${WS_SANITIZER:-}" ]; then
    exec swift test --no-parallel "$@"
fi
for arg in "$@"; do
    case "$arg" in
        --filter|--filter=*|--skip|--skip=*) exec swift test "$@" ;;
    esac
done
# Both passes are also written to a log, and what failed is printed again at the end: CI shows the
# tail of the output, and the parallel pass's failure is otherwise hundreds of lines above it.
log="$(mktemp "${TMPDIR:-/tmp}/ws-test.XXXXXX")"
status=0
swift test --skip "$isolated" "$@" 2>&1 | tee "$log" || status=$?
echo "scripts/test.sh: the suites and tests that measure the process or load the machine, serially: $isolated"
swift test --skip-build --no-parallel --filter "$isolated" "$@" 2>&1 | tee -a "$log" || status=$?
if [ "$status" != 0 ]; then
    echo "scripts/test.sh: FAILED (exit $status); the failures and issues recorded (full log: $log):"
    grep -E '✘|error:|recorded an issue|Expectation failed|Fatal error|Caught signal|failed \(' "$log" | head -n 80 || true
fi
exit "$status"
