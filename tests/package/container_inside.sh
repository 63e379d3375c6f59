#!/usr/bin/env bash
# The checks container_test.sh runs inside a bare debian:bookworm-slim container, as root, with
# the package, the demo backend and the shipped ringlb.toml in /pkg:
#   install:  `apt-get install ./ringlb_<version>_amd64.deb` pulls in its dependencies; a
#             `ringlb` system user and group without a login shell; the shipped configuration in
#             /etc/ringlb, registered as a conffile; /var/log/ringlb owned by ringlb; man pages;
#             the service enabled when the package has a unit file, and not running;
#   check:    `ringlb -c /etc/ringlb/ringlb.toml --check` accepts the installed configuration;
#   forward:  the installed ringlb, switching to user ringlb, forwards one HTTP request to a demo
#             backend and logs it to /var/log/ringlb/ringlb.log;
#   rotate:   `logrotate -f /etc/logrotate.d/ringlb` rotates that log and ringlb, signalled by
#             postrotate, writes the next connection to the new file;
#   purge:    `apt-get purge` removes the configuration and the log directory, keeps the user.
# usage: container_inside.sh DEB_FILE_NAME FIRST_PORT; exit 77 when apt cannot reach the archive.
set -u
deb=$1
port0=$2
listen_host=127.0.0.1
listen_port=$port0
backend=127.0.0.1:$((port0 + 1))
log=/var/log/ringlb/ringlb.log
export DEBIAN_FRONTEND=noninteractive

passed=0 failed=0
pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
check() {  # check DESCRIPTION COMMAND...
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}
request() {  # one HTTP request through ringlb; prints the response
    timeout 5 bash -c 'exec 3<>"/dev/tcp/$1/$2" && printf "GET / HTTP/1.0\r\n\r\n" >&3 && cat <&3' _ "$listen_host" "$listen_port"
}
wait_for() {  # wait_for PATTERN FILE: up to 5 s for a line matching PATTERN
    local i
    for i in $(seq 50); do
        grep -q -- "$1" "$2" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
user_is_system_without_login() {
    local entry uid
    entry=$(getent passwd ringlb) || return 1
    uid=$(cut -d: -f3 <<<"$entry")
    ((uid < 1000)) && [[ "${entry##*:}" == /usr/sbin/nologin ]]
}
group_exists() { getent group ringlb >/dev/null; }
user_exists() { getent passwd ringlb >/dev/null; }
is_conffile() { dpkg-query -W -f='${Conffiles}\n' ringlb | grep -q " $1 "; }
owned_by_ringlb() { [[ "$(stat -c %U "$1")" == ringlb ]]; }
no_ringlb_process() { ! grep -qx ringlb /proc/[0-9]*/comm 2>/dev/null; }
enabled() { compgen -G '/etc/systemd/system/*.wants/ringlb.service' >/dev/null; }

if ! apt-get update >/tmp/apt-update.log 2>&1; then
    tail -n 3 /tmp/apt-update.log
    echo "SKIP: the container cannot reach the package archive (apt-get update failed)"
    exit 77
fi
if ! apt-get install -y --no-install-recommends "/pkg/$deb" >/tmp/apt-install.log 2>&1; then
    cat /tmp/apt-install.log
    echo "FAIL: apt-get install ./$deb"
    exit 1
fi
pass "apt-get install ./$deb"

check "ringlb is a system user without a login shell" user_is_system_without_login
check "group ringlb exists" group_exists
check "/etc/ringlb/ringlb.toml is the shipped default" cmp -s /pkg/ringlb.toml /etc/ringlb/ringlb.toml
check "/etc/ringlb/ringlb.toml is a conffile" is_conffile /etc/ringlb/ringlb.toml
check "/etc/logrotate.d/ringlb is a conffile" is_conffile /etc/logrotate.d/ringlb
check "/var/log/ringlb belongs to ringlb" owned_by_ringlb /var/log/ringlb
check "man pages installed" test -f /usr/share/man/man8/ringlb.8 -a -f /usr/share/man/man5/ringlb.toml.5
unit=/usr/lib/systemd/system/ringlb.service
if [[ ! -f "$unit" ]]; then
    echo "note: the package has no unit file; enabling is not checked"
elif grep -q '^WantedBy=' "$unit"; then
    check "service enabled" enabled
fi
check "service not started (no ringlb process)" no_ringlb_process
check_output=$(ringlb -c /etc/ringlb/ringlb.toml --check 2>&1)
check "ringlb --check accepts the installed configuration ($check_output)" grep -q '^ok:' <<<"$check_output"

if ! apt-get install -y --no-install-recommends logrotate procps >/tmp/apt-logrotate.log 2>&1; then
    cat /tmp/apt-logrotate.log
    fail "apt-get install logrotate procps"
fi
/pkg/ringlb-demo-backend --listen "$backend" --name packaged >/tmp/backend.log 2>&1 &
cat >/tmp/forward.toml <<TOML
[global]
user = "ringlb"
log_file = "$log"
log_connections = true

[[rule]]
id = "web"
listen = ["$listen_host:$listen_port"]
servers = ["$backend"]
TOML
ringlb -c /tmp/forward.toml &
ringlb_pid=$!
wait_for 'ready:' "$log" || { cat "$log"; fail "ringlb did not log ready:"; }
check "the installed ringlb forwards a request to the backend" grep -q 'backend packaged' <<<"$(request)"
check "ringlb runs as user ringlb" owned_by_ringlb "/proc/$ringlb_pid"
check "the connection is logged in $log" wait_for 'rule=web' "$log"

logrotate -f /etc/logrotate.d/ringlb >/tmp/logrotate.log 2>&1 || { cat /tmp/logrotate.log; fail "logrotate -f"; }
check "logrotate rotated $log" test -f "$log.1"
check "ringlb reopened $log after the rotation" wait_for 'log file reopened' "$log"
request >/dev/null
check "the next connection is logged in the new $log" wait_for 'rule=web' "$log"
kill -TERM "$ringlb_pid"
wait "$ringlb_pid"
status=$?
check "ringlb exits 0 on SIGTERM" test "$status" -eq 0

apt-get purge -y ringlb >/tmp/apt-purge.log 2>&1 || { cat /tmp/apt-purge.log; fail "apt-get purge ringlb"; }
check "purge removes /etc/ringlb and /var/log/ringlb" test ! -e /etc/ringlb/ringlb.toml -a ! -e /var/log/ringlb
check "purge keeps the ringlb user" user_exists

echo "container: $passed passed, $failed failed"
((failed == 0))
