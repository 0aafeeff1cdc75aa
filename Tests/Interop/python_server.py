#!/usr/bin/env python3
"""Interop peer: a Python `websockets` echo server for testing the library's client.

Usage: python_server.py [--subprotocol NAME] [--ping-interval SECONDS]

It listens on 127.0.0.1 on a free port and prints "PORT <n>" as its first line, then one JSON
line per event: {"event": "connected", ...}, {"event": "closed", ...}.

Every message is echoed, except text commands:
  cmd:ping:<payload>          ping the client with <payload>; answer "pong-ok:<payload>" when its
                              pong arrives, "pong-timeout:<payload>" if none within 5 s
  cmd:close:<code>:<reason>   start the close handshake with that code and reason

Permessage-deflate is off (compression=None) and max_size is 16 MiB. The process exits by
itself after --lifetime seconds (default 120) or when its parent goes away, in case the test
that started it could not kill it.
"""
import argparse
import asyncio
import json
import os
import sys

try:
    from websockets.asyncio.server import serve
    from websockets.exceptions import ConnectionClosed
except ImportError as error:  # pragma: no cover
    print(f"FAIL: the python package `websockets` is missing ({error}); run scripts/test.sh", file=sys.stderr)
    sys.exit(2)


def emit(**event):
    print(json.dumps(event), flush=True)


def frame_info(frame):
    return None if frame is None else [int(frame.code), frame.reason]


async def command(ws, text):
    _, name, rest = text.split(":", 2)
    if name == "ping":
        waiter = await ws.ping(rest.encode())
        try:
            await asyncio.wait_for(waiter, 5)
            await ws.send(f"pong-ok:{rest}")
        except TimeoutError:
            await ws.send(f"pong-timeout:{rest}")
    elif name == "close":
        code, _, reason = rest.partition(":")
        await ws.close(int(code), reason)
    else:
        await ws.send(f"unknown-command:{name}")


async def handler(ws):
    emit(event="connected", subprotocol=ws.subprotocol, path=ws.request.path)
    try:
        async for message in ws:
            if isinstance(message, str) and message.startswith("cmd:"):
                await command(ws, message)
            else:
                await ws.send(message)
    except ConnectionClosed:
        pass
    await ws.wait_closed()
    protocol = ws.protocol
    emit(event="closed", code=ws.close_code, reason=ws.close_reason,
         close_sent=frame_info(protocol.close_sent), close_rcvd=frame_info(protocol.close_rcvd),
         close_rcvd_then_sent=protocol.close_rcvd_then_sent)


async def watchdog(lifetime):
    parent = os.getppid()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + lifetime
    while loop.time() < deadline and os.getppid() == parent:
        await asyncio.sleep(0.5)
    os._exit(3)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--subprotocol", action="append", default=[])
    parser.add_argument("--ping-interval", type=float, default=None)
    parser.add_argument("--lifetime", type=float, default=120)
    args = parser.parse_args()
    async with serve(handler, "127.0.0.1", 0, compression=None, max_size=16 << 20,
                     subprotocols=args.subprotocol or None,
                     ping_interval=args.ping_interval, ping_timeout=2 if args.ping_interval else None,
                     close_timeout=3) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"PORT {port}", flush=True)
        await watchdog(args.lifetime)


if __name__ == "__main__":
    asyncio.run(main())
