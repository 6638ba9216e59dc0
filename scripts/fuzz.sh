#!/usr/bin/env bash
# Fuzzes the parsers of what comes from the wire with libFuzzer (clang's, through swiftc
# -sanitize=fuzzer): the task codec, the control codec, MIME parsing, link extraction and the
# Content Server's MessagePack answers.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default: 30 s each, every target
#
# Seeds come from Fuzz/seeds/TARGET and Fuzz/regressions/TARGET; the growing corpus lives under
# .build/fuzz-corpus. A crash, a timeout (an input taking over 10 s: super-linear parsing) or an
# input needing over 2 GB is copied to Fuzz/regressions/TARGET, which the unit tests replay
# (FuzzRegressionTests); commit it with the fix. Exits non-zero when anything was found.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-30}
[ $# -gt 0 ] && shift
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(task-codec control-codec mime links message-pack)

scratch=.build/fuzz
echo "== building fanfic-fuzz with libFuzzer (scratch path $scratch)"
swift build --scratch-path "$scratch" --product fanfic-fuzz --sanitize fuzzer -Xswiftc -DFUZZING \
    -Xswiftc -parse-as-library 2>&1 | grep -E "error|warning: unre|Compiling FuzzTargets|Build complete" || true
binary="$(swift build --scratch-path "$scratch" --product fanfic-fuzz --sanitize fuzzer --show-bin-path)/fanfic-fuzz"
[ -x "$binary" ] || { echo "fuzz.sh: $binary was not built" >&2; exit 1; }

found=0
for target in "${targets[@]}"; do
    corpus=".build/fuzz-corpus/$target"
    artifacts=".build/fuzz-artifacts/$target"
    mkdir -p "$corpus" "$artifacts" "Fuzz/regressions/$target"
    log=".build/fuzz-$target.log"
    echo "== $target: $seconds s"
    status=0
    # The Swift runtime's backtracer would take the crash signal before libFuzzer could save the input.
    SWIFT_BACKTRACE=enable=no FANFIC_FUZZ_TARGET="$target" "$binary" "$corpus" "Fuzz/seeds/$target" "Fuzz/regressions/$target" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1 || status=$?
    grep -E "^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)" "$log" | tr -s " " | tr "\n" " " || true
    echo
    for artifact in "$artifacts"/*; do
        [ -e "$artifact" ] || continue
        found=1
        cp "$artifact" "Fuzz/regressions/$target/"
        echo "fuzz.sh: $target found $(basename "$artifact"); kept in Fuzz/regressions/$target" >&2
        grep -E "ERROR|Fatal error|SUMMARY" "$log" | head -n 5 >&2 || true
        rm -f "$artifact"
    done
    if [ "$status" -ne 0 ] && [ "$found" -eq 0 ]; then
        echo "fuzz.sh: $target exited $status without an artifact; see $log" >&2
        tail -n 20 "$log" >&2
        found=1
    fi
done
exit "$found"
