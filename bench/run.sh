#!/usr/bin/env bash
# ringlb benchmark: direct, ringlb (io_uring and epoll, zero_copy default, "splice" or "off"),
# HAProxy (with and without splice) and nginx stream, side by side on loopback, between the same
# clients and the same backends.
#
#   ./bench/run.sh
#
# Installs what it needs from Debian (haproxy, nginx, libnginx-mod-stream, wrk, iperf3, python3),
# builds ringlb if build/ringlb is missing, raises the open-file limit, pins the forwarder to one
# CPU and everything else to the other, and prints one Markdown table per workload (also written
# to bench/results/latest.md). Knobs (environment), see bench/README.md:
#   BENCH_SECONDS=5  BENCH_RUNS=3  BENCH_RUNS_ALL=1  BENCH_ROWS=direct,ringlb-uring,...
#   BENCH_WORKLOADS=idle,integrity,bulk,capped,keepalive,newconn  BENCH_IDLE_CONNS=9800
#   BENCH_INTEGRITY_MIB=256  BENCH_KA_CONNS=1,50,500  BENCH_NEWCONN_CONNS=50  BENCH_CAP_PERCENT=30
#   BENCH_BUSY_POLL_US=50  BENCH_CAP_CGROUP=auto  BENCH_FWD_CPU=1  BENCH_LOAD_CPU=0  BENCH_PIN=1  BENCH_MAX_SECONDS=750
#   RINGLB_BIN=build/ringlb
#   BENCH_OUT=bench/results/latest.md
set -uo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

bench_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$bench_dir")"
cd "$repo" || exit 1

# The exact command, with the knobs that were set, for the report's header.
quote() { if [[ "$1" =~ ^[A-Za-z0-9_.,:/=+-]+$ ]]; then printf '%s' "$1"; else printf '%q' "$1"; fi; }
command_line=""
for var in $(compgen -e | grep -E '^(BENCH_|RINGLB_BIN$)' | grep -vE '^BENCH_(COMMAND|PIDFILE|LOGDIR)$' | sort); do
    command_line+="$var=$(quote "${!var}") "
done
command_line+="./bench/run.sh"
for arg in "$@"; do command_line+=" $(quote "$arg")"; done
export BENCH_COMMAND="$command_line"

say() { echo "[bench] $*" >&2; }

# ---------------------------------------------------------------------------------------------
# Everything started is cleaned up, even on Ctrl-C: bench.py stops its own processes, and records
# each one's pid (each runs in its own session) in this file so that the trap can end what is
# left if bench.py itself was killed.
state_dir="$(mktemp -d /tmp/ringlb-bench-state.XXXXXX)"
export BENCH_PIDFILE="$state_dir/pids"
: >"$BENCH_PIDFILE"
bench_pid=""
policy_rc_created=0

# shellcheck disable=SC2317  # called from the traps
cleanup() {
    local pid sid
    trap - EXIT INT TERM
    if [[ -n "$bench_pid" ]] && kill -0 "$bench_pid" 2>/dev/null; then
        kill -TERM "$bench_pid" 2>/dev/null
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$bench_pid" 2>/dev/null || break; sleep 0.5; done
    fi
    if [[ -s "$BENCH_PIDFILE" ]]; then
        while read -r pid; do
            [[ -r "/proc/$pid/stat" ]] || continue
            # Only a process that still leads the session we gave it (guards against pid reuse).
            sid="$(awk '{print $6}' "/proc/$pid/stat" 2>/dev/null)"
            [[ "$sid" == "$pid" ]] || continue
            kill -TERM -- "-$pid" 2>/dev/null
            sleep 0.5
            kill -KILL -- "-$pid" 2>/dev/null
        done <"$BENCH_PIDFILE"
    fi
    if ((policy_rc_created)); then rm -f /usr/sbin/policy-rc.d; fi
    # The capped workload's cgroups, should bench.py have been killed inside a cell (rmdir
    # removes only those that no process uses any more).
    rmdir /sys/fs/cgroup/cpu/ringlb-bench-* /sys/fs/cgroup/unified/ringlb-bench-* 2>/dev/null
    rm -rf "$state_dir"
}
trap cleanup EXIT
trap 'say "interrupted"; cleanup; exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# Tools from Debian
as_root=()
if ((EUID != 0)); then
    if command -v sudo >/dev/null 2>&1; then as_root=(sudo env DEBIAN_FRONTEND=noninteractive); fi
