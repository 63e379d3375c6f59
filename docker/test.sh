#!/usr/bin/env bash
# Container test for ringlb: builds the image, then runs it twice, once under the runtime's
# default seccomp profile (io_uring refused: ringlb must fall back to epoll and say why) and once
# under docker/seccomp-io_uring.json (ringlb must run on io_uring). Each time two demo backends
# (a, b) and ringlb share one network namespace, and the host checks through a published
# loopback port that connections are forwarded to both backends; then SIGTERM must stop ringlb
# with exit code 0 well within `docker stop -t 10`.
#
#   usage: docker/test.sh                         (uses `docker`)
#          DOCKER=/path/to/docker docker/test.sh  (any docker-compatible CLI, e.g. podman)
#   env:   RINGLB_IMAGE    image tag to build and test        (default ringlb:test)
#          RINGLB_CONTEXT  build context, the source tree     (default this repository)
#          RINGLB_PORT     first host port on 127.0.0.1 to use; +1 is used too (default 18080)
#          RINGLB_NO_BUILD=1  test an already built $RINGLB_IMAGE
# Prints PASS/FAIL per check; exits 1 if any check failed.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DOCKER=${DOCKER:-docker}
image=${RINGLB_IMAGE:-ringlb:test}
context=${RINGLB_CONTEXT:-$(dirname "$here")}
port0=${RINGLB_PORT:-18080}
profile=$here/seccomp-io_uring.json
prefix=ringlb-test-$$
# podman builds OCI images by default, which drop HEALTHCHECK; ask for the docker format.
export BUILDAH_FORMAT=docker

passed=0 failed=0
pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
check() {  # check DESCRIPTION COMMAND...
    local what=$1; shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}

