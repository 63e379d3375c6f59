#!/usr/bin/env bash
# Checks etc/systemd/ringlb.service without running systemd:
#  1. `systemd-analyze verify` parses the unit and the socket activation example ringlb.socket
#     (with the binary path pointing at the build);
#  2. every system call ringlb makes over a short run (strace -f: start, a forwarded connection,
#     an admin command, SIGHUP reload, SIGUSR1, an upgrade by SIGUSR2, service notifications,
#     SIGTERM), on each engine
#     given, is inside the sets of the unit's SystemCallFilter as `systemd-analyze syscall-filter`
#     lists them: a call outside them would kill ringlb under systemd.
# Usage: tests/service/check_unit.sh [BINARY] [ENGINES...]   (defaults: build/ringlb, uring epoll)
# Exits 0 when both hold, 1 when one does not, 77 (SKIP, reason on stdout) when systemd-analyze,
# strace or python3 is missing or ptrace is not allowed here.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

binary=$(realpath "${1:-build/ringlb}")
shift || true
engines=("$@")
((${#engines[@]} > 0)) || engines=(uring epoll)
unit=etc/systemd/ringlb.service

skip() { echo "SKIP: $*"; exit 77; }
for tool in systemd-analyze strace python3; do
    command -v "$tool" >/dev/null || skip "$tool is not installed (apt-get install ${tool/systemd-analyze/systemd})"
done
[[ -x "$binary" ]] || { echo "FAIL: no ringlb binary at $binary"; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "--- systemd-analyze verify $unit"
# The unit as installed, but naming the binary under test (verify checks that it exists). Man
# pages named in Documentation= are not looked up: they may not be installed here.
sed "s#/usr/sbin/ringlb#$binary#g" "$unit" >"$work/ringlb.service"
# With the socket activation example next to it, as an administrator would install both.
cp etc/systemd/ringlb.socket "$work/ringlb.socket"
if ! systemd-analyze verify --man=no "$work/ringlb.service" "$work/ringlb.socket"; then
    echo "FAIL: systemd-analyze verify rejects $unit or etc/systemd/ringlb.socket"
    exit 1
fi

# The allowed system calls: SystemCallFilter's entries, sets expanded recursively.
filter=$(sed -n 's/^SystemCallFilter=//p' "$unit")
[[ -n "$filter" ]] || { echo "FAIL: $unit has no SystemCallFilter="; exit 1; }
declare -A allowed=() expanded=()
expand() {
    local entry=$1 line
    if [[ "$entry" != @* ]]; then
        allowed[$entry]=1
        return
    fi
    [[ -z "${expanded[$entry]:-}" ]] || return 0
    expanded[$entry]=1
    while read -r line; do
        [[ -z "$line" || "$line" == \#* || "$line" == "$entry" ]] && continue
        expand "$line"
    done < <(systemd-analyze syscall-filter --no-pager "$entry")
}
for entry in $filter; do expand "$entry"; done
echo "--- SystemCallFilter=$filter: ${#allowed[@]} system calls"

# A short run of ringlb under strace: a backend, a client (its bytes spliced: pipes and splice(2)
# must be allowed too), the admin port, signals, notifications.
cat >"$work/exercise.py" <<'PY'
import os, signal, socket, subprocess, sys, time
strace, binary, engine, work = sys.argv[1:5]
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
backend = socket.socket(); backend.bind(("127.0.0.1", 0)); backend.listen(8)
listen_port, admin_port = free_port(), free_port()
notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
notify.bind("\0ringlb-check-unit-%d" % os.getpid())
notify.settimeout(10)
config = os.path.join(work, "ringlb.toml")
with open(config, "w") as f:
    f.write('[global]\nthreads = 2\nshutdown_timeout = "2s"\nlog_file = "%s/ringlb.log"\n'
            '[admin]\nlisten = "127.0.0.1:%d"\n'
            '[[rule]]\nid = "check"\nlisten = ["127.0.0.1:%d"]\nzero_copy = "splice"\nservers = ["127.0.0.1:%d"]\n'
            % (work, admin_port, listen_port, backend.getsockname()[1]))
env = dict(os.environ, NOTIFY_SOCKET="@ringlb-check-unit-%d" % os.getpid(), WATCHDOG_USEC="400000")
proc = subprocess.Popen([strace, "-f", "-qq", "-o", os.path.join(work, "strace." + engine),
                         binary, "-c", config, "--engine", engine], env=env)
def step(s): print("step:", s, file=sys.stderr, flush=True)
def expect(what):
    step("waiting for " + what)
    while True:
        if what in notify.recv(4096).decode(): return
expect("READY=1")
# Signals go to ringlb itself, strace's child (strace would take them for itself).
with open("/proc/%d/task/%d/children" % (proc.pid, proc.pid)) as f:
    ringlb = int(f.read().split()[0])
step("connect"); client = socket.create_connection(("127.0.0.1", listen_port), timeout=5)
served, _ = backend.accept()
client.sendall(b"ping\n"); assert served.recv(5) == b"ping\n"
served.sendall(b"pong\n"); assert client.recv(5) == b"pong\n"
step("admin"); admin = socket.create_connection(("127.0.0.1", admin_port), timeout=5)
admin.sendall(b"show stats\n"); time.sleep(0.3); admin.recv(65536); admin.close()
os.kill(ringlb, signal.SIGHUP); expect("RELOADING=1"); expect("READY=1")
# Signals go to ringlb itself, strace's child (strace would take them for itself).
with open("/proc/%d/task/%d/children" % (proc.pid, proc.pid)) as f:
    ringlb = int(f.read().split()[0])
os.kill(ringlb, signal.SIGUSR1); time.sleep(0.5)
client.close(); served.close()
# An upgrade: the new process announces itself as the main one; it is stopped in the end.
step("upgrade"); os.kill(ringlb, signal.SIGUSR2)
while True:
    message = notify.recv(4096).decode()
    if "MAINPID=" in message:
        ringlb = int(message.split("MAINPID=")[1].split("\n")[0]); break
expect("READY=1")
os.kill(ringlb, signal.SIGTERM); expect("STOPPING=1")
sys.exit(proc.wait(timeout=20))
PY

status=0
for engine in "${engines[@]}"; do
    echo "--- strace -f: ringlb --engine $engine"
    if ! timeout 30 python3 "$work/exercise.py" "$(command -v strace)" "$binary" "$engine" "$work" >"$work/run.log" 2>&1; then
        if grep -q "PTRACE\|ptrace\|Operation not permitted" "$work/run.log"; then
            cat "$work/run.log"
            skip "strace cannot trace here (ptrace not permitted)"
        fi
        cat "$work/run.log"
        [[ -f "$work/ringlb.log" ]] && cat "$work/ringlb.log"
        echo "FAIL: the traced run of ringlb --engine $engine did not go as expected"
        exit 1
    fi
    grep -q "engine=$engine" "$work/ringlb.log" || { cat "$work/ringlb.log"; echo "FAIL: not engine=$engine"; exit 1; }
    # "1234  io_uring_enter(3, ...) = 1": the name after the pid.
    mapfile -t called < <(sed -nE 's/^[0-9]+ +([a-z0-9_]+)\(.*/\1/p' "$work/strace.$engine" | sort -u)
    outside=()
    for call in "${called[@]}"; do
        [[ -n "${allowed[$call]:-}" ]] || outside+=("$call")
    done
    echo "${#called[@]} distinct system calls: ${called[*]}"
    if ((${#outside[@]} > 0)); then
        echo "FAIL: outside SystemCallFilter: ${outside[*]}"
        status=1
    fi
    rm -f "$work/ringlb.log"
done
((status == 0)) && echo "OK: $unit verified; every system call ringlb made is allowed by its SystemCallFilter"
exit $status
