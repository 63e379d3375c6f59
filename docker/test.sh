#!/usr/bin/env bash
# Container test for ringlb: builds the image, checks what is baked into it, then runs it under
# the runtime's default seccomp profile (io_uring refused: ringlb must fall back to epoll and say
# why) and under docker/seccomp-io_uring.json (ringlb must run on io_uring). For each profile:
#
#   forwarding: demo backends a and b and ringlb (read-only root filesystem, no capabilities)
#     share one network namespace; from the host, through published loopback ports, requests
#     reach both backends, GET /healthz on the metrics port answers 200 "ok", and the image's
#     HEALTHCHECK command
#     (`ringlb ctl --admin 127.0.0.1:9900 show stats`) passes inside the container;
#   drain: two echo backends instead; a client streams random bytes through ringlb for 3 s and
#     `docker stop -t 30` is sent about 1 s in: the client must get every byte back, in order,
#     a new connection during the drain must not reach a backend, and ringlb must exit 0 once
#     the session is done, well before the 30 s deadline.
#
#   usage: docker/test.sh                         (uses `docker`)
#          DOCKER=/path/to/docker docker/test.sh  (any docker-compatible CLI, e.g. podman)
#   env:   RINGLB_IMAGE    image tag to build and test        (default ringlb:test)
#          RINGLB_CONTEXT  build context, the source tree     (default this repository)
#          RINGLB_PORT     first host port on 127.0.0.1 to use; the next 5 are used too
#                          (default 18080)
#          RINGLB_NO_BUILD=1  test an already built $RINGLB_IMAGE
# Needs python3 on the host (the streaming client). Prints PASS/FAIL per check; exits 1 if any
# check failed.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DOCKER=${DOCKER:-docker}
image=${RINGLB_IMAGE:-ringlb:test}
context=${RINGLB_CONTEXT:-$(dirname "$here")}
port0=${RINGLB_PORT:-18080}
profile=$here/seccomp-io_uring.json
prefix=ringlb-test-$$
tmp=$(mktemp -d /tmp/ringlb-test.XXXXXX)
admin=127.0.0.1:9900
# ringlb runs as Kubernetes runs it with docker/kubernetes.yaml's securityContext: read-only root
# filesystem, no capabilities, no privilege escalation.
hardened=(--read-only --cap-drop ALL --security-opt no-new-privileges)
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
trap 'cleanup; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

finish() {
    echo "docker/test.sh: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit $?
}

