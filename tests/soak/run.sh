#!/usr/bin/env bash
# Runs the fault-injection soak against a built ringlb: once per engine on the copy path, once per
# engine on the splice path.
#
#   tests/soak/run.sh [BUILD_DIR] [extra ringlb_soak arguments...]
#
# BUILD_DIR defaults to ./build. SOAK_SECONDS is the time per run (default 30, so CI spends two
# minutes on the four); SOAK_SEED fixes the seed (default 1). An engine that cannot run here (io_uring
# refused by the kernel or a seccomp profile) is reported as skipped, not failed. Exits non-zero
# if any run failed.
set -u

build_dir=${1:-build}
[ $# -gt 0 ] && shift
soak="$build_dir/tests/ringlb_soak"
binary="$build_dir/ringlb"
seconds=${SOAK_SECONDS:-30}
seed=${SOAK_SEED:-1}

if [ ! -x "$soak" ] || [ ! -x "$binary" ]; then
    echo "run.sh: $soak or $binary missing: build first (cmake --build $build_dir)" >&2
    exit 2
fi

# The soak exits 2 when ringlb cannot start; for io_uring that means the kernel (or a seccomp
# profile) refuses it here, as the integration suite's skip does.
# Each engine twice: on the copy path, then with every stream on the splice path (zero_copy =
# "splice"), which has its own code for resets, half-closes, slow readers and timeouts.
failed=0
for zero_copy in off splice; do
    for engine in uring epoll; do
        echo "=== soak: engine=$engine zero_copy=$zero_copy seconds=$seconds seed=$seed"
        "$soak" --engine "$engine" --binary "$binary" --seconds "$seconds" --seed "$seed" --zero-copy "$zero_copy" "$@"
        status=$?
        if [ $status -eq 2 ] && [ "$engine" = uring ]; then
            echo "=== soak: engine=uring SKIPPED (ringlb could not start with io_uring here)"
        elif [ $status -ne 0 ]; then
            echo "=== soak: engine=$engine zero_copy=$zero_copy FAILED (exit $status)"
            failed=1
        fi
    done
done
exit $failed
