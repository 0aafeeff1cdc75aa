#!/usr/bin/env python3
"""A hostile WebSocket client for the hostile-peer tests (HostilePeerTests.swift).

    hostile_client.py MODE PORT [--path P] [--seconds S] [--max-bytes B] [--count N]

Connects to 127.0.0.1:PORT only, does one of the attacks below for at most S seconds (or B bytes
sent), and prints one line at the end that the test reads:

    hostile: mode=M sent=BYTES blocked=0|1 closed=0|1 code=CODE

`blocked=1`: the server stopped reading (our socket's send buffer stayed full for a second:
TCP backpressure reached us). `closed=1`: the server closed the connection (`code` is its close
code when we read one, else -1). Modes:

- echo-nonreader: 16,000-byte binary frames, never reading (receive buffer 4 KiB);
- ping-flood: 125-byte pings, never reading;
- empty-frames: empty text frames (81 80 00 00 00 00), never reading;
- tiny-continuations: a text frame of 1 byte without FIN, then 1-byte continuations, reading;
- deflate-bomb: offers permessage-deflate, sends one compressed message of N MiB of zeros
  (about 1 KiB per MiB on the wire), reading;
- slowloris: sends the request head one byte every 100 ms, never finishing;
- pending-handshakes: opens N connections that send a complete upgrade request each and never
  read; reports how many got an answer (`answered=`) and how many were refused with 503.
"""
import argparse
import base64
import os
import select
import socket
import struct
import sys
import time
import zlib