containers=()
cleanup() {  # newest first: the backend owning the shared network namespace goes last
    local i
    for ((i = ${#containers[@]} - 1; i >= 0; i--)); do
        "$DOCKER" rm -f "${containers[i]}" >/dev/null 2>&1
    done
    containers=()
}
trap 'cleanup; rm -f /tmp/"$prefix"-run.err' EXIT
trap 'exit 130' INT TERM

finish() {
    echo "docker/test.sh: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit $?
}

# One HTTP GET to 127.0.0.1:PORT from the host; prints the response.
fetch() {
    local port=$1
    if command -v curl >/dev/null 2>&1; then
        curl -s --max-time 5 "http://127.0.0.1:$port/"
    else
        timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/$1 && printf "GET / HTTP/1.0\r\n\r\n" >&3 && cat <&3' _ "$port"
    fi
}

# Waits up to 20 s for a line matching PATTERN in a container's log.
wait_log() {
    local name=$1 pattern=$2 i
    for i in $(seq 1 100); do
        "$DOCKER" logs "$name" 2>&1 | grep -q -- "$pattern" && return 0
        [ "$("$DOCKER" inspect --format '{{.State.Running}}' "$name" 2>/dev/null)" = true ] || break
        sleep 0.2
    done
    "$DOCKER" logs "$name" 2>&1 | grep -q -- "$pattern"
}

# --- build -----------------------------------------------------------------------------------
if [ "${RINGLB_NO_BUILD:-0}" != 1 ]; then
    echo "== building $image from $context (unit tests run inside the build)"
    start=$(date +%s)
    if "$DOCKER" build -f "$here/Dockerfile" -t "$image" "$context" > /tmp/"$prefix"-build.log 2>&1; then
        pass "image builds and unit tests pass in the build ($(( $(date +%s) - start )) s)"
        grep -E '^\[doctest\] (test cases|Status)' /tmp/"$prefix"-build.log | sed 's/^/    /'
        rm -f /tmp/"$prefix"-build.log
    else
        tail -n 40 /tmp/"$prefix"-build.log | sed 's/^/    /'
        fail "image build (full log: /tmp/$prefix-build.log)"
        finish
    fi
fi

# --- static checks on the image ---------------------------------------------------------------
user=$("$DOCKER" run --rm --no-healthcheck --entrypoint id "$image" -un 2>/dev/null)
check "runs as non-root user ringlb (got '$user')" test "$user" = ringlb
out=$("$DOCKER" run --rm --no-healthcheck "$image" --check 2>&1)
check "baked-in /etc/ringlb/ringlb.toml is valid: $out" grep -q '^ok:' <<<"$out"

# --- one scenario: backends a and b + ringlb sharing backend a's network namespace -------------
#   scenario LABEL PORT EXPECTED_ENGINE [ringlb run options...]
scenario() {
    local label=$1 port=$2 engine=$3; shift 3
    local a=$prefix-$label-a b=$prefix-$label-b lb=$prefix-$label-lb
    echo "== $label: ringlb ${*:-(runtime default seccomp profile)}"
    containers+=("$a" "$b" "$lb")
    if ! "$DOCKER" run -d --name "$a" -p "127.0.0.1:$port:8080" --no-healthcheck \
            --entrypoint ringlb-demo-backend "$image" --listen 127.0.0.1:9001 --name a >/dev/null ||
       ! "$DOCKER" run -d --name "$b" --network "container:$a" --no-healthcheck \
            --entrypoint ringlb-demo-backend "$image" --listen 127.0.0.1:9002 --name b >/dev/null; then
        fail "$label: start the backend containers"; cleanup; return
    fi
    # (stderr kept aside: podman without systemd complains that it cannot schedule health checks)
    if ! "$DOCKER" run -d --name "$lb" --network "container:$a" "$@" "$image" >/dev/null 2>/tmp/"$prefix"-run.err; then
        cat /tmp/"$prefix"-run.err
        fail "$label: start the ringlb container"; cleanup; return
    fi
    if wait_log "$lb" 'ready:'; then
        pass "$label: ringlb logs 'ready:'"
    else
        fail "$label: ringlb logs 'ready:'"
        "$DOCKER" logs "$lb" 2>&1 | sed 's/^/    /'
        cleanup; return
    fi
    local first
    first=$("$DOCKER" logs "$lb" 2>&1 | grep -m1 'engine=')
    echo "    $first"
    if [ "$engine" = epoll ]; then
        check "$label: log says engine=epoll with the reason" \
            grep -q 'engine=epoll (io_uring unavailable: io_uring_setup: [^;]*; ' <<<"$first"
    else
        check "$label: log says engine=uring" grep -q 'engine=uring' <<<"$first"
    fi

    local i got_a=0 got_b=0 reply
    for i in 1 2 3 4; do
        reply=$(fetch "$port")
        grep -q 'backend a' <<<"$reply" && got_a=$((got_a + 1))
        grep -q 'backend b' <<<"$reply" && got_b=$((got_b + 1))
    done
    check "$label: 4 requests via 127.0.0.1:$port reach both backends (a: $got_a, b: $got_b)" \
        test "$got_a" -ge 1 -a "$got_b" -ge 1 -a $((got_a + got_b)) -eq 4

    check "$label: health check command succeeds (connect to 127.0.0.1:8080 in the container)" \
        "$DOCKER" exec "$lb" bash -c 'exec 3<>/dev/tcp/127.0.0.1/8080'

    local start ms code
    start=$(date +%s%N)
    "$DOCKER" stop -t 10 "$lb" >/dev/null 2>&1
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    code=$("$DOCKER" inspect --format '{{.State.ExitCode}}' "$lb" 2>/dev/null)
    check "$label: SIGTERM (docker stop -t 10) -> exit code 0 (got $code)" test "$code" = 0
    check "$label: stopped before the 10 s deadline (took $ms ms)" test "$ms" -lt 9500
    "$DOCKER" logs "$lb" 2>&1 | tail -n 2 | sed 's/^/    /'
    cleanup
}

scenario default "$port0" epoll

# --engine uring under the default profile must fail with exit code 1 and the reason.
code=0
out=$("$DOCKER" run --rm --no-healthcheck "$image" --engine uring 2>&1) || code=$?
if [ "$code" = 1 ] && grep -q 'io_uring' <<<"$out"; then
    pass "default profile, --engine uring: exits 1 and names the reason"
else
    fail "default profile, --engine uring: exit code 1 and the reason expected (got $code)"
fi
echo "    $(grep -m1 io_uring <<<"$out")"

scenario io_uring "$((port0 + 1))" uring --security-opt "seccomp=$profile"

finish
