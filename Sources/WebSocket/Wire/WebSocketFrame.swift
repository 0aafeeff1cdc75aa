import NIOCore

/// One frame on the wire (RFC 6455 §5.2): the Swift counterpart of WebSocket-Node's
/// `WebSocketFrame`.
///
/// `binaryPayload` always holds the *unmasked* application data; `mask` says whether the frame
/// is (or was) masked on the wire and `maskingKey` with which key. Serialization masks on the
/// fly when `mask` is set.
public struct WebSocketFrame: Sendable, Equatable {
    /// Whether this is the final fragment of a message.
    public var fin: Bool
    /// Reserved bit 1 (used by permessage-deflate).
    public var rsv1: Bool
    /// Reserved bit 2.
    public var rsv2: Bool
    /// Reserved bit 3.
    public var rsv3: Bool
    /// Whether the payload is masked on the wire (every client-to-server frame is).
    public var mask: Bool
    /// The key used when `mask` is true. `nil` with `mask` set means "pick a fresh random
    /// key when serializing".
    public var maskingKey: WebSocketMaskingKey?
    /// The frame's opcode.
    public var opcode: WebSocketOpcode
    /// The unmasked payload.
    public var binaryPayload: ByteBuffer

    /// The payload length in bytes (read-only, as in the original).
    public var length: Int { binaryPayload.readableBytes }

    /// Creates a frame.
    public init(
        fin: Bool = true,
        rsv1: Bool = false,
        rsv2: Bool = false,
        rsv3: Bool = false,
        mask: Bool = false,
        maskingKey: WebSocketMaskingKey? = nil,
        opcode: WebSocketOpcode,
        binaryPayload: ByteBuffer = ByteBuffer()
    ) {
        self.fin = fin
        self.rsv1 = rsv1
        self.rsv2 = rsv2
        self.rsv3 = rsv3
        self.mask = mask
        self.maskingKey = maskingKey
        self.opcode = opcode
        self.binaryPayload = binaryPayload
    }

    /// The size of the header this frame serializes to: 2 bytes, plus 2 or 8 for the
    /// extended length, plus 4 for the masking key.
    public var headerLength: Int {
        WebSocketFrameHeader.encodedLength(payloadLength: length, masked: mask)
    }

    /// Serializes the frame (header and masked or plain payload) into `buffer`.
    public func serialize(into buffer: inout ByteBuffer) {
        let key = mask ? (maskingKey ?? .random()) : nil
        let header = WebSocketFrameHeader(
            fin: fin, rsv1: rsv1, rsv2: rsv2, rsv3: rsv3, opcode: opcode,
            maskingKey: key, payloadLength: UInt64(length))
        buffer.reserveCapacity(minimumWritableBytes: header.encodedLength + length)
        header.write(to: &buffer)
        buffer.writeMaskedPayload(binaryPayload.readableBytesView, key: key)
    }

    /// The frame serialized into a new buffer.
    public func serialized(allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: headerLength + length)
        serialize(into: &buffer)
        return buffer
    }

    /// Parses one complete frame from the start of `buffer`, consuming it. Returns `nil`
    /// (consuming nothing) when the buffer does not yet hold the whole frame.
    ///
    /// This is a convenience for whole buffers; the connection uses its sans-I/O receiver,
    /// which streams payloads and enforces size limits before buffering them.
    public static func parse(from buffer: inout ByteBuffer) throws(WebSocketProtocolError) -> WebSocketFrame? {
        var probe = buffer
        guard let header = try WebSocketFrameHeader.parse(from: &probe) else { return nil }
        guard header.payloadLength <= UInt64(probe.readableBytes) else { return nil }
        let length = Int(header.payloadLength)
        var payload = ByteBufferAllocator().buffer(capacity: length)
        payload.writeMaskedPayload(probe.readableBytesView.prefix(length), key: header.maskingKey)
        probe.moveReaderIndex(forwardBy: length)
        buffer = probe
        return WebSocketFrame(
            fin: header.fin, rsv1: header.rsv1, rsv2: header.rsv2, rsv3: header.rsv3,
            mask: header.maskingKey != nil, maskingKey: header.maskingKey,
            opcode: header.opcode, binaryPayload: payload)
    }
}

extension ByteBuffer {
    /// Appends `bytes`, XORed with `key` from key position `offset` when a key is given.
    mutating func writeMaskedPayload(_ bytes: ByteBufferView, key: WebSocketMaskingKey?, offset: Int = 0) {
        guard let key else {
            // Through a raw pointer: a plain memcpy, where the generic collection path is not.
            bytes.withUnsafeBytes { _ = writeBytes($0) }
            return
        }
        let count = bytes.count
        guard count > 0 else { return }
        bytes.withUnsafeBytes { source in
            _ = writeWithUnsafeMutableBytes(minimumWritableBytes: count) { destination in
                WebSocketMasking.apply(
                    key: key, offset: offset, source: source.baseAddress!,
                    destination: destination.baseAddress!, count: count)
                return count
            }
        }
    }
}
