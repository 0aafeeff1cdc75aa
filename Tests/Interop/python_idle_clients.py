#!/usr/bin/env python3
"""Opens COUNT connections to URL, sends one 4 KiB text message on each and waits for its echo,
prints "READY <count>", then keeps them open and idle until stdin closes (or 120 s pass).

Usage: python_idle_clients.py <url> <count> <none|takeover|no-takeover>
"""
import asyncio
import sys

from websockets.asyncio.client import connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory


async def main():
    url, count, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if mode == "none":
        options = {"compression": None}
    elif mode == "takeover":
        options = {"extensions": [ClientPerMessageDeflateFactory()], "compression": None}
    else:
        options = {"extensions": [ClientPerMessageDeflateFactory(server_no_context_takeover=True, client_no_context_takeover=True)],
                   "compression": None}
    message = ("idle connection memory " * 200)[:4096]
    connections = []
    for _ in range(count):
        ws = await connect(url, ping_interval=None, open_timeout=10, **options)
        await ws.send(message)
        echo = await asyncio.wait_for(ws.recv(), 10)
        assert echo == message
        connections.append(ws)
    extensions = connections[0].response.headers.get("Sec-WebSocket-Extensions") if connections else None
    print(f"READY {len(connections)} {extensions}", flush=True)
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.read), 120)
    except asyncio.TimeoutError:
        pass
    for ws in connections:
        ws.transport.abort()


asyncio.run(main())
