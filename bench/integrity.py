#!/usr/bin/env python3
"""Full-duplex integrity check through a TCP forwarder (or directly, with no forwarder).

This process plays both far ends. It listens on --listen (the address the forwarder forwards to,
the "backend"), connects to --connect (the forwarder's listener, or the backend itself for the
direct row) as the "client", and then, at the same time:

  client  -> backend: --mib MiB of pseudo-random bytes drawn from seed --seed,
  backend -> client : --mib MiB of pseudo-random bytes drawn from seed --seed + 1.

Each sender hashes (SHA-256) exactly what it sends; each receiver hashes what it reads until it
has the announced number of bytes, then checks that nothing more is waiting. A direction PASSes
when the receiver's hash and byte count equal the sender's. The end of the data is known by its
length, not by a FIN, so the check does not depend on the forwarder passing on half-closes (nginx
stream, for one, does not by default). Writes come in pseudo-random sizes (1 B .. 256 KiB) taken
at pseudo-random offsets of a 4 MiB seeded pool, so the stream is fully determined by the seed,
costs almost nothing to produce, and any lost, duplicated, reordered or altered byte changes the
hash. Prints one JSON object and exits 0 when both directions pass, 1 otherwise.
"""
import argparse
import hashlib
import json
import random
import socket
import sys
import threading
import time

POOL_BYTES = 4 * 1024 * 1024 + 256 * 1024
MAX_WRITE = 256 * 1024


def parse_address(text):
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def chunks(seed, total):
    rng = random.Random(seed)
    pool = memoryview(rng.randbytes(POOL_BYTES))
    left = total
    while left:
        size = min(left, rng.randint(1, MAX_WRITE))
        offset = rng.randrange(0, POOL_BYTES - size + 1)
        yield pool[offset:offset + size]
        left -= size


def sender(sock, seed, total, out, key):
    digest = hashlib.sha256()
    sent = 0
    try:
        for chunk in chunks(seed, total):
            digest.update(chunk)
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError as error:
        out[key + "_send_error"] = f"{type(error).__name__}: {error}"
    out[key + "_sent"] = sent
    out[key + "_sent_sha256"] = digest.hexdigest()


def receiver(sock, total, out, key):
    digest = hashlib.sha256()
    received = 0
    buffer = bytearray(256 * 1024)
    view = memoryview(buffer)
    try:
        while received < total:
            n = sock.recv_into(buffer)
            if n == 0:
                out[key + "_recv_error"] = "end of stream before all the data"
                break
            digest.update(view[:n])
            received += n
    except OSError as error:
        out[key + "_recv_error"] = f"{type(error).__name__}: {error}"
    out[key + "_received"] = received
    out[key + "_received_sha256"] = digest.hexdigest()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="backend address, IP:port")
    parser.add_argument("--connect", required=True, help="address the client connects to, IP:port")
    parser.add_argument("--mib", type=int, default=256, help="MiB each way")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds without progress before failing")
    args = parser.parse_args()

    total = args.mib * 1024 * 1024
    out = {"mib_each_way": args.mib, "seed": args.seed}
    listen_host, listen_port = parse_address(args.listen)
    family = socket.AF_INET6 if ":" in listen_host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((listen_host, listen_port))
    listener.listen(16)
    listener.settimeout(10.0)

    started = time.monotonic()
    try:
        client = socket.create_connection(parse_address(args.connect), timeout=10.0)
        backend, _ = listener.accept()
    except OSError as error:
        out["error"] = f"setting up the connection: {type(error).__name__}: {error}"
        out["c2b"] = out["b2c"] = "FAIL"
        print(json.dumps(out), flush=True)
        return 1
    finally:
        listener.close()
    for sock in (client, backend):
        sock.settimeout(args.timeout)

    threads = [
        threading.Thread(target=sender, args=(client, args.seed, total, out, "c2b")),
        threading.Thread(target=receiver, args=(backend, total, out, "c2b")),
        threading.Thread(target=sender, args=(backend, args.seed + 1, total, out, "b2c")),
        threading.Thread(target=receiver, args=(client, total, out, "b2c")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    # Nothing may follow the data (a duplicated tail, say).
    time.sleep(0.2)
    for sock, key in ((backend, "c2b"), (client, "b2c")):
        sock.setblocking(False)
        try:
            extra = sock.recv(65536)
            if extra:
                out[key + "_received"] = out.get(key + "_received", 0) + len(extra)
                out[key + "_recv_error"] = f"{len(extra)}+ bytes more than sent"
        except BlockingIOError:
            pass
        except OSError as error:
            out.setdefault(key + "_recv_error", f"after the data: {type(error).__name__}: {error}")
    client.close()
    backend.close()

    for key in ("c2b", "b2c"):
        ok = (out.get(key + "_sent") == total and out.get(key + "_received") == total
              and out.get(key + "_sent_sha256") == out.get(key + "_received_sha256"))
        out[key] = "PASS" if ok else "FAIL"
    out["seconds"] = round(elapsed, 3)
    out["duplex_mib_per_s"] = round(2 * args.mib / elapsed, 1) if elapsed > 0 else None
    print(json.dumps(out), flush=True)
    return 0 if out["c2b"] == "PASS" and out["b2c"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
