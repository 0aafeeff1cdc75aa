/// The single self-contained page `ws serve` answers `GET /` with: a chat client for `/chat`
/// (subprotocol `chat`), with the connection state shown and reconnection on loss, and a
/// small echo tester. No external assets.
enum DemoPage {
    static let html = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ws serve: chat demo</title>
<style>
  :root { --bg:#f6f7f9; --fg:#1d2330; --muted:#6b7385; --accent:#2f6fec; --ok:#1f9d55; --warn:#d98e04; --bad:#d64545; }
  * { box-sizing: border-box; }
  body { margin:0; font:15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; background:var(--bg); color:var(--fg); }
  header { display:flex; align-items:center; gap:12px; padding:14px 20px; background:#fff; border-bottom:1px solid #e3e6ec; }
  header h1 { font-size:18px; margin:0; }
  #state { display:inline-flex; align-items:center; gap:6px; padding:3px 10px; border-radius:999px; background:#eef1f6; font-size:13px; }
  #dot { width:10px; height:10px; border-radius:50%; background:var(--warn); }
  #state.open #dot { background:var(--ok); } #state.closed #dot { background:var(--bad); }
  #count { margin-left:auto; color:var(--muted); font-size:13px; }
  main { max-width:760px; margin:20px auto; padding:0 16px; }
  #log { height:360px; overflow-y:auto; background:#fff; border:1px solid #e3e6ec; border-radius:8px; padding:10px 14px; }
  .line { margin:3px 0; word-wrap:break-word; } .from { font-weight:600; color:var(--accent); }
  .notice { color:var(--muted); font-style:italic; }
  form { display:flex; gap:8px; margin-top:10px; }
  input { flex:1; padding:9px 12px; border:1px solid #cfd5df; border-radius:6px; font:inherit; }
  button { padding:9px 16px; border:0; border-radius:6px; background:var(--accent); color:#fff; font:inherit; cursor:pointer; }
  button:disabled { background:#9fb6e8; cursor:default; }
  footer { color:var(--muted); font-size:12px; margin-top:14px; }
</style>
</head>
<body>
<header>
  <h1>WebSocket chat</h1>
  <span id="state"><span id="dot"></span><span id="statetext">connecting…</span></span>
  <span id="count"></span>
</header>
<main>
  <div id="log" aria-live="polite"></div>
  <form id="form"><input id="text" autocomplete="off" placeholder="Say something…" maxlength="2000"><button id="send" disabled>Send</button></form>
  <footer>Served by <code>ws serve</code>. Chat on <code>/chat</code> (subprotocol <code>chat</code>); every other path echoes. <span id="ext"></span></footer>
</main>
<script>
"use strict";
const params = new URLSearchParams(location.search);
const base = (location.protocol === "https:" ? "wss://" : "ws://") + location.host;
const log = document.getElementById("log");
const stateEl = document.getElementById("state"), stateText = document.getElementById("statetext");
const countEl = document.getElementById("count"), sendButton = document.getElementById("send");
let socket = null, retry = 0, myName = null;
const chat = { messages: [], members: 0, closes: [] };   // also read by the browser test

function setState(name, text) { stateEl.className = name; stateText.textContent = text; sendButton.disabled = name !== "open"; }
function addLine(html, cls) {
  const div = document.createElement("div"); div.className = "line " + (cls || ""); div.innerHTML = html;
  log.appendChild(div); log.scrollTop = log.scrollHeight;
}
function esc(s) { return String(s).replace(/[&<>"]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;","\"":"&quot;"})[c]); }

function connect() {
  setState("connecting", retry ? "reconnecting…" : "connecting…");
  const name = params.get("name");
  socket = new WebSocket(base + "/chat" + (name ? "?name=" + encodeURIComponent(name) : ""), "chat");
  socket.onopen = () => {
    retry = 0; setState("open", "connected");
    document.getElementById("ext").textContent = socket.extensions ? "Extensions: " + socket.extensions : "";
  };
  socket.onmessage = (event) => {
    const m = JSON.parse(event.data);
    if (typeof m.count === "number") { chat.members = m.count; countEl.textContent = m.count + (m.count === 1 ? " member" : " members"); }
    if (m.type === "welcome") { myName = m.name; addLine("You joined as <b>" + esc(m.name) + "</b>.", "notice"); }
    else if (m.type === "join") addLine(esc(m.name) + " joined.", "notice");
    else if (m.type === "leave") addLine(esc(m.name) + " left.", "notice");
    else if (m.type === "message") { chat.messages.push(m); addLine("<span class=from>" + esc(m.from) + ":</span> " + esc(m.text)); }
  };
  socket.onclose = (event) => {
    chat.closes.push({ code: event.code, wasClean: event.wasClean });
    if (event.code === 4000) { setState("closed", "closed (4000)"); return; }
    setState("closed", "disconnected, retrying…");
    const delay = Math.min(10000, 500 * 2 ** retry++);
    setTimeout(connect, delay);
  };
}

document.getElementById("form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("text");
  if (input.value && socket && socket.readyState === WebSocket.OPEN) { socket.send(input.value); input.value = ""; }
});

// Hooks for the browser test (and the curious, from the console).
window.wsDemo = {
  chat,
  send(text) { socket.send(text); },
  close(code, reason) { socket.close(code, reason); },
  extensions() { return socket ? socket.extensions : ""; },
  // Echoes `size` random bytes through `/echo`; resolves with what came back and how.
  echoBinary(size) {
    return new Promise((resolve) => {
      const echo = new WebSocket(base + "/echo");
      echo.binaryType = "arraybuffer";
      const data = new Uint8Array(size);
      for (let offset = 0; offset < size; offset += 65536) crypto.getRandomValues(data.subarray(offset, Math.min(size, offset + 65536)));
      const result = { sent: size };
      echo.onopen = () => echo.send(data);
      echo.onmessage = (event) => {
        const back = new Uint8Array(event.data);
        result.received = back.length;
        result.equal = back.length === data.length && back.every((b, i) => b === data[i]);
        result.extensions = echo.extensions;
        echo.close(4000, "done");
      };
      echo.onclose = (event) => { result.closeCode = event.code; result.wasClean = event.wasClean; resolve(result); };
      echo.onerror = () => { result.error = true; };
    });
  },
};
connect();
</script>
</body>
</html>
"""#
}
