import NIOCore

/// The header of a frame: everything but the payload (RFC 6455 §5.2).
public struct WebSocketFrameHeader: Sendable, Equatable {
    /// Whether this is the final fragment of a message.
    public var fin: Bool
    /// Reserved bit 1 (permessage-deflate's "compressed" bit).
    public var rsv1: Bool
    /// Reserved bit 2.
    public var rsv2: Bool
    /// Reserved bit 3.
    public var rsv3: Bool
    /// The frame's opcode.
    public var opcode: WebSocketOpcode
    /// The masking key, when the frame is masked.
    public var maskingKey: WebSocketMaskingKey?
    /// The payload length as announced on the wire (7, 16 or 63 bits).
    public var payloadLength: UInt64

    /// Creates a header.
    public init(
        fin: Bool, rsv1: Bool = false, rsv2: Bool = false, rsv3: Bool = false,
        opcode: WebSocketOpcode, maskingKey: WebSocketMaskingKey? = nil, payloadLength: UInt64
    ) {
        self.fin = fin
        self.rsv1 = rsv1
        self.rsv2 = rsv2
        self.rsv3 = rsv3
        self.opcode = opcode
        self.maskingKey = maskingKey
        self.payloadLength = payloadLength
    }

    /// The number of header bytes for a payload length and masking.
    public static func encodedLength(payloadLength: Int, masked: Bool) -> Int {
        let base = payloadLength <= 125 ? 2 : (payloadLength <= 0xFFFF ? 4 : 10)
        return masked ? base + 4 : base
    }

    /// The number of bytes this header serializes to.
    public var encodedLength: Int {
        Self.encodedLength(payloadLength: Int(clamping: payloadLength), masked: maskingKey != nil)
    }

    /// Writes the header, with the shortest length encoding, to `buffer`.
    public func write(to buffer: inout ByteBuffer) {
        var first: UInt8 = opcode.rawValue
        if fin { first |= 0x80 }
        if rsv1 { first |= 0x40 }
        if rsv2 { first |= 0x20 }
        if rsv3 { first |= 0x10 }
        let maskBit: UInt8 = maskingKey == nil ? 0 : 0x80
        // One integer write per part (big-endian, so the first byte goes first): this runs for
        // every frame sent.
        if payloadLength <= 125 {
            buffer.writeInteger(UInt16(first) << 8 | UInt16(maskBit | UInt8(payloadLength)))
        } else if payloadLength <= 0xFFFF {
            buffer.writeInteger(UInt32(first) << 24 | UInt32(maskBit | 126) << 16 | UInt32(payloadLength))
        } else {
            buffer.writeInteger(UInt16(first) << 8 | UInt16(maskBit | 127))
            buffer.writeInteger(payloadLength)
        }
        if let key = maskingKey {
            // `wireValue`'s little-endian layout is the wire order.
            buffer.writeInteger(key.wireValue, endianness: .little)
        }
    }

    /// How many header bytes are needed, given at least the first two; `nil` if fewer than two
    /// are available.
    static func requiredLength(firstTwo second: UInt8) -> Int {
        let len7 = second & 0x7F
        let base = len7 <= 125 ? 2 : (len7 == 126 ? 4 : 10)
        return second & 0x80 != 0 ? base + 4 : base
    }

    /// Parses a header from the start of `buffer`, consuming it; `nil` (consuming nothing)
    /// when the header is incomplete.
    ///
    /// Throws for a 64-bit length with its most significant bit set (RFC 6455 §5.2). Lengths
    /// that are not minimally encoded are accepted, as the RFC does not forbid them.
    public static func parse(from buffer: inout ByteBuffer) throws(WebSocketProtocolError) -> WebSocketFrameHeader? {
        guard let second = buffer.getInteger(at: buffer.readerIndex &+ 1, as: UInt8.self) else { return nil }
        let needed = requiredLength(firstTwo: second)
        guard buffer.readableBytes >= needed else { return nil }
        let first = buffer.readInteger(as: UInt8.self)!
        buffer.moveReaderIndex(forwardBy: 1)
        let len7 = second & 0x7F
        let length: UInt64
        switch len7 {
        case 126: length = UInt64(buffer.readInteger(as: UInt16.self)!)
        case 127:
            length = buffer.readInteger(as: UInt64.self)!
            if length & (1 << 63) != 0 {
                throw WebSocketProtocolError(.protocolError, "Frame length has its most significant bit set")
            }
        default: length = UInt64(len7)
        }
        var key: WebSocketMaskingKey? = nil
        if second & 0x80 != 0 {
            let (b0, b1, b2, b3) = buffer.readMultipleIntegers(as: (UInt8, UInt8, UInt8, UInt8).self)!
            key = WebSocketMaskingKey(b0, b1, b2, b3)
        }
        return WebSocketFrameHeader(
            fin: first & 0x80 != 0, rsv1: first & 0x40 != 0, rsv2: first & 0x20 != 0,
            rsv3: first & 0x10 != 0, opcode: WebSocketOpcode(uncheckedRawValue: first & 0x0F),
            maskingKey: key, payloadLength: length)
    }
}
