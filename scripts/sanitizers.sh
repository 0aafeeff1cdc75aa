#!/usr/bin/env bash
# Runs the whole test suite under ThreadSanitizer and/or AddressSanitizer, each in its own
# scratch path (.build-tsan, .build-asan) so the normal build is untouched.
#
#   scripts/sanitizers.sh [thread|address|all]     (default: all; thread first)
#   scripts/sanitizers.sh thread --filter FaultTests   (extra arguments go to swift test)
#
# Goes through scripts/test.sh, so the tests that need real peers (Python websockets, Node,
# nginx, Chromium) get them and run too. Each run's output is kept in
# .build-<tsan|asan>/sanitizer-test.log; a sanitizer report fails the run (TSan: exit 66,
# ASan: abort). Ends with `sanitizers: N passed, M failed`. Heavy: each sanitizer is a full
# rebuild of the package and its dependencies (about 15-30 min on 2 cores), and tests run a few
# times slower under them.
set -uo pipefail
cd "$(dirname "$0")/.."

which=${1:-all}
[ $# -gt 0 ] && shift
case "$which" in
    thread) runs=(thread) ;;
    address) runs=(address) ;;
    all) runs=(thread address) ;;
    *) echo "usage: $0 [thread|address|all] [swift test arguments]" >&2; exit 2 ;;
esac

# Reports go to the log and fail the run; symbolized stacks with both accesses of a race.
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=0 second_deadlock_stack=1 history_size=4}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0 detect_stack_use_after_return=0 halt_on_error=1}"
# The Swift runtime's backtracer is not needed on top of the sanitizers' own reports.
export SWIFT_BACKTRACE="${SWIFT_BACKTRACE:-enable=no}"

passed=0
failed=0
for sanitizer in "${runs[@]}"; do
    scratch=.build-${sanitizer/thread/tsan}
    scratch=${scratch/address/asan}
    mkdir -p "$scratch"
    log="$scratch/sanitizer-test.log"
    echo "sanitizers: $sanitizer: swift test --sanitize=$sanitizer --scratch-path $scratch $* (log: $log)"
    start=$(date +%s)
    scripts/test.sh --sanitize="$sanitizer" --scratch-path "$scratch" "$@" >"$log" 2>&1
    status=$?
    took=$(( $(date +%s) - start ))
    reports=$(grep -c -E "^WARNING: ThreadSanitizer|^==[0-9]+==ERROR: AddressSanitizer" "$log")
    summary=$(grep -E "^(✔|✘|􁁛|􀢄).*Test run with|Test run with [0-9]+ tests" "$log" | tail -1)
    echo "sanitizers: $sanitizer: exit $status after ${took}s, $reports sanitizer report(s); ${summary:-no test summary}"
    if [ "$reports" != 0 ]; then
        grep -E "^WARNING: ThreadSanitizer|^==[0-9]+==ERROR: AddressSanitizer|^SUMMARY:" "$log" | sort | uniq -c | head -20
    fi
    grep -E "✘ Test .* (failed|recorded an issue)" "$log" | head -20
    if [ "$status" = 0 ] && [ "$reports" = 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done
echo "sanitizers: $passed passed, $failed failed"
[ "$failed" = 0 ]
