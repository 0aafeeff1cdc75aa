#!/usr/bin/env python3
"""Interop peer: a Python `websockets` client that runs one scenario against the server under test.

Usage: python_client.py <ws-url> <scenario>

Scenarios: text, binary, ping, subprotocol, close:<code>[:<reason>]

On success it prints one JSON line describing what it saw and exits 0. On failure it prints
"FAIL: <why>" to stderr and exits 1 (2 when the `websockets` package is missing).
Permessage-deflate is off (compression=None) unless the scenario ends with "+deflate": then the
client offers it (websockets' default offer) and the report's "extensions" says what was agreed.
"""
import asyncio
import json
import os
import sys
import time

try:
    import websockets
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed
    from websockets.protocol import State
except ImportError as error:  # pragma: no cover
    print(f"FAIL: the python package `websockets` is missing ({error}); run scripts/test.sh", file=sys.stderr)
    sys.exit(2)

TEXT = "héllo wörld — 🌍👋🏽🎉👨‍👩‍👧 你好，世界 こんにちは 안녕하세요 𝄞 Ω≈ç√"
BINARY_SIZES = [0, 1, 125, 126, 65535, 65536, 1 << 20]
TIMEOUT = 10


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


def frame_info(frame):
    return None if frame is None else [int(frame.code), frame.reason]


async def recv(ws):
    return await asyncio.wait_for(ws.recv(), TIMEOUT)


async def scenario_text(ws, result):
    # Short text, then a long one that the server fragments (16 KiB frames) in the middle of
    # multi-byte characters: only the whole message has to be valid UTF-8.
    for text in [TEXT, "", TEXT * 3000]:
        await ws.send(text)
        echo = await recv(ws)
        check(isinstance(echo, str), f"expected a text message back, got {type(echo).__name__}")
        check(echo == text, f"text echo differs: sent {len(text)} chars, got {len(echo)} chars")
    result["texts"] = 3
    await ws.close()


async def scenario_binary(ws, result):
    for size in BINARY_SIZES:
        payload = os.urandom(size)
        await ws.send(payload)
        echo = await recv(ws)
        check(isinstance(echo, bytes), f"expected a binary message back for size {size}, got {type(echo).__name__}")
        check(len(echo) == size, f"binary echo of {size} bytes came back with {len(echo)} bytes")
        check(echo == payload, f"binary echo of {size} bytes differs")
    result["sizes"] = BINARY_SIZES
    await ws.close()


async def scenario_ping(ws, result):
    latencies = []
    for payload in [b"interop-ping", b"", bytes(range(125))]:
        waiter = await ws.ping(payload)
        latencies.append(await asyncio.wait_for(waiter, TIMEOUT))
    # Still usable afterwards.
    await ws.send("after ping")
    check(await recv(ws) == "after ping", "echo after pings differs")
    result["pongs"] = len(latencies)
    await ws.close()


async def scenario_subprotocol(ws, result):
    result["subprotocol"] = ws.subprotocol
    await ws.send("hi")
    check(await recv(ws) == "hi", "echo with a subprotocol differs")
    await ws.close()


async def scenario_close(ws, result, code, reason):
    await ws.send("before close")
    check(await recv(ws) == "before close", "echo before close differs")
    started = time.monotonic()
    await asyncio.wait_for(ws.close(code, reason), TIMEOUT)
    result["close_seconds"] = round(time.monotonic() - started, 3)


async def main():
    if len(sys.argv) != 3:
        raise Failure("usage: python_client.py <ws-url> <scenario>")
    url, scenario = sys.argv[1], sys.argv[2]
    compression = None
    if scenario.endswith("+deflate"):
        scenario, compression = scenario[: -len("+deflate")], "deflate"
    subprotocols = ["chat.v2", "chat"] if scenario == "subprotocol" else None
    result = {"scenario": scenario, "websockets": websockets.__version__}
    ssl_context = None
    if url.startswith("wss://"):
        # wss:// trusts only the CA named by WS_TEST_CAFILE (the tests' own CA).
        import ssl
        ssl_context = ssl.create_default_context(cafile=os.environ["WS_TEST_CAFILE"])
    async with asyncio.timeout(30):
        ws = await connect(url, compression=compression, max_size=16 << 20, subprotocols=subprotocols,
                           ping_interval=None, close_timeout=3, open_timeout=TIMEOUT, ssl=ssl_context)
        result["extensions"] = ws.response.headers.get("Sec-WebSocket-Extensions")
        try:
            if scenario == "text":
                await scenario_text(ws, result)
            elif scenario == "binary":
                await scenario_binary(ws, result)
            elif scenario == "ping":
                await scenario_ping(ws, result)
            elif scenario == "subprotocol":
                await scenario_subprotocol(ws, result)
            elif scenario.startswith("close:"):
                parts = scenario.split(":", 2)
                await scenario_close(ws, result, int(parts[1]), parts[2] if len(parts) > 2 else "")
            else:
                raise Failure(f"unknown scenario {scenario}")
            await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
        finally:
            if ws.protocol.state is not State.CLOSED:
                ws.transport.abort()
        # The close handshake: both close frames went out and came in, and the TCP connection
        # ended (close() returns early only when the server closed it).
        protocol = ws.protocol
        result["close_sent"] = frame_info(protocol.close_sent)
        result["close_rcvd"] = frame_info(protocol.close_rcvd)
        result["close_rcvd_then_sent"] = protocol.close_rcvd_then_sent
        result["close_code"] = ws.close_code
        result["close_reason"] = ws.close_reason
        check(protocol.state is State.CLOSED, f"connection not closed: {protocol.state}")
        check(protocol.close_sent is not None, "no close frame was sent")
        check(protocol.close_rcvd is not None, "no close frame was received from the server")
        check(protocol.close_rcvd_then_sent is False, "the server sent its close frame first")
        check(ws.close_code != 1006, "abnormal closure (1006)")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Failure as failure:
        print(f"FAIL: {failure}", file=sys.stderr, flush=True)
        sys.exit(1)
    except (ConnectionClosed, OSError, TimeoutError, websockets.exceptions.InvalidHandshake) as error:
        print(f"FAIL: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        sys.exit(1)
