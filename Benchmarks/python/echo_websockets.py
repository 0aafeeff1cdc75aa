#!/usr/bin/env python3
"""Python `websockets` echo server: a non-Swift reference for Benchmarks/run.sh --python.

Usage: echo_websockets.py PORT

Echoes text as text and binary as binary, limits of 16 MiB, no compression, no keepalive pings
(the load generator does not answer them); prints "echo-python listening ..." once it listens.
"""
import asyncio
import sys

from websockets.asyncio.server import serve


async def echo(ws):
    async for message in ws:
        await ws.send(message)


async def main():
    port = int(sys.argv[1])
    async with serve(echo, "127.0.0.1", port, max_size=16 << 20, compression=None, ping_interval=None):
        print(f"echo-python listening on 127.0.0.1:{port} (websockets)", flush=True)
        await asyncio.get_running_loop().create_future()


asyncio.run(main())
