#!/usr/bin/env python3
"""Churn client for scripts/soak.sh: for DURATION seconds, WORKERS concurrent loops each open a
connection to URL, send a few messages (text or binary, some compressed), and leave in one of
several ways while messages are still in flight: a clean close after the echoes, a close
without waiting for them, a TCP abort (reset), or dropping the socket mid-frame. Checks every
echo it waits for. Prints one JSON line of counts at the end. Bounded: every connection has
timeouts and the run stops at DURATION."""
import asyncio
import json
import os
import random
import socket
import struct
import sys
import time

from websockets.asyncio.client import connect

URL = sys.argv[1]
DURATION = float(sys.argv[2])
WORKERS = int(sys.argv[3]) if len(sys.argv) > 3 else 40
HOST, PORT = URL.split("//")[1].rstrip("/").split(":")
PORT = int(PORT)

counts = {"opened": 0, "clean": 0, "no_wait": 0, "aborted": 0, "mid_frame": 0,
          "messages_sent": 0, "echoes_checked": 0, "bad_echoes": 0, "errors": 0}
errors = []


async def websocket_session(rng):
    mode = rng.choice(["clean", "clean", "no_wait", "aborted"])
    compression = "deflate" if rng.random() < 0.3 else None
    async with asyncio.timeout(10):
        ws = await connect(URL, compression=compression, open_timeout=5, close_timeout=2, max_size=1 << 20)
        counts["opened"] += 1
        try:
            sent = []
            for _ in range(rng.randint(1, 6)):
                size = rng.choice([0, 10, 200, 3000, 16000])
                if rng.random() < 0.5:
                    message = "x%d-" % rng.randint(0, 10**6) + "é" * (size // 2)
                else:
                    message = os.urandom(size)
                await ws.send(message)
                sent.append(message)
                counts["messages_sent"] += 1
            if mode == "clean":
                for message in sent:
                    echo = await ws.recv()
                    counts["echoes_checked"] += 1
                    if echo != message:
                        counts["bad_echoes"] += 1
                await ws.close()
            elif mode == "no_wait":
                await ws.close()  # echoes still on their way back
            else:
                ws.transport.abort()  # a reset with messages in flight
        finally:
            if mode != "aborted":
                await ws.close()
        counts[mode] += 1


async def raw_mid_frame(rng):
    """A raw socket: handshake, then half a frame, then gone (sometimes with a reset)."""
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_connection(HOST, PORT)
        writer.write(("GET / HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n" % (HOST, PORT)).encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError("no 101: %r" % head[:40])
        counts["opened"] += 1
        payload = os.urandom(rng.randint(10, 5000))
        header = bytes([0x82, 0xFE]) + struct.pack(">H", len(payload)) + os.urandom(4)
        frame = header + payload
        writer.write(frame[: rng.randint(1, len(frame) - 1)])
        await writer.drain()
        if rng.random() < 0.5:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
        counts["mid_frame"] += 1


async def worker(index, deadline):
    rng = random.Random(index)
    while time.monotonic() < deadline:
        try:
            if rng.random() < 0.15:
                await raw_mid_frame(rng)
            else:
                await websocket_session(rng)
        except Exception as error:  # counted; a few are expected when we abort ourselves
            counts["errors"] += 1
            if len(errors) < 5:
                errors.append("%s: %s" % (type(error).__name__, error))


async def main():
    deadline = time.monotonic() + DURATION
    await asyncio.gather(*(worker(i, deadline) for i in range(WORKERS)))
    counts["error_samples"] = errors
    print(json.dumps(counts), flush=True)


asyncio.run(main())
