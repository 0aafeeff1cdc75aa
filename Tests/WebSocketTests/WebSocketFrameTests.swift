import NIOCore
import Testing

@testable import WebSocket

@Suite("WebSocketFrame codec")
struct WebSocketFrameTests {
    static let lengths = [0, 1, 125, 126, 127, 1000, 65535, 65536, 70000]

    func payload(_ length: Int) -> ByteBuffer {
        ByteBuffer(bytes: (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) })
    }

    @Test("round trip for every length class, masked and not", arguments: lengths, [false, true])
    func roundTrip(length: Int, masked: Bool) throws {
        let frame = WebSocketFrame(
            fin: length % 2 == 0, rsv1: true, rsv3: true, mask: masked,
            maskingKey: masked ? WebSocketMaskingKey(1, 2, 3, 4) : nil, opcode: .binary, binaryPayload: payload(length))
        var wire = frame.serialized()
        let expectedHeader = (length <= 125 ? 2 : length <= 0xFFFF ? 4 : 10) + (masked ? 4 : 0)
        #expect(wire.readableBytes == expectedHeader + length)
        #expect(frame.headerLength == expectedHeader)
        let parsed = try #require(try WebSocketFrame.parse(from: &wire))
        #expect(parsed == frame)
        #expect(parsed.length == length)
        #expect(wire.readableBytes == 0)
    }

    @Test("the length field uses 7, 16 or 64 bits as RFC 6455 §5.2 says")
    func lengthEncoding() {
        let bytes = { (length: Int) in Array(WebSocketFrame(opcode: .text, binaryPayload: self.payload(length)).serialized().readableBytesView.prefix(10)) }
        #expect(bytes(125)[1] == 125)
        #expect(Array(bytes(126)[1...3]) == [126, 0, 126])
        #expect(Array(bytes(65536)[1...9]) == [127, 0, 0, 0, 0, 0, 1, 0, 0])
        #expect(bytes(0)[0] == 0x81)
    }

    @Test("a masked frame carries masked bytes on the wire")
    func maskedOnWire() {
        let key = WebSocketMaskingKey(0x37, 0xFA, 0x21, 0x3D)
        let frame = WebSocketFrame(mask: true, maskingKey: key, opcode: .text, binaryPayload: ByteBuffer(string: "Hello"))
        // RFC 6455 §5.7: a masked "Hello".
        #expect(Array(frame.serialized().readableBytesView) == [0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58])
    }

    @Test("an incomplete frame parses to nil and consumes nothing")
    func incomplete() throws {
        let wire = WebSocketFrame(opcode: .binary, binaryPayload: payload(300)).serialized()
        for cut in [0, 1, 2, 3, 4, 303] {
            var partial = wire.getSlice(at: 0, length: cut)!
            #expect(try WebSocketFrame.parse(from: &partial) == nil)
            #expect(partial.readableBytes == cut)
        }
    }

    @Test("a 64-bit length with the top bit set is a protocol error")
    func hugeLength() {
        var wire = ByteBuffer(bytes: [0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 1])
        #expect(throws: WebSocketProtocolError.self) { try WebSocketFrame.parse(from: &wire) }
    }
}

@Suite("Masking")
struct MaskingTests {
    /// The byte-at-a-time definition of RFC 6455 §5.3.
    func reference(_ bytes: [UInt8], _ key: WebSocketMaskingKey, offset: Int) -> [UInt8] {
        bytes.enumerated().map { $0.element ^ key[($0.offset + offset) % 4] }
    }

    @Test("word-wise masking equals the byte-by-byte reference at every length and offset")
    func matchesReference() {
        let key = WebSocketMaskingKey(0xA1, 0x5B, 0x03, 0xFE)
        for length in Array(0...70) + [255, 1024, 4097] {
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 5) }
            for offset in 0..<4 {
                var masked = bytes
                key.apply(to: &masked, offset: offset)
                #expect(masked == reference(bytes, key, offset: offset), "length \(length) offset \(offset)")
            }
        }
    }

    @Test("masking a payload in pieces equals masking it whole")
    func piecewise() {
        let key = WebSocketMaskingKey.random()
        let bytes = (0..<1000).map { UInt8(truncatingIfNeeded: $0) }
        var whole = bytes
        key.apply(to: &whole)
        var pieces: [UInt8] = []
        var start = 0
        for size in [1, 2, 3, 7, 8, 9, 31, 33, 100, 806] {
            var piece = Array(bytes[start..<start + size])
            key.apply(to: &piece, offset: start)
            pieces += piece
            start += size
        }
        #expect(pieces == whole)
    }

    @Test("masking is on unaligned buffers too")
    func unaligned() {
        let key = WebSocketMaskingKey(1, 2, 3, 4)
        let bytes = (0..<67).map { UInt8($0) }
        var buffer = ByteBuffer(bytes: [0, 0, 0] + bytes)
        buffer.moveReaderIndex(forwardBy: 3)
        var out = ByteBuffer()
        out.writeInteger(UInt8(9))
        out.writeMaskedPayload(buffer.readableBytesView, key: key, offset: 0)
        #expect(Array(out.readableBytesView.dropFirst()) == reference(bytes, key, offset: 0))
    }
}