# One HTTP GET to 127.0.0.1:PORT/PATH from the host; prints the response (curl: body only).
fetch() {
    local port=$1 path=${2:-/}
    if command -v curl >/dev/null 2>&1; then
        curl -s --max-time 5 "http://127.0.0.1:$port$path"
    else
        timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/$1 && printf "GET %s HTTP/1.0\r\n\r\n" "$2" >&3 && cat <&3' _ "$port" "$path"
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

# Echo server for the drain test, run with the image's perl (perl-base is in every Debian
# image): one process per connection, echoes until the client's FIN, then closes.
echo_server='
use IO::Socket::INET; $SIG{CHLD} = "IGNORE"; $SIG{TERM} = sub { exit 0 };
my $l = IO::Socket::INET->new(LocalAddr => $ARGV[0], Listen => 128, ReuseAddr => 1) or die "listen: $!";
print STDERR "echo listening on $ARGV[0]\n";
while (1) {
    my $c = $l->accept or next;
    if (fork() == 0) {
        close $l; my $buf;
        while ((my $n = sysread($c, $buf, 65536)) > 0) {
            my $off = 0;
            while ($off < $n) { my $w = syswrite($c, $buf, $n - $off, $off); exit 1 unless defined $w; $off += $w }
        }
        shutdown($c, 1); exit 0;
    }
    close $c;
}'

# Streaming client: sends random bytes to 127.0.0.1:PORT for SECONDS, then FIN, and reads the
# echo until EOF. Touches STARTED once the first echoed bytes are back; prints what it sent and
# got; exit 0 only if both are identical (length and SHA-256).
stream_client() {  # PORT SECONDS STARTED
    python3 - "$@" <<'EOF'
import hashlib, os, socket, sys, threading, time
port, seconds, started = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
sock = socket.create_connection(("127.0.0.1", port), timeout=10)
sock.settimeout(60)
sent, got = hashlib.sha256(), hashlib.sha256()
counts = {"sent": 0, "got": 0, "error": None}
def reader():
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            if counts["got"] == 0:
                open(started, "w").close()
            got.update(data)
            counts["got"] += len(data)
    except OSError as e:
        counts["error"] = "receive: %s" % e
thread = threading.Thread(target=reader)
thread.start()
end = time.monotonic() + seconds
try:
    while time.monotonic() < end:
        chunk = os.urandom(16384)
        sock.sendall(chunk)
        sent.update(chunk)
        counts["sent"] += len(chunk)
        time.sleep(0.01)
    sock.shutdown(socket.SHUT_WR)
except OSError as e:
    counts["error"] = "send: %s" % e
thread.join(60)
same = counts["error"] is None and counts["sent"] == counts["got"] and sent.digest() == got.digest()
print("sent %d bytes in %.0f s, got %d back, %s%s" % (counts["sent"], seconds, counts["got"],
      "byte-exact" if same else "NOT identical",
      "" if counts["error"] is None else " (" + counts["error"] + ")"))
sys.exit(0 if same else 1)
EOF
}

# Connects to 127.0.0.1:PORT, sends a line and prints the reply ("" when refused or closed).
probe() {
    python3 - "$1" <<'EOF'
import socket, sys
try:
    sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3)
    sock.settimeout(3)
    sock.sendall(b"probe\n")
    sock.shutdown(socket.SHUT_WR)
    print(sock.recv(100).decode(errors="replace").strip())
except OSError as e:
    print("(%s)" % e.__class__.__name__)
EOF
}

# --- build -----------------------------------------------------------------------------------
if [ "${RINGLB_NO_BUILD:-0}" != 1 ]; then
    echo "== building $image from $context (unit tests run inside the build)"
    start=$(date +%s)
    if "$DOCKER" build -f "$here/Dockerfile" -t "$image" "$context" > "$tmp/build.log" 2>&1; then
        pass "image builds and unit tests pass in the build ($(( $(date +%s) - start )) s)"
        grep -E '^\[doctest\] (test cases|Status)' "$tmp/build.log" | sed 's/^/    /'
    else
        tail -n 40 "$tmp/build.log" | sed 's/^/    /'
        cp "$tmp/build.log" /tmp/"$prefix"-build.log
        fail "image build (full log: /tmp/$prefix-build.log)"
        finish
    fi
fi
echo "    image size: $("$DOCKER" image inspect --format '{{.Size}}' "$image" 2>/dev/null | awk '{printf "%.1f MB", $1 / 1e6}')"

# --- static checks on the image ---------------------------------------------------------------
user=$("$DOCKER" run --rm --no-healthcheck --entrypoint id "$image" -un 2>/dev/null)
check "runs as non-root user ringlb (got '$user')" test "$user" = ringlb
out=$("$DOCKER" run --rm --no-healthcheck "$image" --check 2>&1)
check "baked-in /etc/ringlb/ringlb.toml is valid: $out" grep -q '^ok:' <<<"$out"
out=$("$DOCKER" run --rm --no-healthcheck -v "$here/ringlb-compose.toml:/tmp/compose.toml:ro" \
      --entrypoint ringlb "$image" -c /tmp/compose.toml --check 2>&1)
check "docker/ringlb-compose.toml is valid: $out" grep -q '^ok:' <<<"$out"
hc=$("$DOCKER" image inspect --format '{{json .Config.Healthcheck}}' "$image" 2>/dev/null)
check "HEALTHCHECK is 'ringlb ctl --admin $admin show stats': $hc" \
    grep -q '"Test":\["CMD","ringlb","ctl","--admin","127.0.0.1:9900","show","stats"\]' <<<"$hc"
