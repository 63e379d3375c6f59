#!/usr/bin/env bash
# Installs what is missing, builds everything in build/ and runs every test; then builds again
# in build-asan/ with AddressSanitizer + UndefinedBehaviorSanitizer (Debug) and runs every test
# there too. RINGLB_SKIP_SANITIZE=1 skips the second pass. Extra arguments go to both ctest runs,
# e.g. `./scripts/test.sh -R unit`.
# Then the Debian package is built from build/ and its contents checked (tests/package/check_deb.sh).
# Then five more checks, each counted as one test: the fault-injection soak (tests/soak,
# RINGLB_SOAK_SECONDS per engine, default 30), every fuzz target briefly (tests/fuzz,
# RINGLB_FUZZ_SECONDS each, default 20), the Kubernetes manifest (docker/validate-kubernetes.py),
# the systemd unit (tests/service/check_unit.sh; skipped with the reason where systemd-analyze
# or strace is missing) and clang-tidy over src/ (scripts/tidy.sh).
# RINGLB_SKIP_EXTRA=1 skips them.
# Ends with one line "ringlb: N passed, M failed" (", K skipped" added when tests were skipped,
# e.g. integration.uring where io_uring is unavailable) summing both runs; exits non-zero if any
# step failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

./scripts/install-deps.sh --test

jobs=$(nproc)
passed=0
failed=0
skipped=0
failed_steps=()
skipped_tests=()
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# run_suite DIR [cmake options...]: configures, builds and runs ctest in DIR; adds up the counts.
run_suite() {
    local dir=$1
    shift
    echo "==> $dir: configure"
    if ! cmake -S . -B "$dir" "$@"; then
        failed_steps+=("configure $dir/")
        return
    fi
    echo "==> $dir: build"
    if ! cmake --build "$dir" -j"$jobs"; then
        failed_steps+=("build $dir/")
        return
    fi
    echo "==> $dir: test"
    local status=0
    ctest --test-dir "$dir" --output-on-failure "${ctest_args[@]}" 2>&1 | tee "$log" || status=$?

    # "67% tests passed, 1 tests failed out of 3": ctest counts skipped tests as passed.
    local summary total=0 bad=0 skips=0 name
    summary=$(grep -Eo '[0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1 || true)
    if [[ -n "$summary" ]]; then
        bad=$(awk '{print $1}' <<<"$summary")
        total=$(awk '{print $NF}' <<<"$summary")
    fi
    # "	  2 - integration.uring (Skipped)" under "The following tests did not run:"
    while read -r name; do
        [[ -n "$name" ]] || continue
        skipped_tests+=("$name ($dir/)")
        skips=$((skips + 1))
    done < <(sed -nE 's/^[[:space:]]+[0-9]+ - (.+) \(Skipped\)$/\1/p' "$log")

    passed=$((passed + total - bad - skips))
    failed=$((failed + bad))
    skipped=$((skipped + skips))
    if [[ -z "$summary" ]]; then
        failed_steps+=("ctest $dir/ (no test summary)")
    elif ((status != 0)); then
        failed_steps+=("ctest $dir/")
    fi
}

ctest_args=("$@")

run_suite build -DCMAKE_BUILD_TYPE=Release

if [[ "${RINGLB_SKIP_SANITIZE:-0}" == "1" ]]; then
    echo "==> build-asan: skipped (RINGLB_SKIP_SANITIZE=1)"
else
    export ASAN_OPTIONS=detect_leaks=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    run_suite build-asan -DRINGLB_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
fi

# run_check NAME COMMAND...: one more pass/fail line in the summary; exit code 77 = skipped, with
# the command's "SKIP: reason" line as the reason.
run_check() {
    local name=$1 status=0 reason
    shift
    echo "==> $name"
    "$@" 2>&1 | tee "$log" || status=$?
    if ((status == 0)); then
        passed=$((passed + 1))
    elif ((status == 77)); then
        reason=$(sed -n 's/^SKIP: //p' "$log" | head -n 1)
        skipped=$((skipped + 1))
        skipped_tests+=("$name${reason:+ ($reason)}")
    else
        failed=$((failed + 1))
        failed_steps+=("$name")
    fi
}

# The Debian package, built from build/ (Release) and checked with dpkg-deb -c and -I.
run_check package tests/package/check_deb.sh build

if [[ "${RINGLB_SKIP_EXTRA:-0}" == "1" ]]; then
    echo "==> soak, fuzz, kubernetes, systemd unit: skipped (RINGLB_SKIP_EXTRA=1)"
else
    run_check soak env SOAK_SECONDS="${RINGLB_SOAK_SECONDS:-30}" tests/soak/run.sh build
    run_check fuzz tests/fuzz/run.sh "${RINGLB_FUZZ_SECONDS:-20}"
    run_check kubernetes python3 docker/validate-kubernetes.py --ringlb build/ringlb
    run_check systemd-unit tests/service/check_unit.sh build/ringlb
    run_check clang-tidy scripts/tidy.sh build
fi

echo
for name in "${skipped_tests[@]}"; do
    echo "ringlb: skipped: $name"
done
for step in "${failed_steps[@]}"; do
    echo "ringlb: FAILED: $step"
done
result="ringlb: $passed passed, $failed failed"
((skipped == 0)) || result+=", $skipped skipped"
echo "$result"
((${#failed_steps[@]} == 0 && failed == 0))
