// Interop peer: Node's built-in WebSocket client (undici; `node --experimental-websocket` on
// Node 20) against the server under test.
//
// Usage: node --experimental-websocket node_client.mjs <ws-url>
//
// Echoes text (emoji, CJK) and binary messages, then closes with 4000 "node bye". On success it
// prints one JSON line with what it saw and exits 0; on failure "FAIL: <why>" on stderr, exit 1.
import { randomBytes } from "node:crypto";

const fail = (why) => {
  console.error(`FAIL: ${why}`);
  process.exit(1);
};
setTimeout(() => fail("timed out after 20 s"), 20_000).unref();

if (typeof WebSocket === "undefined") fail("no global WebSocket: run node with --experimental-websocket (Node 20+)");
const url = process.argv[2];
if (!url) fail("usage: node_client.mjs <ws-url>");

const ws = new WebSocket(url);
ws.binaryType = "arraybuffer";
const inbox = [];
let waiting = null;
ws.onmessage = (event) => {
  inbox.push(event.data);
  if (waiting) { const w = waiting; waiting = null; w(); }
};
ws.onerror = (event) => fail(`error event: ${event.message ?? event.error ?? "unknown"}`);
const closed = new Promise((resolve) => { ws.onclose = resolve; });
const next = async () => {
  while (inbox.length === 0) await new Promise((resolve) => { waiting = resolve; });
  return inbox.shift();
};

await new Promise((resolve, reject) => {
  ws.onopen = resolve;
  ws.addEventListener("close", () => reject(new Error("closed before open")));
}).catch((error) => fail(error.message));

const texts = ["héllo wörld 🌍👋🏽🎉 你好，世界 こんにちは 안녕하세요 𝄞", "", "漢字🙂".repeat(20_000)];
for (const text of texts) {
  ws.send(text);
  const echo = await next();
  if (typeof echo !== "string") fail(`expected text back, got ${typeof echo}`);
  if (echo !== text) fail(`text echo differs: sent ${text.length} UTF-16 units, got ${echo.length}`);
}

const sizes = [0, 1, 125, 126, 65536, 1 << 20];
for (const size of sizes) {
  const payload = randomBytes(size);
  ws.send(payload);
  const echo = await next();
  if (!(echo instanceof ArrayBuffer)) fail(`expected binary back for ${size} bytes, got ${typeof echo}`);
  if (!Buffer.from(echo).equals(payload)) fail(`binary echo of ${size} bytes differs (got ${echo.byteLength} bytes)`);
}

ws.close(4000, "node bye");
const event = await closed;
const result = { node: process.version, texts: texts.length, sizes, code: event.code, reason: event.reason, wasClean: event.wasClean };
if (!event.wasClean) fail(`close was not clean: ${JSON.stringify(result)}`);
console.log(JSON.stringify(result));
process.exit(0);