meta=$("$DOCKER" image inspect --format '{{.Config.StopSignal}} {{json .Config.ExposedPorts}}' "$image" 2>/dev/null)
check "STOPSIGNAL SIGTERM, EXPOSE 8080 9901: $meta" \
    grep -q '^SIGTERM .*8080/tcp.*9901/tcp' <<<"$meta"
libs=$("$DOCKER" run --rm --no-healthcheck --entrypoint ldd "$image" /usr/local/bin/ringlb 2>&1)
check "ringlb finds all its libraries in the runtime stage" bash -c '! grep -q "not found" <<<"$1"' _ "$libs"
out=$("$DOCKER" run --rm --no-healthcheck --entrypoint dpkg-query "$image" -W libc-ares2 2>&1)
check "runtime stage has libc-ares2 (for DNS-discovered backends): $out" grep -q '^libc-ares2' <<<"$out"

# --- forwarding: demo backends a and b + ringlb sharing backend a's network namespace ----------
#   forwarding LABEL PORT METRICS_PORT EXPECTED_ENGINE [ringlb run options...]
forwarding() {
    local label=$1 port=$2 mport=$3 engine=$4; shift 4
    local a=$prefix-$label-a b=$prefix-$label-b lb=$prefix-$label-lb
    echo "== $label, forwarding: ringlb ${hardened[*]} ${*:-(runtime default seccomp profile)}"
    containers+=("$a" "$b" "$lb")
    if ! "$DOCKER" run -d --name "$a" -p "127.0.0.1:$port:8080" -p "127.0.0.1:$mport:9901" --no-healthcheck \
            --entrypoint ringlb-demo-backend "$image" --listen 127.0.0.1:9001 --name a >/dev/null ||
       ! "$DOCKER" run -d --name "$b" --network "container:$a" --no-healthcheck \
            --entrypoint ringlb-demo-backend "$image" --listen 127.0.0.1:9002 --name b >/dev/null; then
        fail "$label: start the backend containers"; cleanup; return
    fi
    # (stderr kept aside: podman without systemd complains that it cannot schedule health checks)
    if ! "$DOCKER" run -d --name "$lb" --network "container:$a" "${hardened[@]}" "$@" "$image" \
            >/dev/null 2>"$tmp/run.err"; then
        cat "$tmp/run.err"
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

    # The HEALTHCHECK command, run the way the runtime runs it: inside the container.
    local stats code=0
    stats=$("$DOCKER" exec "$lb" ringlb ctl --admin "$admin" show stats 2>&1) || code=$?
    check "$label: HEALTHCHECK command 'ringlb ctl --admin $admin show stats' exits 0 in the container (got $code)" \
        test "$code" = 0
    sed -n '1,3p' <<<"$stats" | sed 's/^/    /'
    if "$DOCKER" healthcheck run --help >/dev/null 2>&1; then
        code=0
        out=$("$DOCKER" healthcheck run "$lb" 2>&1) || code=$?
        check "$label: '$(basename "$DOCKER") healthcheck run' reports healthy (exit $code${out:+, $out})" test "$code" = 0
    else
        echo "    ('healthcheck run' not offered by $DOCKER: the image's HEALTHCHECK was run by hand above)"
    fi
    reply=$(fetch "$mport" /healthz)
    check "$label: GET /healthz on the metrics port from the host answers 'ok' (got '$reply')" test "$reply" = ok
    reply=$(fetch "$mport" /metrics | grep -m1 '^ringlb_info')
    check "$label: GET /metrics from the host: $reply" grep -q "engine=\"$engine\"" <<<"$reply"

    local start ms
    start=$(date +%s%N)
    "$DOCKER" stop -t 10 "$lb" >/dev/null 2>&1
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    code=$("$DOCKER" inspect --format '{{.State.ExitCode}}' "$lb" 2>/dev/null)
    check "$label: idle ringlb, docker stop -> exit code 0 (got $code) in $ms ms" test "$code" = 0 -a "$ms" -lt 9500
    cleanup
}

