#!/usr/bin/env python3
"""Opens many connections to an echo service, has each echo one byte, then keeps them all open.

Usage: idle_clients.py IP PORT COUNT [--window N] [--timeout S] [--hold S]

At most --window handshakes are in flight at once (so no listen backlog overflows and no SYN is
retried). A connection counts as established once the byte it sent has come back. When every
connection is established or has failed, prints one JSON line {"ok": ..., "failed": ...,
"errors": {...}, "seconds": ...} and then waits for a line on standard input (or --hold seconds,
or end of input). It then counts the established connections that the far side has closed or
reset in the meantime ("dropped"), prints a second JSON line, and closes every connection with a
reset (SO_LINGER 0) so that no TIME_WAIT sockets are left behind to disturb later measurements.
"""
import argparse
import errno
import json
import select
import selectors
import socket
import struct
import sys
import time


def error_name(code):
    return errno.errorcode.get(code, str(code))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=10.0, help="per connection, seconds")
    parser.add_argument("--deadline", type=float, default=90.0, help="whole opening phase, seconds")
    parser.add_argument("--hold", type=float, default=120.0, help="max seconds to wait for the close command")
    args = parser.parse_args()

    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    address = (args.host, args.port)
    selector = selectors.EpollSelector()
    pending = {}  # socket -> (state, started)
    established = []
    errors = {}
    failed = 0
    opened = 0
    started = time.monotonic()

    def fail(sock, reason):
        nonlocal failed
        failed += 1
        errors[reason] = errors.get(reason, 0) + 1
        if sock in pending:
            del pending[sock]
            try:
                selector.unregister(sock)
            except (KeyError, ValueError):
                pass
        sock.close()

    while (opened < args.count or pending) and time.monotonic() - started < args.deadline:
        while opened < args.count and len(pending) < args.window:
            opened += 1
            try:
                sock = socket.socket(family, socket.SOCK_STREAM)
            except OSError as error:
                failed += 1
                reason = "socket: " + error_name(error.errno)
                errors[reason] = errors.get(reason, 0) + 1
                continue
            sock.setblocking(False)
            code = sock.connect_ex(address)
            if code not in (0, errno.EINPROGRESS):
                fail(sock, "connect: " + error_name(code))
                continue
            pending[sock] = ("connect", time.monotonic())
            selector.register(sock, selectors.EVENT_WRITE)
        for key, mask in selector.select(0.2):
            sock = key.fileobj
            state, _ = pending[sock]
            if state == "connect":
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    fail(sock, "connect: " + error_name(code))
                    continue
                try:
                    sock.send(b"x")
                except OSError as error:
                    fail(sock, "send: " + error_name(error.errno))
                    continue
                pending[sock] = ("echo", pending[sock][1])
                selector.modify(sock, selectors.EVENT_READ)
            else:
                try:
                    data = sock.recv(16)
                except BlockingIOError:
                    continue
                except OSError as error:
                    fail(sock, "recv: " + error_name(error.errno))
                    continue
                if data == b"x":
                    del pending[sock]
                    selector.unregister(sock)
                    established.append(sock)
                elif data == b"":
                    fail(sock, "closed by peer before the echo")
                else:
                    fail(sock, "wrong echo")
        now = time.monotonic()
        for sock, (state, since) in list(pending.items()):
            if now - since > args.timeout:
                fail(sock, f"timeout ({state})")
    for sock in list(pending):
        fail(sock, "deadline")
    if opened < args.count:
        failed += args.count - opened
        errors["not attempted (deadline)"] = args.count - opened

    report = {"ok": len(established), "failed": failed, "errors": errors,
              "seconds": round(time.monotonic() - started, 3)}
    print(json.dumps(report), flush=True)

    select.select([sys.stdin], [], [], args.hold)

    # Which established connections did the far side close or reset while we held them?
    dropped = 0
    poller = select.epoll()
    for sock in established:
        poller.register(sock.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
    dropped = len(poller.poll(0.1, len(established) or 1))
    poller.close()
    linger = struct.pack("ii", 1, 0)
    for sock in established:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        except OSError:
            pass
        sock.close()
    print(json.dumps({"dropped": dropped}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
