#!/usr/bin/env bash
# Builds the libFuzzer targets (release, -sanitize=fuzzer,address) and runs each for
# SECONDS_PER_TARGET seconds (default 30), one after the other, on one core.
#
#   Fuzz/run.sh [SECONDS_PER_TARGET]          all targets
#   FUZZ_TARGETS="FuzzInflate" Fuzz/run.sh 60 some of them
#   FUZZ_CONFIGURATION=debug Fuzz/run.sh 10   a debug build: about 4.5 min from scratch instead of
#                                             about 7, but ~40x fewer runs per second (.ci/run's
#                                             smoke run: the corpus replay is what it is for)
#
# Seeds come from Fuzz/Corpus/<target>/ (committed; regenerate with Fuzz/make_corpus.py); what
# the fuzzer finds on top goes to Fuzz/.build/corpus/<target>/ (not committed). A crash leaves
# its input in Fuzz/artifacts/ and the log in Fuzz/.build/logs/; reproduce it with
#   Fuzz/.build/release/<target> Fuzz/artifacts/<file>      (debug/ for a debug build)
# Ends with `fuzz: N passed, M failed` (a target fails when it crashed or could not run).
set -uo pipefail
cd "$(dirname "$0")"

per_target=${1:-30}
case "$per_target" in ''|*[!0-9]*) echo "usage: $0 [SECONDS_PER_TARGET]" >&2; exit 2 ;; esac
targets=(${FUZZ_TARGETS:-FuzzReceiver FuzzConnection FuzzHandshake FuzzExtensionOffers FuzzInflate})

# The library's dependencies resolve to the same versions as its own build.
if [ ! -f Package.resolved ] && [ -f ../Package.resolved ]; then cp ../Package.resolved .; fi

configuration=${FUZZ_CONFIGURATION:-release}
case "$configuration" in release|debug) ;; *) echo "FUZZ_CONFIGURATION must be release or debug" >&2; exit 2 ;; esac
flags=(-c "$configuration" -Xswiftc -sanitize=fuzzer,address -Xswiftc -enable-testing)
mkdir -p .build
echo "fuzz: building ${targets[*]} ($configuration, -sanitize=fuzzer,address; the first build takes several minutes)"
for target in "${targets[@]}"; do
    if ! swift build "${flags[@]}" --product "$target" >.build/fuzz-build.log 2>&1; then
        grep -E "error:" .build/fuzz-build.log | sort -u | head -20
        echo "fuzz: build of $target failed (log: $PWD/.build/fuzz-build.log)"
        exit 1
    fi
done
bin=$(swift build "${flags[@]}" --show-bin-path)

mkdir -p artifacts .build/logs
passed=0
failed=0
export SWIFT_BACKTRACE=enable=no   # libFuzzer reports crashes itself; the backtracer would stall
for target in "${targets[@]}"; do
    mkdir -p ".build/corpus/$target"
    log=".build/logs/$target.log"
    echo "fuzz: $target for ${per_target}s"
    # Bounded twice: libFuzzer's own -max_total_time, and timeout(1) beyond it for a hang in
    # start-up or shut-down.
    timeout --kill-after=10 $((per_target + 120)) "$bin/$target" \
        -max_total_time="$per_target" -max_len=4096 -timeout=20 -rss_limit_mb=3072 -print_final_stats=1 \
        -artifact_prefix="artifacts/$target-" ".build/corpus/$target" "Corpus/$target" </dev/null >"$log" 2>&1
    status=$?
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1)
    if [ "$status" = 0 ]; then
        passed=$((passed + 1))
        echo "fuzz: $target ok: ${runs:-?} runs, ${cov:-cov: ?}, corpus $(ls ".build/corpus/$target" | wc -l) files"
    else
        failed=$((failed + 1))
        echo "fuzz: $target FAILED (exit $status) after ${runs:-?} runs; log $PWD/$log"
        grep -E "invariant violated|Fatal error|ERROR: AddressSanitizer|ERROR: libFuzzer|SUMMARY|Test unit written" "$log" | head -10
    fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" = 0 ]
