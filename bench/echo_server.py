#!/usr/bin/env python3
"""Echo backend for the idle-connection workload: echoes every byte back on every connection.

One thread, non-blocking sockets on epoll, so tens of thousands of mostly idle connections cost
little. Usage: echo_server.py IP PORT. Prints "listening" once bound; SIGTERM stops it.
"""
import errno
import selectors
import socket
import sys


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(4096)
    listener.setblocking(False)
    selector = selectors.EpollSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    pending = {}  # connection -> bytes not yet echoed
    print("listening", flush=True)

    def close(conn):
        pending.pop(conn, None)
        try:
            selector.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()

    def flush(conn):
        data = pending.get(conn, b"")
        while data:
            try:
                n = conn.send(data)
            except BlockingIOError:
                break
            except OSError:
                close(conn)
                return
            data = data[n:]
        if data:
            pending[conn] = data
            selector.modify(conn, selectors.EVENT_READ | selectors.EVENT_WRITE, "conn")
        else:
            pending.pop(conn, None)
            selector.modify(conn, selectors.EVENT_READ, "conn")

    while True:
        for key, mask in selector.select():
            if key.data is None:
                while True:
                    try:
                        conn, _ = listener.accept()
                    except BlockingIOError:
                        break
                    except OSError as error:
                        if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                            print(f"accept: {error}", file=sys.stderr, flush=True)
                        break
                    conn.setblocking(False)
                    selector.register(conn, selectors.EVENT_READ, "conn")
                continue
            conn = key.fileobj
            if mask & selectors.EVENT_READ:
                try:
                    data = conn.recv(65536)
                except BlockingIOError:
                    data = None
                except OSError:
                    close(conn)
                    continue
                if data == b"":
                    close(conn)
                    continue
                if data:
                    pending[conn] = pending.get(conn, b"") + data
            if conn in pending:
                flush(conn)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
