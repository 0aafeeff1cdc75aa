#!/usr/bin/env python3
"""Browser test of `ws serve`'s demo page, in headless Chromium driven over the DevTools
protocol (with Python `websockets`, so nothing else is needed).

Usage: browser_test.py <path to ws> <screenshot dir>

Three pages join the chat room (built on the server's topics); a message from one shows in
the two others, and a message from another reaches the first; a 1 MiB binary message echoes
byte for byte; a close with code 4000 is clean on both ends; the browser's permessage-deflate is
negotiated; screenshots are taken and must not be blank. Prints one line per check and ends with
"N passed, M failed"; exits 1 when a check failed, 2 when the setup failed.
"""
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib

import websockets

DEADLINE = 60  # seconds for the whole test


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def png_is_blank(data):
    """True when a PNG has a single colour (decodes 8-bit RGB/RGBA without filters' effects)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = len(raw) // height
    # Distinct byte values across rows (ignoring each row's filter byte): a blank page yields
    # very few (one colour, identical rows); a rendered page many.
    rows = {raw[r * stride + 1:(r + 1) * stride] for r in range(0, height, max(1, height // 50))}
    values = set(raw[1:stride])
    return len(rows) <= 1 and len(values) <= 4


def solid_png(width=40, height=30):
    """A one-colour PNG, to show that png_is_blank can say yes."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    rows = b"".join(b"\x00" + b"\xf6\xf7\xf9" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


class SetupError(Exception):
    """The server or the browser did not come up."""


