#!/usr/bin/env python3
"""Opens COUNT raw TCP connections to 127.0.0.1:PORT and upgrades each with a minimal handshake
(HOW = "whole": the request in one write; "split": in two writes, the second 50 ms after the first,
so that the server reads it in two parts), sends one masked 32-byte text frame on each and checks
its echo, prints "READY <count>", then holds the connections idle for 60 s (the test kills it
sooner). HOW = "burst": the request in one write, then 1 MiB in 64 binary frames of 16 KiB on
each connection instead of the echo (the server is not expected to answer them).

No WebSocket library: the bytes on the wire are exactly these, so the server's memory per
connection can be compared between the two ways of sending the same request.

Usage: python_raw_idle_clients.py <port> <count> <whole|split|burst>
"""
import base64
import os
import socket
import sys
import time


def read_until(sock, marker):
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("connection closed during the handshake")
        data += chunk
    return data


def read_exact(sock, count):
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise RuntimeError("connection closed before the echo")
        data += chunk
    return data


def main():
    port, count, how = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    sockets, requests = [], []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        requests.append((f"GET /idle HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                         f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        sockets.append(sock)
    # Every connection's first part, a pause, then every second part: each server connection
    # reads its request in two parts.
    cut = 60 if how == "split" else None
    for sock, request in zip(sockets, requests):
        sock.sendall(request[:cut])
    if cut is not None:
        time.sleep(0.05)
        for sock, request in zip(sockets, requests):
            sock.sendall(request[cut:])
    chunk = os.urandom(16384)
    for i, sock in enumerate(sockets):
        head = read_until(sock, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        if how == "burst":
            mask = os.urandom(4)
            masked = bytes(b ^ mask[j % 4] for j, b in enumerate(chunk))
            frame = bytes([0x82, 0x80 | 126]) + len(chunk).to_bytes(2, "big") + mask + masked
            sock.sendall(frame * 64)
            continue
        payload = (b"idle-%06d-" % i).ljust(32, b"x")
        mask = os.urandom(4)
        sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[j % 4] for j, b in enumerate(payload)))
        echo = read_exact(sock, 2 + len(payload))
        assert echo == bytes([0x81, len(payload)]) + payload, echo
    print(f"READY {len(sockets)}", flush=True)
    time.sleep(60)
    for sock in sockets:
        sock.close()


main()