fi
is_installed() { [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" == "installed" ]]; }
missing=()
for package in haproxy nginx libnginx-mod-stream wrk iperf3 python3 util-linux procps; do
    is_installed "$package" || missing+=("$package")
done
if ((${#missing[@]})); then
    say "installing from Debian: ${missing[*]}"
    # Keep the packages' own services (a system nginx or haproxy on port 80) from starting.
    if [[ ! -e /usr/sbin/policy-rc.d ]] && ((EUID == 0)); then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && policy_rc_created=1
    fi
    "${as_root[@]}" apt-get update -qq >&2 || say "apt-get update failed"
    "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
        say "apt-get install failed: rows that need a missing tool will print n/a"
    if ((policy_rc_created)); then rm -f /usr/sbin/policy-rc.d; policy_rc_created=0; fi
fi
python=/usr/bin/python3
[[ -x "$python" ]] || python="$(command -v python3 || true)"
if [[ -z "$python" ]]; then say "python3 is missing and could not be installed"; exit 1; fi
for tool in wrk iperf3 haproxy nginx taskset; do
    command -v "$tool" >/dev/null 2>&1 || say "warning: $tool not found: the cells that need it will print n/a"
done

# ---------------------------------------------------------------------------------------------
# ringlb
if [[ -n "${RINGLB_BIN:-}" && ! -x "$RINGLB_BIN" ]]; then
    say "warning: RINGLB_BIN=$RINGLB_BIN is not an executable: the ringlb rows will print n/a"
fi
export RINGLB_BIN="${RINGLB_BIN:-$repo/build/ringlb}"
if [[ "$RINGLB_BIN" == "$repo/build/ringlb" && ! -x "$RINGLB_BIN" ]]; then
    say "building ringlb ($RINGLB_BIN is missing)"
    if [[ -x scripts/install-deps.sh ]]; then scripts/install-deps.sh >&2 || say "install-deps failed"; fi
    { cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >&2 &&
        cmake --build build -j2 --target ringlb >&2; } ||
        say "building ringlb failed: the ringlb rows will print n/a"
fi

# ---------------------------------------------------------------------------------------------
# Limits and CPUs
want_fds=200000
if (($(ulimit -Hn) < want_fds)); then ulimit -Hn "$want_fds" 2>/dev/null || true; fi
ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true
idle_fds=$((2 * ${BENCH_IDLE_CONNS:-9800} + 100))
if (($(ulimit -n) < idle_fds)); then
    say "warning: open-file limit is $(ulimit -n) and cannot be raised here; the idle workload needs" \
        "about $idle_fds in the forwarder: expect failures there"
elif (($(ulimit -n) < want_fds)); then
    say "open-file limit: $(ulimit -n) (could not raise it to $want_fds; enough for the idle workload)"
fi
if (($(nproc) < 2)) || ! command -v taskset >/dev/null 2>&1; then
    say "warning: fewer than 2 CPUs (or no taskset): running without CPU pinning"
    export BENCH_PIN=0
fi

say "$BENCH_COMMAND"
start=$(date +%s)
"$python" "$bench_dir/bench.py" &
bench_pid=$!
wait "$bench_pid"
status=$?
bench_pid=""
if ((status == 0)); then
    say "finished in $(($(date +%s) - start)) s; tables also in ${BENCH_OUT:-bench/results/latest.md}"
else
    say "finished in $(($(date +%s) - start)) s with exit code $status"
fi
exit "$status"
