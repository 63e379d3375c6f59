#!/usr/bin/env bash
# The quick start: installs what is missing, builds ringlb and its demo backend, starts two demo
# backends (a on 127.0.0.1:9001, b on 127.0.0.1:9002) and runs ringlb in the foreground on
# etc/ringlb.toml. Extra arguments go to ringlb, e.g. `./scripts/demo.sh --engine epoll`.
# Ctrl-C stops ringlb; the backends are stopped on the way out.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

./scripts/install-deps.sh

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)" --target ringlb ringlb-demo-backend

backend_pids=()
ringlb_pid=
stop_all() {
    local pid
    if [[ -n "$ringlb_pid" ]]; then
        kill -TERM "$ringlb_pid" 2>/dev/null || true
        wait "$ringlb_pid" 2>/dev/null || true
    fi
    for pid in "${backend_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${backend_pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap stop_all EXIT

accepts_connections() {
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# Starts one backend and waits (up to 5 s) until it accepts connections.
start_backend() {
    local name=$1 host=$2 port=$3 pid
    if accepts_connections "$host" "$port"; then
        echo "demo: $host:$port is already in use; stop what listens there and try again" >&2
        exit 1
    fi
    build/ringlb-demo-backend --listen "$host:$port" --name "$name" &
    pid=$!
    backend_pids+=("$pid")
    for _ in $(seq 50); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "demo: backend $name on $host:$port exited" >&2
            exit 1
        fi
        if accepts_connections "$host" "$port"; then
            return 0
        fi
        sleep 0.1
    done
    echo "demo: backend $name on $host:$port does not accept connections" >&2
    exit 1
}

start_backend a 127.0.0.1 9001
start_backend b 127.0.0.1 9002

echo
echo "try: curl http://127.0.0.1:8080/ (answers alternate between backend a and backend b); Ctrl-C stops"
echo

# ringlb runs as a child (not exec) so that the EXIT trap can stop the backends after it. Ctrl-C
# and SIGTERM are passed on to it; it stops cleanly and its exit code becomes the demo's.
build/ringlb -c etc/ringlb.toml "$@" &
ringlb_pid=$!
interrupted=0
trap 'interrupted=1; kill -INT "$ringlb_pid" 2>/dev/null || true' INT
trap 'interrupted=1; kill -TERM "$ringlb_pid" 2>/dev/null || true' TERM HUP
while :; do
    interrupted=0
    wait "$ringlb_pid" && status=0 || status=$?
    ((interrupted)) || break  # a signal cut the wait short: wait for ringlb to finish stopping
done
ringlb_pid=
exit "$status"