def start_server(ws_binary, args):
    """Starts `ws serve <args> --port 0` and returns (process, port) once it listens."""
    server = subprocess.Popen([ws_binary, "serve", "--port", "0", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = server.stdout.readline()
    match = re.search(r"wss?://127\.0\.0\.1:(\d+)/", line)
    if not match:
        server.kill()
        raise SetupError(f"ws serve did not start: {line!r} {server.stderr.read()}")
    return server, int(match.group(1))


async def collect_log(server, lines):
    """Appends the server's stderr lines to `lines` until it ends."""
    loop = asyncio.get_running_loop()
    while True:
        text = await loop.run_in_executor(None, server.stderr.readline)
        if not text:
            return
        lines.append(text)


def start_chromium(chromium, profile, extra_args=()):
    """Starts headless Chromium, kept off every host but 127.0.0.1; returns (process, DevTools URL)."""
    debug_port = free_port()
    browser = subprocess.Popen([
        chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--proxy-server=http://127.0.0.1:9", "--no-first-run", *extra_args,
        f"--remote-debugging-port={debug_port}", "--remote-debugging-address=127.0.0.1",
        "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(200):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{debug_port}/json/version", timeout=1) as response:
                return browser, json.load(response)["webSocketDebuggerUrl"]
        except OSError:
            time.sleep(0.1)
    os.killpg(browser.pid, signal.SIGKILL)
    raise SetupError("Chromium's DevTools endpoint did not come up")


def stop(browser, server, profile):
    """Ends the browser and the server this test started (by their PIDs) and removes the profile."""
    if browser:
        try:
            os.killpg(browser.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        browser.wait(timeout=10)
    if server:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    shutil.rmtree(profile, ignore_errors=True)


def summary(label, results):
    """Prints "<label>: N passed, M failed" and returns the exit status (1 on any failure)."""
    passed = sum(results)
    failed = len(results) - passed
    print(f"{label}: {passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 and passed > 0 else 1


class CDP:
    def __init__(self, ws):
        self.ws, self.next_id, self.pending = ws, 0, {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self):
        async for raw in self.ws:
            message = json.loads(raw)
            future = self.pending.pop(message.get("id"), None)
            if future and not future.done():
                future.set_result(message)

    async def call(self, method, params=None, session=None, timeout=20):
        self.next_id += 1
        request = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            request["sessionId"] = session
        future = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = future
        await self.ws.send(json.dumps(request))
        reply = await asyncio.wait_for(future, timeout)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    async def open_page(self, url):
        target = await self.call("Target.createTarget", {"url": url})
        session = (await self.call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}))["sessionId"]
        return session

    async def evaluate(self, session, expression, timeout=20):
        result = await self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True}, session, timeout)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page error in {expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, session, expression, what, timeout=15):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if await self.evaluate(session, expression):
                    return True
            except RuntimeError:
                pass  # the page may still be loading
            await asyncio.sleep(0.1)
        try:
            state = await self.evaluate(session, "JSON.stringify({url: location.href, title: document.title, state: (document.getElementById('statetext')||{}).textContent, chat: window.wsDemo && wsDemo.chat})")
        except Exception as error:
            state = f"(page state unavailable: {error})"
        raise TimeoutError(f"timed out waiting for {what}; page: {state}")


async def run(ws_binary, shots):
    results = []

    def check(name, ok, detail=""):
        results.append(ok)
        print(f"{'PASS' if ok else 'FAIL'} {name}" + (f" ({detail})" if detail else ""), flush=True)

    check("the blank-screenshot check recognises a blank image", png_is_blank(solid_png()))
    chromium = find_chromium()
    if not chromium:
        print("FAIL setup: Chromium is not installed (apt-get install chromium)", flush=True)
        return 2
    profile = tempfile.mkdtemp(prefix="ws-chromium-")
    server = browser = None
    server_log = []
    try:
        server, port = start_server(ws_binary, ["--deflate", "--max-frame-size", "4194304", "--max-message-size", "4194304"])
        log_task = asyncio.create_task(collect_log(server, server_log))
        browser, endpoint = start_chromium(chromium, profile, ["--window-size=1000,700"])

        async with websockets.connect(endpoint, max_size=64 << 20, compression=None) as ws:
            cdp = CDP(ws)
            base = f"http://127.0.0.1:{port}/"
            alice = await cdp.open_page(base + "?name=alice")
            bob = await cdp.open_page(base + "?name=bob")
            carol = await cdp.open_page(base + "?name=carol")
            three = "window.wsDemo && wsDemo.chat.members === 3"
            for name, session in (("alice", alice), ("bob", bob), ("carol", carol)):
                await cdp.wait_for(session, three, f"{name} to see three members")
            check("three pages joined the chat room", True)

            await cdp.evaluate(alice, "wsDemo.send('hello from alice ✓'), true")
            got = "wsDemo.chat.messages.some(m => m.from === 'alice' && m.text === 'hello from alice ✓')"
            await cdp.wait_for(bob, got, "bob to receive alice's message")
            await cdp.wait_for(carol, got, "carol to receive alice's message")
            await cdp.wait_for(alice, got, "alice to see her own message")
            check("a message from one page shows in the two others (and its own)", True)
            await cdp.evaluate(carol, "wsDemo.send('carol here'), true")
            await cdp.wait_for(alice, "wsDemo.chat.messages.some(m => m.from === 'carol' && m.text === 'carol here')", "alice to receive carol's message")
            check("a message from the third page reaches the first", True)
            shown = await cdp.evaluate(bob, "document.getElementById('log').textContent")
            check("the message is rendered in the page", "hello from alice ✓" in shown, shown[-80:])

            extensions = await cdp.evaluate(alice, "wsDemo.extensions()")
            check("the browser negotiated permessage-deflate", "permessage-deflate" in (extensions or ""), repr(extensions))
            opened = [l.strip() for l in server_log if "connection opened" in l and "protocol=chat" in l]
            check("the server agreed permessage-deflate with the browser", len(opened) >= 2 and all("extensions=permessage-deflate" in l for l in opened), "; ".join(opened))

            echo = await cdp.evaluate(alice, "wsDemo.echoBinary(1 << 20)", timeout=30)
            check("1 MiB binary echo round-trips byte for byte", bool(echo and echo.get("equal") and echo.get("received") == 1 << 20), json.dumps(echo))
            check("the echo close with 4000 is clean in the browser", bool(echo and echo.get("closeCode") == 4000 and echo.get("wasClean")), json.dumps(echo))

            for name, session in (("alice", alice), ("bob", bob)):
                shot = await cdp.call("Page.captureScreenshot", {"format": "png"}, session)
                data = __import__("base64").b64decode(shot["data"])
                path = os.path.join(shots, f"chat-{name}.png")
                with open(path, "wb") as f:
                    f.write(data)
                check(f"screenshot of {name}'s page is not blank", not png_is_blank(data), path)

            await cdp.evaluate(bob, "wsDemo.close(4000, 'bye'), true")
            await cdp.wait_for(bob, "wsDemo.chat.closes.some(c => c.code === 4000 && c.wasClean)", "bob's clean close")
            check("bob's close with 4000 is clean in the browser", True)
            end = time.monotonic() + 5
            while time.monotonic() < end and sum("code=4000" in l for l in server_log) < 2:
                await asyncio.sleep(0.1)
            closes = [l.strip() for l in server_log if "connection closed" in l and "code=4000" in l]
            check("the server saw both closes with 4000", len(closes) >= 2, "; ".join(closes))
            left = "wsDemo.chat.members === 2"
            await cdp.wait_for(alice, left, "alice to see bob leave")
            await cdp.wait_for(carol, left, "carol to see bob leave")
            check("alice and carol see bob leave", True)
            cdp.reader.cancel()
        log_task.cancel()
    except SetupError as error:
        print(f"FAIL setup: {error}", flush=True)
        return 2
    except Exception as error:  # a failed wait or a page error
        check("browser test", False, f"{type(error).__name__}: {error}")
    finally:
        stop(browser, server, profile)
    return summary("browser", results)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__)
        sys.exit(2)
    os.makedirs(sys.argv[2], exist_ok=True)
    sys.exit(asyncio.run(asyncio.wait_for(run(sys.argv[1], sys.argv[2]), DEADLINE)))