def handshake(sock, path, extensions=None):
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Upgrade: websocket", "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
    ]
    if extensions:
        lines.append(f"Sec-WebSocket-Extensions: {extensions}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(1)
        if not chunk:
            raise SystemExit("hostile: the server closed during the handshake")
        response += chunk
    if not response.startswith(b"HTTP/1.1 101"):
        raise SystemExit(f"hostile: handshake refused: {response!r}")
    return response


def frame(opcode, payload, fin=True, rsv1=False):
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if n < 4096 else _mask_fast(payload, mask)
    return head + mask + masked


def _mask_fast(payload, mask):
    key = int.from_bytes(mask * (len(payload) // 4 + 1), "little")
    data = int.from_bytes(payload, "little")
    return (data ^ (key & ((1 << (8 * len(payload))) - 1))).to_bytes(len(payload), "little")


class Flood:
    """Sends `unit` again and again without blocking; notices when the server stops reading."""

    def __init__(self, sock, reading):
        self.sock = sock
        self.reading = reading
        self.sent = 0
        self.blocked = False
        self.closed = False
        self.code = -1
        self.inbound = b""
        sock.setblocking(False)

    def run(self, next_unit, seconds, max_bytes):
        deadline = time.monotonic() + seconds
        pending = b""
        stalled_since = None
        while time.monotonic() < deadline and self.sent < max_bytes and not self.closed:
            if not pending:
                pending = next_unit()
                if pending is None:
                    break
            want_read = [self.sock] if self.reading else []
            readable, writable, _ = select.select(want_read, [self.sock], [], 0.1)
            if readable:
                self._read()
            if writable:
                try:
                    n = self.sock.send(pending)
                except (BrokenPipeError, ConnectionResetError):
                    self.closed = True
                    break
                self.sent += n
                pending = pending[n:]
                stalled_since = None
            else:
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > 1.0:
                    self.blocked = True
        if not self.closed and not self.reading:
            # Did the server close us (a close frame or EOF waiting behind what we never read)?
            self._peek_closed()

    def _read(self):
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionResetError:
            self.closed = True
            return
        if not data:
            self.closed = True
            return
        self.inbound = (self.inbound + data)[-65536:]
        # A close frame from the server: 0x88, length, code.
        index = self.inbound.rfind(b"\x88")
        if index >= 0 and len(self.inbound) >= index + 4 and self.inbound[index + 1] & 0x7F >= 2:
            self.code = struct.unpack("!H", self.inbound[index + 2:index + 4])[0]

    def _peek_closed(self):
        try:
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.closed = True
        except OSError:
            self.closed = True


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode")
    parser.add_argument("port", type=int)
    parser.add_argument("--path", default="/")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--max-bytes", type=int, default=1 << 40)
    parser.add_argument("--count", type=int, default=64)
    args = parser.parse_args()
    mode = args.mode

    if mode == "pending-handshakes":
        socks, answered, refused = [], 0, 0
        request = ("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
        for _ in range(args.count):
            s = socket.create_connection(("127.0.0.1", args.port))
            s.sendall(request)
            socks.append(s)
        deadline = time.monotonic() + args.seconds
        seen = {}
        while time.monotonic() < deadline and len(seen) < len(socks):
            readable, _, _ = select.select([s for s in socks if s not in seen], [], [], 0.1)
            for s in readable:
                seen[s] = s.recv(4096)
        for data in seen.values():
            answered += 1
            if data.startswith(b"HTTP/1.1 503"):
                refused += 1
        print(f"hostile: mode={mode} answered={answered} refused={refused} open={len(socks)}", flush=True)
        time.sleep(0.2)
        return

    sock = socket.create_connection(("127.0.0.1", args.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)

    if mode == "slowloris":
        request = (f"GET {args.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nX-Padding: " + "a" * 10000).encode()
        deadline = time.monotonic() + args.seconds
        sent, closed, answer = 0, False, b""
        sock.settimeout(0.1)
        while time.monotonic() < deadline and sent < len(request) and not closed:
            try:
                sock.send(request[sent:sent + 1])
                sent += 1
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            try:
                data = sock.recv(4096)
                if not data:
                    closed = True
                answer += data
            except socket.timeout:
                pass
            except ConnectionResetError:
                closed = True
        status = answer.split(b" ")[1].decode() if answer.startswith(b"HTTP/1.1 ") else "-"
        print(f"hostile: mode={mode} sent={sent} blocked=0 closed={int(closed)} code=-1 status={status}", flush=True)
        return

    extensions = "permessage-deflate; client_max_window_bits" if mode == "deflate-bomb" else None
    handshake(sock, args.path, extensions)
    reading = mode in ("tiny-continuations", "deflate-bomb")
    flood = Flood(sock, reading)

    if mode == "echo-nonreader":
        unit = frame(0x2, os.urandom(16000))
        flood.run(lambda: unit, args.seconds, args.max_bytes)
    elif mode == "ping-flood":
        unit = frame(0x9, b"p" * 125) * 64
        flood.run(lambda: unit, args.seconds, args.max_bytes)
    elif mode == "empty-frames":
        unit = b"\x81\x80\x00\x00\x00\x00" * 1024
        flood.run(lambda: unit, args.seconds, args.max_bytes)
    elif mode == "tiny-continuations":
        state = {"first": True}
        batch = frame(0x0, b"a", fin=False) * 512

        def units():
            if state["first"]:
                state["first"] = False
                return frame(0x1, b"a", fin=False)
            return batch
        flood.run(units, args.seconds, args.max_bytes)
    elif mode == "deflate-bomb":
        mib = args.count
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        body = b"".join(compressor.compress(b"\0" * (1 << 20)) for _ in range(mib)) + compressor.flush(zlib.Z_SYNC_FLUSH)
        body = body[:-4]  # RFC 7692: without the trailing 00 00 ff ff
        message = [frame(0x2, body, rsv1=True)]
        flood.run(lambda: message.pop() if message else None, args.seconds, args.max_bytes)
        # Wait for the server's answer (its close) for the rest of the time.
        deadline = time.monotonic() + args.seconds
        while not flood.closed and time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], 0.1)
            if readable:
                flood._read()
    else:
        raise SystemExit(f"hostile: unknown mode {mode}")
    print(f"hostile: mode={mode} sent={flood.sent} blocked={int(flood.blocked)} closed={int(flood.closed)} code={flood.code}",
          flush=True)
    # Hold the connection a moment so that the test samples the server while we still hold it.
    time.sleep(0.2)


if __name__ == "__main__":
    main()
