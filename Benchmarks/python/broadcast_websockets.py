#!/usr/bin/env python3
"""Python `websockets` broadcast server: the W7 reference for Benchmarks/run.sh.

Usage: broadcast_websockets.py PORT

Every connection on /broadcast is kept in a set (added when its handler starts, removed when it
ends); every message one of them sends goes to all of them, the sender included, with
`websockets.broadcast()` (which writes to each connection without waiting for it to drain, and
skips the ones that are closing). Other paths are closed with 1008. Limits of 16 MiB, no
compression, no keepalive pings; prints "broadcast-python listening ..." once it listens.
"""
import asyncio
import sys

from websockets.asyncio.server import broadcast, serve
from websockets.exceptions import ConnectionClosed

connections = set()


async def handler(ws):
    if ws.request.path != "/broadcast":
        await ws.close(1008, "only /broadcast")
        return
    connections.add(ws)
    try:
        async for message in ws:
            broadcast(connections, message)
    except ConnectionClosed:
        pass  # the load generator ends a run without closing handshakes
    finally:
        connections.discard(ws)


async def main():
    port = int(sys.argv[1])
    async with serve(handler, "127.0.0.1", port, max_size=16 << 20, compression=None, ping_interval=None,
                     max_queue=None, backlog=1024):
        print(f"broadcast-python listening on 127.0.0.1:{port} (websockets)", flush=True)
        await asyncio.get_running_loop().create_future()


asyncio.run(main())
