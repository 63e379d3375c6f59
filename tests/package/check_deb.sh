#!/usr/bin/env bash
# Builds the Debian package with CPack in a configured, built build directory and checks it:
# the file name ringlb_<project version>_amd64.deb; its files (dpkg-deb -c: the binary, the
# configuration and examples, logrotate, both man pages, and the systemd unit when the source
# tree has etc/systemd/ringlb.service); its control data (dpkg-deb -I: Depends on the libraries
# and passwd, every file under /etc a conffile, postinst/prerm/postrm executable); and that the
# binary it carries accepts the configuration it carries. Exit 77 (skipped) without cpack or
# dpkg-deb.
# usage: tests/package/check_deb.sh BUILD_DIR [SOURCE_DIR]
set -uo pipefail
build=$(cd "${1:?usage: check_deb.sh BUILD_DIR [SOURCE_DIR]}" && pwd)
source_dir=${2:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
for tool in cpack dpkg-deb; do
    if ! command -v "$tool" >/dev/null; then
        echo "SKIP: $tool not found"
        exit 77
    fi
done
tmp=$(mktemp -d /tmp/ringlb-deb.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

failed=0
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }

version=$(sed -n 's/^CMAKE_PROJECT_VERSION:STATIC=//p' "$build/CMakeCache.txt")
[[ -n "$version" ]] || { echo "FAIL: no CMAKE_PROJECT_VERSION in $build/CMakeCache.txt"; exit 1; }
deb=$build/ringlb_${version}_amd64.deb
rm -f "$deb"
if ! (cd "$build" && cpack -G DEB) >"$tmp/cpack.log" 2>&1; then
    cat "$tmp/cpack.log"
    echo "FAIL: cpack -G DEB"
    exit 1
fi
[[ -f "$deb" ]] || { ls "$build"/*.deb 2>/dev/null; echo "FAIL: cpack made no $(basename "$deb")"; exit 1; }

dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' >"$tmp/files"
dpkg-deb -I "$deb" >"$tmp/info"
dpkg-deb --ctrl-tarfile "$deb" | tar -x -C "$tmp" ./conffiles 2>/dev/null || fail "no conffiles in the control archive"

expected=(/usr/sbin/ringlb /etc/ringlb/ringlb.toml /etc/logrotate.d/ringlb
    /usr/share/man/man8/ringlb.8 /usr/share/man/man5/ringlb.toml.5)
for example in "$source_dir"/etc/examples/*; do
    expected+=("/etc/ringlb/examples/$(basename "$example")")
done
if [[ -f "$source_dir/etc/systemd/ringlb.service" ]]; then
    expected+=(/usr/lib/systemd/system/ringlb.service)
fi
for file in "${expected[@]}"; do
    grep -qxF "$file" "$tmp/files" || fail "dpkg-deb -c: $file is not in the package"
done
grep -q '^/usr/local' "$tmp/files" && fail "dpkg-deb -c: files under /usr/local"

# Every file under /etc is a conffile, and nothing else is.
grep '^/etc/.*[^/]$' "$tmp/files" | sort >"$tmp/etc-files"
sort "$tmp/conffiles" 2>/dev/null | diff "$tmp/etc-files" - >"$tmp/conffiles.diff" ||
    fail "conffiles differ from the files under /etc (< only in the package, > only in conffiles):
$(cat "$tmp/conffiles.diff")"

depends=$(sed -n 's/^ Depends: //p' "$tmp/info")
# The package names alone, one a line: "libc6 (>= 2.34), passwd" -> libc6, passwd.
depends_names=$(tr ',' '\n' <<<"$depends" | awk '{print $1}')
for dependency in liburing2 libc-ares2 libstdc++6 libc6 passwd; do
    grep -qxF "$dependency" <<<"$depends_names" || fail "dpkg-deb -I: Depends lacks $dependency ($depends)"
done
grep -q "^ Version: $version$" "$tmp/info" || fail "dpkg-deb -I: Version is not $version"
grep -q '^ Architecture: amd64$' "$tmp/info" || fail "dpkg-deb -I: Architecture is not amd64"
for script in postinst prerm postrm; do
    grep -qE "^ +[0-9]+ bytes, +[0-9]+ lines +\* +$script " "$tmp/info" ||
        fail "dpkg-deb -I: no executable $script"
done

dpkg-deb -x "$deb" "$tmp/root"
"$tmp/root/usr/sbin/ringlb" --version | grep -qxF "ringlb $version" || fail "the packaged binary is not version $version"
"$tmp/root/usr/sbin/ringlb" -c "$tmp/root/etc/ringlb/ringlb.toml" --check >/dev/null ||
    fail "the packaged binary does not accept the packaged ringlb.toml"

if ((failed == 0)); then
    echo "PASS: $(basename "$deb"): ${#expected[@]} expected files, conffiles, Depends: $depends"
fi
((failed == 0))
