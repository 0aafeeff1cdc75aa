#!/usr/bin/env python3
"""Browser test of WebSockets over HTTP/2 (RFC 8441): headless Chromium loads `ws serve
--http2`'s page over https (h2), then opens two WebSockets from it; the server's log must
show them (and the page's own chat socket) on one TCP connection.

Usage: browser_h2_test.py <path to ws> <tls dir with server.pem and server-key.pem>

Prints one line per check and ends with "browser-h2: N passed, M failed"; exits 1 when a check
failed, 2 when the setup failed.
"""
import asyncio
import json
import os
import re
import sys
import tempfile
import time

import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from browser_test import (  # noqa: E402
    CDP, SetupError, collect_log, find_chromium, start_chromium, start_server, stop, summary)

DEADLINE = 60  # seconds for the whole test

# Runs in the page: opens two WebSockets at once, echoes a text and a 200 KiB binary message on
# each (bigger than HTTP/2's initial flow-control window), closes them with 4000.
PAGE_SCRIPT = r"""
(async () => {
  function open(path) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`wss://${location.host}${path}`);
      ws.binaryType = 'arraybuffer';
      ws.onopen = () => resolve(ws);
      ws.onerror = () => reject(new Error('WebSocket error on ' + path));
    });
  }
  function next(ws) {
    return new Promise(resolve => { ws.onmessage = e => resolve(e.data); });
  }
  function closed(ws) {
    return new Promise(resolve => { ws.onclose = e => resolve({code: e.code, wasClean: e.wasClean}); });
  }
  const [a, b] = await Promise.all([open('/h2-a'), open('/h2-b')]);
  const results = {};
  const big = new Uint8Array(200 * 1024);
  for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 255;
  for (const [name, ws] of [['a', a], ['b', b]]) {
    let reply = next(ws);
    ws.send('hello over h2 ' + name);
    const text = await reply;
    reply = next(ws);
    ws.send(big);
    const bytes = new Uint8Array(await reply);
    let equal = bytes.length === big.length;
    for (let i = 0; equal && i < big.length; i++) equal = bytes[i] === big[i];
    results[name] = {text, binaryEqual: equal, extensions: ws.extensions};
  }
  const closes = [closed(a), closed(b)];
  a.close(4000, 'bye a');
  b.close(4000, 'bye b');
  results.closes = await Promise.all(closes);
  results.pageProtocol = performance.getEntriesByType('navigation')[0].nextHopProtocol;
  return results;
})()
"""


async def run(ws_binary, tls_dir):
    results = []

    def check(name, ok, detail=""):
        results.append(ok)
        print(f"{'PASS' if ok else 'FAIL'} {name}" + (f" ({detail})" if detail else ""), flush=True)

    chromium = find_chromium()
    if not chromium:
        print("FAIL setup: Chromium is not installed (apt-get install chromium)", flush=True)
        return 2
    tls = ["--tls-cert", os.path.join(tls_dir, "server.pem"), "--tls-key", os.path.join(tls_dir, "server-key.pem")]
    profile = tempfile.mkdtemp(prefix="ws-chromium-h2-")
    server = browser = None
    server_log = []
    try:
        server, port = start_server(ws_binary, [
            "--host", "127.0.0.1", "--http2", "--deflate", "--log-level", os.environ.get("WS_LOG_LEVEL", "info"), *tls])
        log_task = asyncio.create_task(collect_log(server, server_log))
        browser, endpoint = start_chromium(chromium, profile, ["--ignore-certificate-errors", *os.environ.get("WS_CHROMIUM_ARGS", "").split()])

        async with websockets.connect(endpoint, max_size=64 << 20, compression=None) as ws:
            cdp = CDP(ws)
            page = await cdp.open_page(f"https://127.0.0.1:{port}/?name=h2")
            await cdp.wait_for(page, "location.protocol === 'https:' && document.readyState === 'complete' && !!window.wsDemo", "the page to load")
            outcome = await cdp.evaluate(page, PAGE_SCRIPT, timeout=30)
            detail = json.dumps(outcome)
            check("the page came over HTTP/2", outcome.get("pageProtocol") == "h2", detail)
            for name in ("a", "b"):
                got = outcome.get(name) or {}
                check(f"WebSocket {name} echoes text", got.get("text") == f"hello over h2 {name}", detail)
                check(f"WebSocket {name} echoes 200 KiB binary byte for byte", got.get("binaryEqual") is True, detail)
                check(f"WebSocket {name} negotiated permessage-deflate", "permessage-deflate" in (got.get("extensions") or ""), detail)
            closes = outcome.get("closes") or []
            check("both closes with 4000 are clean in the browser",
                  len(closes) == 2 and all(c.get("code") == 4000 and c.get("wasClean") for c in closes), detail)

            end = time.monotonic() + 5
            while time.monotonic() < end and sum("code=4000" in l for l in server_log) < 2:
                await asyncio.sleep(0.1)
            opened = [l.strip() for l in server_log if "connection opened" in l]
            peers = {m.group(1) for l in opened for m in [re.search(r"http2=(\S+)", l)] if m}
            # The page's own chat socket, then the two of PAGE_SCRIPT.
            check("the server saw three WebSockets, all over HTTP/2", len(opened) == 3 and all("http2=" in l for l in opened), "; ".join(opened))
            check("they all came over one TCP connection", len(peers) == 1, ", ".join(sorted(peers)))
            closes = [l.strip() for l in server_log if "connection closed" in l and "code=4000" in l]
            check("the server saw both closes with 4000", len(closes) == 2, "; ".join(closes))
            cdp.reader.cancel()
        log_task.cancel()
    except SetupError as error:
        print(f"FAIL setup: {error}", flush=True)
        return 2
    except Exception as error:  # a failed wait or a page error
        check("browser h2 test", False, f"{type(error).__name__}: {error}")
        print("server log:\n" + "".join(server_log[-20:]), flush=True)
    finally:
        stop(browser, server, profile)
    return summary("browser-h2", results)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__)
        sys.exit(2)
    sys.exit(asyncio.run(asyncio.wait_for(run(sys.argv[1], sys.argv[2]), DEADLINE)))
