#!/usr/bin/env bash
# Builds the libFuzzer targets and runs each one for SECONDS on a copy of its seed corpus.
#
#   tests/fuzz/run.sh SECONDS
#
# Configures build-fuzz/ (or $RINGLB_FUZZ_BUILD_DIR) with clang, -DRINGLB_FUZZ=ON and
# -DRINGLB_TESTS=OFF, builds only the fuzz targets, then fuzzes. Up to $RINGLB_FUZZ_JOBS targets
# (default: the number of CPUs) run at once. Prints one line per target with the executions and
# the coverage libFuzzer reached (cov: edges, ft: features), and exits non-zero if any target
# crashed, broke a property, timed out or ran out of memory; the input that did it is saved in
# tests/fuzz/crashes/<target>-crash-<sha1> (see README.md for what to do with it).
#
# The seed corpora in tests/fuzz/corpus/ are never modified: each run fuzzes a copy in the build
# directory, so new inputs libFuzzer finds are thrown away with it.
set -euo pipefail

if [[ $# -ne 1 || ! $1 =~ ^[0-9]+$ || $1 -eq 0 ]]; then
    echo "usage: $0 SECONDS   (how long each target runs, e.g. 20 in CI, 600 for a long run)" >&2
    exit 2
fi
seconds=$1

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${RINGLB_FUZZ_BUILD_DIR:-$root/build-fuzz}
crashes=$root/tests/fuzz/crashes
corpora=$root/tests/fuzz/corpus
jobs=${RINGLB_FUZZ_JOBS:-$(nproc)}

# Target name and the longest input libFuzzer may try: long enough for the largest meaningful
# input (the commented etc/ringlb.toml, etc/examples/g5-sample.conf, a v2 PROXY header at
# kMaxHeaderBytes = 1024 plus some client data), short enough that time goes into variety.
targets=(
    "config 4096"
    "values 128"
    "admin 512"
    "proxy 1100"
    "import_g5 4096"
    "client_hello 2048"
)

for tool in clang clang++ cmake; do
    command -v "$tool" >/dev/null || { echo "$tool not found: apt-get install clang cmake" >&2; exit 2; }
done

started=$SECONDS
echo "== configuring and building the fuzz targets in $build"
mkdir -p "$build"
CC=clang CXX=clang++ cmake -S "$root" -B "$build" -DRINGLB_FUZZ=ON -DRINGLB_TESTS=OFF >"$build/configure.log" 2>&1 ||
    { cat "$build/configure.log" >&2; exit 1; }
cmake --build "$build" --target fuzz_all -j "$(nproc)" >"$build/build.log" 2>&1 ||
    { tail -n 60 "$build/build.log" >&2; exit 1; }
echo "   built in $((SECONDS - started)) s"

rm -rf "$build/logs"
mkdir -p "$crashes" "$build/logs"

# Fuzzes one target; its output goes to logs/<name>.log, read back by report() below, and its
# exit status to logs/<name>.status (a file, since targets run as background jobs).
fuzz_one() {
    local name=$1 max_len=$2
    local work=$build/work/$name
    rm -rf "$work"
    mkdir -p "$work"
    cp "$corpora/$name"/* "$work/"
    # halt_on_error/print_stacktrace: UBSan reports are crashes with a stack, like ASan's.
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$build/tests/fuzz/fuzz_$name" "$work" \
        -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$crashes/$name-" >"$build/logs/$name.log" 2>&1 &&
        echo 0 >"$build/logs/$name.status" || echo $? >"$build/logs/$name.status"
}

# One summary line per target from libFuzzer's log: executions from the final stats, cov/ft
# from the last status line (a crash ends the log without a DONE line, so not that one).
report() {
    local name=$1 status=$2
    local log=$build/logs/$name.log
    local executions exec_rate status_line cov ft corpus
    executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    exec_rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    status_line=$(grep -E '^#[0-9]+.* cov: ' "$log" | tail -n 1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$status_line")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$status_line")
    corpus=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$status_line")
    printf '%-10s %-7s executions=%-9s exec/s=%-7s cov=%-5s ft=%-6s corpus=%s\n' "$name" "$status" \
        "${executions:-?}" "${exec_rate:-?}" "${cov:-?}" "${ft:-?}" "${corpus:-?}"
}

# Where a failed target's log shows the bug: the property message or sanitizer report, its
# stack, and the file the input was saved to.
show_failure() {
    local log=$build/logs/$1.log
    echo "---- $1: $log"
    grep -E -A 40 '==ringlb-fuzz==|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:' "$log" |
        grep -E -v '^(MS:|base64:|stat::)|Test unit written to' | head -n 60 || true
    grep -E 'Test unit written to' "$log" || true
    echo "----"
}

echo "== fuzzing ${#targets[@]} targets for $seconds s each, $jobs at a time"
running=0
for entry in "${targets[@]}"; do
    read -r name max_len <<<"$entry"
    if ((running >= jobs)); then
        wait -n
        running=$((running - 1))
    fi
    fuzz_one "$name" "$max_len" &
    running=$((running + 1))
done
wait

declare -A status_of
failed=0
for entry in "${targets[@]}"; do
    read -r name _ <<<"$entry"
    if [[ $(cat "$build/logs/$name.status") == 0 ]]; then status_of[$name]=ok; else status_of[$name]=FAILED; failed=1; fi
done

for entry in "${targets[@]}"; do
    read -r name _ <<<"$entry"
    report "$name" "${status_of[$name]}"
done
for entry in "${targets[@]}"; do
    read -r name _ <<<"$entry"
    [[ ${status_of[$name]} == ok ]] || show_failure "$name"
done

echo "== total wall time $((SECONDS - started)) s"
if ((failed)); then
    echo "fuzz: FAILED; inputs saved in $crashes (add them to tests/unit/test_fuzz_regressions.cpp)" >&2
    exit 1
fi
echo "fuzz: all ${#targets[@]} targets ok"
