#!/usr/bin/env python3
"""Writes the seed corpus of each fuzz target to Fuzz/Corpus/<target>/ (small, valid-looking
inputs the fuzzer mutates from). Deterministic: run it again to regenerate the same files."""
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = bytes([0x37, 0xFA, 0x21, 0x3D])


def frame(opcode, payload=b"", fin=True, rsv1=False, masked=True, key=KEY):
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n <= 125:
        head = bytes([first, mask_bit | n])
    elif n <= 0xFFFF:
        head = bytes([first, mask_bit | 126]) + struct.pack(">H", n)
    else:
        head = bytes([first, mask_bit | 127]) + struct.pack(">Q", n)
    if not masked:
        return head + payload
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def deflate(data):
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def close(code, reason=b""):
    return struct.pack(">H", code) + reason


def write(target, name, data):
    folder = os.path.join(HERE, "Corpus", target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


# (a) FuzzReceiver: flags, split count, splits, wire bytes.
def receiver(name, flags, splits, wire):
    write("FuzzReceiver", name, bytes([flags, len(splits)]) + bytes(splits) + wire)


receiver("text-ping-close", 0x33, [3], frame(1, "héllo 😀".encode()) + frame(9, b"ping") + frame(8, close(1000, b"bye")))
receiver("fragmented", 0xB3, [1, 7, 2], frame(1, b"frag", fin=False) + frame(10, b"") + frame(0, b"ment", fin=True) + frame(2, bytes(range(200))))
receiver("no-assembly", 0xB1, [5], frame(2, b"abc", fin=False) + frame(0, b"def", fin=False) + frame(0, b"g"))
receiver("deflate", 0x37, [4, 9], frame(1, deflate(b"hello hello hello hello"), rsv1=True) + frame(2, deflate(bytes(300)), rsv1=True))
receiver("deflate-fragmented", 0x3F, [2], frame(1, deflate(b"abcabcabc" * 20)[:5], fin=False, rsv1=True) + frame(0, deflate(b"abcabcabc" * 20)[5:]))
receiver("client-unmasked", 0x32, [], frame(1, b"from the server", masked=False) + frame(8, b"", masked=False))
# 16-bit length, then a 64-bit length that is not minimally encoded (allowed), then close.
LONG = bytes([0x82, 0xFF]) + struct.pack(">Q", 200) + KEY + bytes(200)
receiver("lengths", 0x33, [100, 60], frame(2, bytes(126)) + LONG + frame(8, close(4000)))
receiver("bad-utf8", 0x33, [2], frame(1, b"ok \xce", fin=False) + frame(0, b"\xa9 fine \xff"))

# (b) FuzzConnection: config byte, then ops: 0-3 frame (op, first, len, payload), 4 raw,
# 5 action, 6 time, 7 compressed message.
def conn(name, flags, ops):
    write("FuzzConnection", name, bytes([flags]) + b"".join(ops))


def fop(first, payload, op=0x00):
    assert len(payload) < 0xC0
    return bytes([op, first, len(payload)]) + payload


conn("echo-close", 0x02, [fop(0x81, b"hello"), fop(0x89, b"p"), fop(0x88, close(1000))])
conn("fragments", 0x02, [fop(0x01, b"frag"), fop(0x8A, b""), fop(0x80, b"ment"), bytes([4, 6]) + frame(2, b"raw")[:6]])
conn("deflate", 0x03, [bytes([7, 40]), bytes([0x87, 200]), fop(0x88, b"")])
conn("server-close", 0x02, [bytes([5, 0]), fop(0x81, b"late"), bytes([6, 60]), fop(0x88, close(1000))])
conn("keepalive", 0x12, [bytes([6, 60]), bytes([6, 60]), bytes([6, 60])])
conn("late-listener", 0x22, [fop(0x82, b"x" * 50), bytes([5, 3]), fop(0x82, b"y"), bytes([5, 4]), bytes([5, 7]), fop(0x88, close(4001, b"r"))])
conn("big", 0x06, [bytes([0, 0x82, 0xC6, 7]), bytes([0, 0x81, 0xCD])])

# (c) FuzzHandshake: mode, parameter, bytes.
def hs(name, mode, param, text):
    write("FuzzHandshake", name, bytes([mode, param]) + text.encode("latin-1"))


REQ = "GET /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
hs("valid", 0, 0, REQ + "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat, superchat\r\nOrigin: http://example.com\r\n\r\n")
hs("deflate-cookies", 0, 0, REQ + "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, x-foo\r\nCookie: a=1; b=\"two\"\r\n\r\n" + "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58")
hs("version8", 0, 0, REQ + "Sec-WebSocket-Version: 8\r\nSec-WebSocket-Origin: http://o\r\n\r\n")
hs("version12", 0, 0, REQ + "Sec-WebSocket-Version: 12\r\n\r\n")
hs("no-key", 0, 0, "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n")
hs("post", 0, 0, "POST / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\nContent-Length: 3\r\n\r\nabc")
hs("plain", 0, 0, "GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
hs("reject-split", 0x0A, 7, REQ + "Sec-WebSocket-Version: 13\r\n\r\n")
hs("small-limits", 0x04, 0, REQ + "Sec-WebSocket-Version: 13\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n")
hs("timeout", 0x13, 0, REQ + "Sec-WebSocket-Version: 13\r\n\r\n")
hs("incomplete", 0x10, 0, REQ)

# (d) FuzzExtensionOffers: flags, header values separated by newlines.
def ext(name, flags, text):
    write("FuzzExtensionOffers", name, bytes([flags]) + text.encode())


ext("default", 0x00, "permessage-deflate; client_max_window_bits")
ext("all-params", 0x03, "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=9")
ext("several", 0x7C, "x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=\"12\"\npermessage-deflate; client_max_window_bits=8")
ext("bad-then-good", 0x20, "permessage-deflate; server_max_window_bits=16, permessage-deflate; foo, permessage-deflate")
ext("quoted", 0x40, "foo; a=\"x,y\"; b, permessage-deflate;client_max_window_bits=15 ;server_no_context_takeover")

# (e) FuzzInflate: flags, then chunks (length | 0x80 on the message's last chunk, bytes).
def inflate_seed(name, flags, messages):
    out = bytes([flags])
    for message in messages:
        chunks = [message[i:i + 100] for i in range(0, len(message), 100)] or [b""]
        for i, chunk in enumerate(chunks):
            out += bytes([len(chunk) | (0x80 if i == len(chunks) - 1 else 0)]) + chunk
    write("FuzzInflate", name, out)


inflate_seed("text", 0x08, [deflate(b"hello permessage-deflate " * 10), deflate(b"second message")])
inflate_seed("bomb", 0x04, [deflate(bytes(1 << 20))])
inflate_seed("reset", 0x09, [deflate(b"abc" * 50), deflate(b"abc" * 50)])
inflate_seed("final-block", 0x0A, [zlib.compressobj(6, zlib.DEFLATED, -15).compress(b"x") + zlib.compressobj(6, zlib.DEFLATED, -15).flush()])
inflate_seed("stored", 0x06, [b"\x00\x05\x00\xfa\xffhello"])

# (f) FuzzClientHandshake: mode, piece size, the server's bytes ("{A}" is the right accept value).
def client(name, mode, param, data):
    write("FuzzClientHandshake", name, bytes([mode, param]) + data)


R101 = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {A}\r\n"
U = lambda *frames: b"".join(frames)  # the server's frames are unmasked
client("valid", 0x00, 0, R101 + b"\r\n")
client("protocol-frames", 0x01, 0, R101 + b"Sec-WebSocket-Protocol: chat\r\n\r\n"
       + U(frame(1, b"hello", masked=False), frame(9, b"p", masked=False), frame(8, close(1000), masked=False)))
client("deflate-split", 0x0E, 5, R101 + b"Sec-WebSocket-Protocol: superchat\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_max_window_bits=10\r\n\r\n"
       + frame(1, deflate(b"hello hello hello"), rsv1=True, masked=False))
client("wrong-accept", 0x00, 0, R101.replace(b"{A}", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") + b"\r\n")
client("not-offered", 0x00, 0, R101 + b"Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n")
client("refused-body", 0x08, 17, b"HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\nX-Reason: no\r\n\r\nForbidden")
client("body-until-close", 0x10, 0, b"HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\n" + b"x" * 3000)
client("chunked", 0x00, 0, b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
client("continue-then-101", 0x00, 0, b"HTTP/1.1 100 Continue\r\n\r\n" + R101 + b"\r\n")
client("incomplete", 0x10, 0, R101)

# (g) FuzzProxyReply: mode, piece size, the proxy's bytes.
def proxy(name, mode, param, data):
    write("FuzzProxyReply", name, bytes([mode, param]) + data)


proxy("established", 0x00, 0, b"HTTP/1.1 200 Connection established\r\n\r\n")
proxy("with-tunnel-bytes", 0x02, 6, b"HTTP/1.0 200 OK\r\nProxy-Agent: fuzz\r\n\r\n\x16\x03\x01\x00\x05hello")
proxy("auth-required", 0x00, 0, b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"p\"\r\nContent-Length: 0\r\n\r\n")
proxy("bad-credentials", 0x01, 0, b"HTTP/1.1 407 Nope\r\n\r\n")
proxy("malformed", 0x02, 0, b"SSH-2.0-OpenSSH\r\n\r\n")
proxy("closed-early", 0x04, 0, b"HTTP/1.1 200 Connection")
proxy("lf-only", 0x00, 0, b"HTTP/1.1 200 OK\n\n")

# (h) FuzzHTTP2Server: mode, piece size, the client's bytes (after the preface when bit 2 is set).
def h2frame(type_, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([type_, flags]) + struct.pack(">I", stream) + payload


def hpack(fields):
    out = b""
    for name, value in fields:  # literal without indexing, new name, no Huffman coding
        name, value = name.encode(), value.encode()
        assert len(name) < 127 and len(value) < 127
        out += bytes([0x00, len(name)]) + name + bytes([len(value)]) + value
    return out


def connect_fields(path="/chat", extra=()):
    return [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"), (":path", path),
            (":authority", "127.0.0.1"), ("sec-websocket-version", "13")] + list(extra)


def h2(name, mode, param, frames, own_preface=False):
    data = b"".join(frames)
    if own_preface:
        data = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2frame(4, 0, 0, b"") + data
    write("FuzzHTTP2Server", name, bytes([mode, param]) + data)


ACK = h2frame(4, 1, 0, b"")
WS = frame(1, b"hello") + frame(9, b"p") + frame(8, close(1000))
h2("extended-connect", 0x04, 0, [ACK, h2frame(1, 4, 1, hpack(connect_fields(extra=[("sec-websocket-protocol", "chat")]))),
                                  h2frame(0, 0, 1, WS)])
h2("own-preface-deflate", 0x00, 0, [ACK, h2frame(1, 4, 1, hpack(connect_fields(extra=[("sec-websocket-extensions", "permessage-deflate; client_max_window_bits")]))),
                                     h2frame(0, 0, 1, frame(1, deflate(b"hello hello"), rsv1=True)), h2frame(0, 1, 1, b"")], own_preface=True)
h2("two-streams-and-get", 0x07, 0, [ACK, h2frame(1, 4, 1, hpack(connect_fields())), h2frame(1, 4, 3, hpack(connect_fields("/other"))),
                                     h2frame(1, 5, 5, hpack([(":method", "GET"), (":scheme", "https"), (":path", "/"), (":authority", "127.0.0.1")])),
                                     h2frame(0, 0, 3, frame(2, bytes(40))), h2frame(3, 0, 1, struct.pack(">I", 8))])
h2("rejected-split", 0x0E, 9, [ACK, h2frame(1, 4, 1, hpack(connect_fields())), h2frame(0, 0, 1, WS)])
h2("undecided-time", 0x17, 0, [ACK, h2frame(1, 4, 1, hpack(connect_fields())), h2frame(1, 4, 3, hpack(connect_fields())),
                                h2frame(0, 0, 3, frame(1, b"early"))])
h2("control-frames", 0x24, 0, [ACK, h2frame(6, 0, 0, b"12345678"), h2frame(8, 0, 0, struct.pack(">I", 1000)),
                                 h2frame(4, 0, 0, struct.pack(">HI", 4, 100) + struct.pack(">HI", 1, 0)),
                                 h2frame(1, 0, 1, hpack(connect_fields())[:20]), h2frame(9, 4, 1, hpack(connect_fields())[20:]),
                                 h2frame(8, 0, 1, struct.pack(">I", 1)), h2frame(0, 0, 1, frame(2, bytes(300))),
                                 h2frame(7, 0, 0, struct.pack(">II", 1, 0))])
