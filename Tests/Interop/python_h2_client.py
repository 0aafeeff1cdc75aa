#!/usr/bin/env python3
"""An independent RFC 8441 client: Python `h2` (hyper-h2) for HTTP/2, WebSocket frames by hand.

Usage: python_h2_client.py <port> <ca file>

Against 127.0.0.1:<port> (TLS, ALPN h2, certificate for `localhost` checked with <ca file>):
waits for SETTINGS_ENABLE_CONNECT_PROTOCOL, opens a WebSocket on stream 1 with an extended
CONNECT, echoes a text message, then sends a malformed request on stream 3 (a `connection`
header, forbidden in HTTP/2), which the server must reset without harming stream 1; echoes
again on stream 1, closes it with 1000, and checks the stream ends. Prints one JSON report.
"""
import json
import os
import socket
import ssl
import struct
import sys

import h2.config
import h2.connection
import h2.events
import h2.settings

DEADLINE = 20


def frame(opcode, payload):
    """A masked, final client frame."""
    mask = os.urandom(4)
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def parse_frames(buffer):
    """Complete server frames at the start of `buffer`: ([(opcode, payload)], rest)."""
    frames = []
    while len(buffer) >= 2:
        opcode, n, pos = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
        if buffer[1] & 0x80:
            raise ValueError("server frame is masked")
        if n == 126:
            if len(buffer) < 4:
                break
            n, pos = struct.unpack(">H", buffer[2:4])[0], 4
        elif n == 127:
            if len(buffer) < 10:
                break
            n, pos = struct.unpack(">Q", buffer[2:10])[0], 10
        if len(buffer) < pos + n:
            break
        frames.append((opcode, bytes(buffer[pos:pos + n])))
        buffer = buffer[pos + n:]
    return frames, buffer


def main(port, cafile):
    report = {}
    context = ssl.create_default_context(cafile=cafile)
    context.set_alpn_protocols(["h2"])
    sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=DEADLINE), server_hostname="localhost")
    report["alpn"] = sock.selected_alpn_protocol()
    config = h2.config.H2Configuration(client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False)
    conn = h2.connection.H2Connection(config=config)
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())

    inbox = {1: bytearray()}
    state = {"settings": None, "status1": None, "reset3": None, "ended1": False}

    def pump():
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RemoteSettingsChanged) and state["settings"] is None:
                state["settings"] = {int(k): v.new_value for k, v in event.changed_settings.items()}
            elif isinstance(event, h2.events.ResponseReceived):
                headers = {k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v for k, v in event.headers}
                if event.stream_id == 1:
                    state["status1"] = headers.get(":status")
            elif isinstance(event, h2.events.DataReceived):
                inbox.setdefault(event.stream_id, bytearray()).extend(event.data)
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                if event.stream_id == 3:
                    state["reset3"] = int(event.error_code)
            elif isinstance(event, h2.events.StreamEnded):
                if event.stream_id == 1:
                    state["ended1"] = True
        out = conn.data_to_send()
        if out:
            sock.sendall(out)

    def until(condition):
        while not condition():
            pump()

    def next_message():
        """The next whole frame the server sent on stream 1: (opcode, payload)."""
        while True:
            frames, _ = parse_frames(inbox[1])
            if frames:
                del inbox[1][:frame_length(inbox[1])]
                return frames[0]
            pump()

    until(lambda: state["settings"] is not None)
    report["enable_connect_protocol"] = state["settings"].get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL)

    conn.send_headers(1, [
        (":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"), (":path", "/python-h2"),
        (":authority", f"localhost:{port}"), ("sec-websocket-version", "13"), ("origin", "https://python.example"),
    ])
    sock.sendall(conn.data_to_send())
    until(lambda: state["status1"] is not None)
    report["status"] = state["status1"]

    def send(opcode, payload):
        conn.send_data(1, frame(opcode, payload))
        sock.sendall(conn.data_to_send())

    send(0x1, "first over h2 ✓".encode())
    report["echo1"] = next_message()[1].decode()

    # A malformed request on another stream: the server resets that stream only.
    conn.send_headers(3, [
        (":method", "GET"), (":scheme", "https"), (":path", "/bad"), (":authority", f"localhost:{port}"),
        ("connection", "close"),
    ], end_stream=True)
    sock.sendall(conn.data_to_send())
    until(lambda: state["reset3"] is not None)
    report["stream3_reset"] = state["reset3"]

    send(0x1, b"second, after the reset")
    report["echo2"] = next_message()[1].decode()

    send(0x8, struct.pack(">H", 1000) + b"bye")
    opcode, payload = next_message()
    report["close_reply"] = [struct.unpack(">H", payload[:2])[0], payload[2:].decode()] if opcode == 0x8 and len(payload) >= 2 else None
    until(lambda: state["ended1"])
    report["stream1_ended"] = True
    print(json.dumps(report), flush=True)


def frame_length(buffer):
    n, pos = buffer[1] & 0x7F, 2
    if n == 126:
        n, pos = struct.unpack(">H", bytes(buffer[2:4]))[0], 4
    elif n == 127:
        n, pos = struct.unpack(">Q", bytes(buffer[2:10]))[0], 10
    return pos + n


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__)
        sys.exit(2)
    main(int(sys.argv[1]), sys.argv[2])
