#!/usr/bin/env bash
# Runs clang-tidy (.clang-tidy at the top) over ringlb's own sources in src/, with the compile
# commands of a configured build directory (default build/). Exits non-zero on any finding.
#
#   scripts/tidy.sh [BUILD_DIR] [clang-tidy options...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build=${1:-build}
[[ $# -gt 0 ]] && shift
if [[ ! -f "$build/compile_commands.json" ]]; then
    cmake -S . -B "$build" >/dev/null
fi
if ! command -v clang-tidy >/dev/null; then
    echo "tidy: clang-tidy not found: apt-get install clang-tidy" >&2
    exit 2
fi
mapfile -t sources < <(find src -name '*.cpp' | sort)
status=0
# One process per file, two at a time: the whole run is a few minutes on two cores.
printf '%s\n' "${sources[@]}" | xargs -P "$(nproc)" -n 1 clang-tidy -p "$build" --quiet "$@" > /tmp/ringlb-tidy.$$ 2>&1 || status=$?
grep -E "(warning|error):" /tmp/ringlb-tidy.$$ | sort -u || true
rm -f /tmp/ringlb-tidy.$$
if ((status != 0)); then
    echo "tidy: findings above (clang-tidy exit $status)" >&2
    exit 1
fi
echo "tidy: ${#sources[@]} files clean"
