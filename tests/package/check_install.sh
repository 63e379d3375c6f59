#!/usr/bin/env bash
# Checks `cmake --install` of a configured and built build directory:
#   1. with DESTDIR and prefix /usr: the binary in /usr/sbin, the configuration and examples in
#      /etc/ringlb (not /usr/etc), logrotate in /etc/logrotate.d, man pages in man8 and man5,
#      and the systemd unit in /usr/lib/systemd/system when the source tree has one;
#   2. installing again over an edited ringlb.toml, example and logrotate file leaves all three
#      byte for byte as they were, and puts back a deleted example;
#   3. with prefix /opt/ringlb: everything under it, the configuration in /opt/ringlb/etc.
# usage: tests/package/check_install.sh BUILD_DIR [SOURCE_DIR]
set -uo pipefail
build=${1:?usage: check_install.sh BUILD_DIR [SOURCE_DIR]}
source_dir=${2:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
tmp=$(mktemp -d /tmp/ringlb-install.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

failed=0
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
expect_file() { [[ -f "$1" ]] || fail "missing after install: ${1#"$tmp"}"; }
expect_absent() { [[ ! -e "$1" ]] || fail "installed where it does not belong: ${1#"$tmp"}"; }

install_to() {  # install_to DESTDIR PREFIX
    if ! DESTDIR=$1 cmake --install "$build" --prefix "$2" >"$tmp/install.log" 2>&1; then
        cat "$tmp/install.log"
        fail "cmake --install --prefix $2 (DESTDIR=$1) failed"
    fi
}

root=$tmp/root
install_to "$root" /usr
expect_file "$root/usr/sbin/ringlb"
[[ -x "$root/usr/sbin/ringlb" ]] || fail "/usr/sbin/ringlb is not executable"
expect_file "$root/etc/ringlb/ringlb.toml"
cmp -s "$source_dir/etc/ringlb.toml" "$root/etc/ringlb/ringlb.toml" || fail "/etc/ringlb/ringlb.toml differs from etc/ringlb.toml"
for example in "$source_dir"/etc/examples/*; do
    expect_file "$root/etc/ringlb/examples/$(basename "$example")"
done
expect_file "$root/etc/logrotate.d/ringlb"
expect_file "$root/usr/share/man/man8/ringlb.8"
expect_file "$root/usr/share/man/man5/ringlb.toml.5"
if [[ -f "$source_dir/etc/systemd/ringlb.service" ]]; then
    expect_file "$root/usr/lib/systemd/system/ringlb.service"
fi
expect_absent "$root/usr/etc"
"$root/usr/sbin/ringlb" -c "$root/etc/ringlb/ringlb.toml" --check >/dev/null ||
    fail "the installed ringlb does not accept the installed ringlb.toml"

# The second install: an administrator's edits stay, a deleted example comes back.
edited='# edited by the administrator'
first_example=$(basename "$(ls "$source_dir"/etc/examples/* | head -n 1)")
last_example=$(basename "$(ls "$source_dir"/etc/examples/* | tail -n 1)")
for file in ringlb/ringlb.toml "ringlb/examples/$first_example" logrotate.d/ringlb; do
    echo "$edited" >>"$root/etc/$file"
    cp "$root/etc/$file" "$tmp/before"
    echo "$file" >>"$tmp/edited"
    cp "$tmp/before" "$tmp/$(echo "$file" | tr / _).before"
done
rm "$root/etc/ringlb/examples/$last_example"
install_to "$root" /usr
while read -r file; do
    cmp -s "$tmp/$(echo "$file" | tr / _).before" "$root/etc/$file" ||
        fail "second install overwrote the edited /etc/$file"
done <"$tmp/edited"
grep -q "Keeping: .*/etc/ringlb/ringlb.toml" "$tmp/install.log" ||
    fail "second install did not say it kept /etc/ringlb/ringlb.toml"
expect_file "$root/etc/ringlb/examples/$last_example"

# Any other prefix keeps everything under it.
other=$tmp/other
install_to "$other" /opt/ringlb
expect_file "$other/opt/ringlb/sbin/ringlb"
expect_file "$other/opt/ringlb/etc/ringlb/ringlb.toml"
expect_file "$other/opt/ringlb/etc/logrotate.d/ringlb"
expect_file "$other/opt/ringlb/share/man/man8/ringlb.8"
expect_absent "$other/etc"

if ((failed == 0)); then
    echo "PASS: cmake --install (prefix /usr and /opt/ringlb, DESTDIR, existing files kept)"
fi
((failed == 0))