# --- drain: SIGTERM during a transfer --------------------------------------------------------
#   drain LABEL PORT [ringlb run options...]
drain() {
    local label=$1 port=$2; shift 2
    local a=$prefix-$label-echo-a b=$prefix-$label-echo-b lb=$prefix-$label-drain-lb
    echo "== $label, drain: SIGTERM during a 3 s transfer"
    containers+=("$a" "$b" "$lb")
    if ! "$DOCKER" run -d --name "$a" -p "127.0.0.1:$port:8080" --no-healthcheck \
            --entrypoint perl "$image" -e "$echo_server" 127.0.0.1:9001 >/dev/null ||
       ! "$DOCKER" run -d --name "$b" --network "container:$a" --no-healthcheck \
            --entrypoint perl "$image" -e "$echo_server" 127.0.0.1:9002 >/dev/null; then
        fail "$label: start the echo backends"; cleanup; return
    fi
    if ! "$DOCKER" run -d --name "$lb" --network "container:$a" "${hardened[@]}" "$@" "$image" \
            >/dev/null 2>"$tmp/run.err"; then
        cat "$tmp/run.err"
        fail "$label: start the ringlb container"; cleanup; return
    fi
    if ! wait_log "$lb" 'ready:' || ! wait_log "$a" 'echo listening' || ! wait_log "$b" 'echo listening'; then
        fail "$label: ringlb and the echo backends start"
        "$DOCKER" logs "$lb" 2>&1 | sed 's/^/    /'
        cleanup; return
    fi

    rm -f "$tmp/started"
    stream_client "$port" 3 "$tmp/started" > "$tmp/client.out" 2>&1 &
    local client=$! i
    for i in $(seq 1 50); do [ -e "$tmp/started" ] && break; sleep 0.1; done
    check "$label: the streaming client's bytes come back through ringlb before the stop" test -e "$tmp/started"
    sleep 0.7

    local start ms code
    start=$(date +%s%N)
    "$DOCKER" stop -t 30 "$lb" >/dev/null 2>&1 &
    local stopper=$!
    sleep 0.8
    local reply
    reply=$(probe "$port")
    check "$label: a new connection during the drain does not reach a backend (got '$reply')" \
        test "$reply" != probe
    wait "$stopper"
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    code=0
    wait "$client" || code=$?
    check "$label: the transfer started before SIGTERM completes: $(cat "$tmp/client.out")" test "$code" = 0
    code=$("$DOCKER" inspect --format '{{.State.ExitCode}}' "$lb" 2>/dev/null)
    check "$label: docker stop -t 30 -> exit code 0 (got $code)" test "$code" = 0
    # The session had about 2 s left when the signal came: ringlb must wait for it, not close it.
    check "$label: ringlb waited for the session, then exited well before the 30 s deadline (took $ms ms)" \
        test "$ms" -ge 1000 -a "$ms" -lt 25000
    "$DOCKER" logs "$lb" 2>&1 | grep -E 'SIGTERM|waiting up to|closing|totals|stopped' | sed 's/^/    /'
    check "$label: log says it waited for the live session" \
        bash -c '"$1" logs "$2" 2>&1 | grep -q "waiting up to .* for 1 session"' _ "$DOCKER" "$lb"
    cleanup
}

forwarding default "$port0" "$((port0 + 1))" epoll
drain default "$((port0 + 2))"

# --engine uring under the default profile must fail with exit code 1 and the reason.
code=0
out=$("$DOCKER" run --rm --no-healthcheck "$image" --engine uring 2>&1) || code=$?
if [ "$code" = 1 ] && grep -q 'io_uring' <<<"$out"; then
    pass "default profile, --engine uring: exits 1 and names the reason"
else
    fail "default profile, --engine uring: exit code 1 and the reason expected (got $code)"
fi
echo "    $(grep -m1 io_uring <<<"$out")"

forwarding io_uring "$((port0 + 3))" "$((port0 + 4))" uring --security-opt "seccomp=$profile"
drain io_uring "$((port0 + 5))" --security-opt "seccomp=$profile"

finish
