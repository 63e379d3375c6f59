#!/usr/bin/env bash
# Checks the man pages in man/.
#   keys:  every key of README.md's configuration tables (the rows `| \`key\` | ...` of tables
#          headed `| key | type | default | meaning |` under "## Configuration reference") has
#          an entry `.B key` in ringlb.toml.5, and both pages name the project's version.
#   lint:  groff prints no warning for either page (exit 77, skipped, without groff).
# usage: tests/package/check_man.sh keys|lint [SOURCE_DIR]
set -euo pipefail
what=${1:?usage: check_man.sh keys|lint [SOURCE_DIR]}
source_dir=${2:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
readme=$source_dir/README.md
pages=("$source_dir/man/ringlb.8" "$source_dir/man/ringlb.toml.5")

readme_keys() {
    awk '
        /^## / { in_reference = ($0 == "## Configuration reference") }
        !in_reference { next }
        /^\| key \| type \| default \| meaning \|/ { in_table = 1; next }
        in_table && !/^\|/ { in_table = 0 }
        in_table && /^\| `[^`]+` \|/ { key = $0; sub(/^\| `/, "", key); sub(/`.*/, "", key); print key }
    ' "$readme" | sort -u
}

check_keys() {
    local page=${pages[1]} key missing=0 count=0
    while read -r key; do
        count=$((count + 1))
        if ! grep -qxF ".B $key" "$page"; then
            echo "FAIL: README.md configuration key \`$key\` has no entry (.B $key) in man/ringlb.toml.5"
            missing=$((missing + 1))
        fi
    done < <(readme_keys)
    # A README whose tables this script no longer recognises must not pass as "nothing missing".
    if ((count < 40)); then
        echo "FAIL: only $count keys found in README.md's configuration tables (expected 40 or more)"
        return 1
    fi
    echo "man keys: $count README keys, $missing missing from ringlb.toml.5"
    ((missing == 0)) && check_version
}

# Both pages' headers name the version of project() in CMakeLists.txt.
check_version() {
    local version page status=0
    version=$(sed -nE 's/^project\(ringlb VERSION ([0-9.]+) .*/\1/p' "$source_dir/CMakeLists.txt")
    [[ -n "$version" ]] || { echo "FAIL: no project version in CMakeLists.txt"; return 1; }
    for page in "${pages[@]}"; do
        if ! grep -qE "^\.TH .* \"ringlb $version\"" "$page"; then
            echo "FAIL: the .TH line of ${page##*/} does not name ringlb $version"
            status=1
        fi
    done
    return $status
}

check_lint() {
    if ! command -v groff >/dev/null; then
        echo "SKIP: groff not found (apt-get install groff-base)"
        return 77
    fi
    local page output status=0
    for page in "${pages[@]}"; do
        output=$(groff -man -z -wall -Tutf8 "$page" 2>&1) || status=1
        if [[ -n "$output" ]]; then
            printf 'FAIL: groff warns about %s:\n%s\n' "$page" "$output"
            status=1
        fi
        if command -v man >/dev/null; then
            output=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null) || status=1
            if [[ -n "$output" ]]; then
                printf 'FAIL: man --warnings warns about %s:\n%s\n' "$page" "$output"
                status=1
            fi
        fi
    done
    ((status == 0)) && echo "man lint: no warnings in ${pages[*]##*/}"
    return $status
}

case "$what" in
keys) check_keys ;;
lint) check_lint ;;
*) echo "usage: check_man.sh keys|lint [SOURCE_DIR]" >&2; exit 2 ;;
esac
