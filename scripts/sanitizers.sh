#!/usr/bin/env bash
# Runs the whole test suite under ThreadSanitizer and/or AddressSanitizer.
#
#   scripts/sanitizers.sh [thread|address|all] [--swift-only] [swift test arguments]
#
#   thread|address|all  which sanitizers (default: all; thread first)
#   --swift-only        instrument the Swift code only (ours and the Swift dependencies'; the C
#                       of BoringSSL and NIO's shims stays as the normal build made it), in the
#                       normal .build: only the Swift modules are recompiled (about 2.5 min on 2
#                       cores instead of about 5 for a full rebuild), and the next normal build
#                       recompiles them back. What .ci/run uses.
#   default             everything instrumented (`swift test --sanitize=...`), each sanitizer in
#                       its own scratch path (.build-tsan, .build-asan), the normal build untouched.
#
#   scripts/sanitizers.sh thread --filter FaultTests   (extra arguments go to swift test)
#
# WS_SANITIZER=<sanitizer> is set for the tests: the one that measures RSS per connection skips.
# Goes through scripts/test.sh, so the tests that need real peers (Python websockets, Node,
# nginx, Chromium) get them and run too. A sanitizer report fails the run (TSan: exit 66, ASan:
# abort). After each suite run, the canary (Tests/WebSocketTests/SanitizerCanaryTests.swift: a
# deliberate data race, a deliberate heap overflow) runs on the same build and must be reported:
# that shows the build really is instrumented and a report really fails the run. Logs:
# <scratch>/sanitizer-<thread|address>-test.log and -canary.log. Ends with
# `sanitizers: N passed, M failed`.
set -uo pipefail
cd "$(dirname "$0")/.."

which=all
case "${1:-}" in
    thread|address|all) which=$1; shift ;;
    ""|-*) ;;
    *) echo "usage: $0 [thread|address|all] [--swift-only] [swift test arguments]" >&2; exit 2 ;;
esac
swift_only=0
if [ "${1:-}" = --swift-only ]; then swift_only=1; shift; fi
case "$which" in
    thread) runs=(thread) ;;
    address) runs=(address) ;;
    all) runs=(thread address) ;;
esac

# Reports go to the log and fail the run; symbolized stacks with both accesses of a race.
# scripts/tsan-suppressions.txt: one known false positive of TSan with Swift continuations.
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=0 second_deadlock_stack=1 history_size=4 suppressions=$PWD/scripts/tsan-suppressions.txt}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0 detect_stack_use_after_return=0 halt_on_error=1}"
# The Swift runtime's backtracer is not needed on top of the sanitizers' own reports.
export SWIFT_BACKTRACE="${SWIFT_BACKTRACE:-enable=no}"

report_pattern="^WARNING: ThreadSanitizer|^==[0-9]+==ERROR: AddressSanitizer"
passed=0
failed=0
for sanitizer in "${runs[@]}"; do
    if [ "$swift_only" = 1 ]; then
        scratch=.build
        flags=(-Xswiftc "-sanitize=$sanitizer")
    else
        scratch=.build-${sanitizer/thread/tsan}
        scratch=${scratch/address/asan}
        flags=(--sanitize="$sanitizer" --scratch-path "$scratch")
    fi
    mkdir -p "$scratch"
    log="$scratch/sanitizer-$sanitizer-test.log"
    echo "sanitizers: $sanitizer: swift test ${flags[*]} $* (log: $log)"
    start=$(date +%s)
    WS_SANITIZER="$sanitizer" WS_SANITIZER_CANARY="" scripts/test.sh "${flags[@]}" "$@" >"$log" 2>&1
    status=$?
    took=$(( $(date +%s) - start ))
    reports=$(grep -c -E "$report_pattern" "$log")
    summary=$(grep -E "Test run with [0-9]+ tests" "$log" | tail -1)
    echo "sanitizers: $sanitizer: exit $status after ${took}s, $reports sanitizer report(s); ${summary:-no test summary}"
    if [ "$reports" != 0 ]; then
        grep -E "$report_pattern|^SUMMARY:" "$log" | sort | uniq -c | head -20
        # The first report in full, so that a CI log alone shows both stacks.
        awk -v p="$report_pattern" '$0 ~ p {on=1} on {print; n++} /^SUMMARY:/ && on {exit} n > 120 {exit}' "$log"
    fi
    grep -E "✘ Test .* (failed|recorded an issue)" "$log" | head -20
    ok=0
    [ "$status" = 0 ] && [ "$reports" = 0 ] && ok=1

    # The canary: the same build, one deliberate error the sanitizer must report.
    canary_log="$scratch/sanitizer-$sanitizer-canary.log"
    WS_SANITIZER="$sanitizer" WS_SANITIZER_CANARY="$sanitizer" scripts/test.sh "${flags[@]}" --filter SanitizerCanaryTests >"$canary_log" 2>&1
    canary_status=$?
    if [ "$canary_status" != 0 ] && grep -q -E "$report_pattern" "$canary_log"; then
        echo "sanitizers: $sanitizer: canary reported as it must be ($(grep -m1 -E "$report_pattern" "$canary_log" | sed -E 's/^==[0-9]+==//'))"
    else
        echo "sanitizers: $sanitizer: the canary was NOT reported (exit $canary_status): the build is not instrumented or reports do not fail the run (log: $canary_log)"
        ok=0
    fi
    if [ "$ok" = 1 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done
echo "sanitizers: $passed passed, $failed failed"
[ "$failed" = 0 ]
