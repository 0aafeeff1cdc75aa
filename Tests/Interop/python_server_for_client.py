#!/usr/bin/env python3
"""Interop peer for the library's client tests: a Python `websockets` server.

Usage: python_server_for_client.py [--compression] [--subprotocol NAME]...

Listens on 127.0.0.1 on a free port, prints "PORT <n>" first, then one JSON line per event:
{"event": "connected", ...}, {"event": "closed", ...}.

Every message is echoed, except these text commands:
  cmd:fragments:<n>:<text>      send <text> as a text message in <n> fragments
  cmd:binfragments:<n>:<size>   send <size> bytes (i % 251) as a binary message in <n> fragments
  cmd:big:<size>                send <size> bytes (i % 251) as one binary frame
  cmd:ping:<payload>            ping; answer "pong-ok:<payload>" when the pong arrives
  cmd:close:<code>:<reason>     start the close handshake with that code and reason
  cmd:closeempty                start the close handshake with an empty close frame (1005)
  cmd:drop                      drop the TCP connection without a close frame (1006)

max_size is 16 MiB. permessage-deflate only with --compression. Exits by itself after
--lifetime seconds (default 120) or when its parent goes away.
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


def pattern(size):
    return (bytes(range(251)) * (size // 251 + 1))[:size]


def split(data, n):
    step = max(1, -(-len(data) // n))
    return [data[i:i + step] for i in range(0, len(data), step)] or [data]


async def command(ws, text):
    _, name, rest = (text.split(":", 2) + [""])[:3]
    if name == "fragments":
        count, _, payload = rest.partition(":")
        await ws.send(split(payload, int(count)))
    elif name == "binfragments":
        count, _, size = rest.partition(":")
        await ws.send(split(pattern(int(size)), int(count)))
    elif name == "big":
        await ws.send(pattern(int(rest)))
    elif name == "ping":
        waiter = await ws.ping(rest.encode())
        try:
            await asyncio.wait_for(waiter, 5)
            await ws.send(f"pong-ok:{rest}")
        except TimeoutError:
            await ws.send(f"pong-timeout:{rest}")
    elif name == "close":
        code, _, reason = rest.partition(":")
        await ws.close(int(code), reason)
    elif name == "closeempty":
        await ws.close(None)
    elif name == "drop":
        ws.transport.abort()
    else:
        await ws.send(f"unknown-command:{name}")


async def handler(ws):
    emit(event="connected", subprotocol=ws.subprotocol, path=ws.request.path,
         extensions=ws.response.headers.get("Sec-WebSocket-Extensions"),
         offered=ws.request.headers.get("Sec-WebSocket-Extensions"))
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
    parser.add_argument("--compression", action="store_true")
    parser.add_argument("--lifetime", type=float, default=120)
    args = parser.parse_args()
    async with serve(handler, "127.0.0.1", 0, compression="deflate" if args.compression else None,
                     max_size=16 << 20, subprotocols=args.subprotocol or None,
                     ping_interval=None, close_timeout=3) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"PORT {port}", flush=True)
        await watchdog(args.lifetime)


if __name__ == "__main__":
    asyncio.run(main())
