import NIOCore
import Testing

@testable import WebSocket

@Suite("WebSocketReceiver (sans-I/O protocol core)")
struct WebSocketReceiverTests {
    typealias Event = WebSocketReceiver.Event

    static func options(
        server: Bool = true, maxFrame: Int = 1 << 20, maxMessage: Int = 1 << 20, maxFragments: Int = 1000, assemble: Bool = true
    ) -> WebSocketReceiver.Options {
        .init(expectMaskedFrames: server, maxFrameSize: maxFrame, maxMessageSize: maxMessage, maxFragments: maxFragments, assembleFragments: assemble)
    }

    static func wire(_ frames: [WebSocketFrame], masked: Bool = true) -> [UInt8] {
        frames.flatMap { frame -> [UInt8] in
            var frame = frame
            frame.mask = masked
            if masked { frame.maskingKey = WebSocketMaskingKey(0x12, 0x34, 0x56, 0x78) }
            return Array(frame.serialized().readableBytesView)
        }
    }

    static func frame(_ opcode: WebSocketOpcode, _ payload: [UInt8], fin: Bool = true, rsv1: Bool = false) -> WebSocketFrame {
        WebSocketFrame(fin: fin, rsv1: rsv1, opcode: opcode, binaryPayload: ByteBuffer(bytes: payload))
    }

    static func text(_ s: String, fin: Bool = true) -> WebSocketFrame { frame(.text, Array(s.utf8), fin: fin) }

    /// Feeds `bytes` in pieces of `chunk` bytes and collects every event.
    static func events(_ bytes: [UInt8], chunk: Int, options: WebSocketReceiver.Options = options()) -> [Event] {
        var receiver = WebSocketReceiver(options: options)
        var events: [Event] = []
        var start = 0
        while start < bytes.count {
            var buffer = ByteBuffer(bytes: bytes[start..<min(bytes.count, start + chunk)])
            while let event = receiver.next(from: &buffer) { events.append(event) }
            #expect(buffer.readableBytes == 0)
            start += chunk
        }
        return events
    }

    static func failureCode(_ events: [Event]) -> Int? {
        for case .failure(let error) in events { return error.closeCode }
        return nil
    }

    @Test("a message parses identically for every split of the input, down to one byte at a time")
    func everySplit() {
        let payload = (0..<300).map { UInt8(truncatingIfNeeded: $0) }
        let bytes = Self.wire([
            Self.text("héllo 😀"), Self.frame(.binary, payload), Self.frame(.ping, [1, 2, 3]),
            Self.frame(.binary, Array(payload[..<100]), fin: false), Self.frame(.pong, []),
            Self.frame(.continuation, Array(payload[100...]), fin: true),
        ])
        let expected: [Event] = [
            .message(.utf8("héllo 😀")), .message(.binary(ByteBuffer(bytes: payload))), .ping(ByteBuffer(bytes: [1, 2, 3])),
            .pong(ByteBuffer()), .message(.binary(ByteBuffer(bytes: payload))),
        ]
        for chunk in [1, 2, 3, 5, 7, 13, 64, 1000] {
            #expect(Self.events(bytes, chunk: chunk) == expected, "chunk \(chunk)")
        }
    }

    @Test("a client receives unmasked frames and refuses masked ones (1002)")
    func clientRole() {
        let unmasked = Self.wire([Self.text("hi")], masked: false)
        #expect(Self.events(unmasked, chunk: 100, options: Self.options(server: false)) == [.message(.utf8("hi"))])
        let masked = Self.wire([Self.text("hi")], masked: true)
        #expect(Self.failureCode(Self.events(masked, chunk: 100, options: Self.options(server: false))) == 1002)
    }

    @Test(
        "each protocol violation fails with its close code",
        arguments: [
            ("unmasked client frame", wire([text("x")], masked: false), 1002),
            ("reserved opcode 3", wire([frame(WebSocketOpcode(rawValue: 3)!, [])]), 1002),
            ("reserved opcode 0xB", wire([frame(WebSocketOpcode(rawValue: 0xB)!, [])]), 1002),
            ("RSV1 without extension", wire([frame(.text, [0x41], rsv1: true)]), 1002),
            ("fragmented ping", wire([frame(.ping, [], fin: false)]), 1002),
            ("ping over 125 bytes", wire([frame(.ping, Array(repeating: 0, count: 126))]), 1002),
            ("continuation without start", wire([frame(.continuation, [1])]), 1002),
            ("new message inside a fragmented one", wire([text("a", fin: false), text("b")]), 1002),
            ("close with 1-byte payload", wire([frame(.connectionClose, [0x03])]), 1002),
            ("close code 999", wire([frame(.connectionClose, [0x03, 0xE7])]), 1002),
            ("close code 1005 on the wire", wire([frame(.connectionClose, [0x03, 0xED])]), 1002),
            ("close code 5000", wire([frame(.connectionClose, [0x13, 0x88])]), 1002),
            ("invalid UTF-8 in close reason", wire([frame(.connectionClose, [0x03, 0xE8, 0xFF])]), 1007),
            ("invalid UTF-8 text", wire([frame(.text, [0x61, 0xC0, 0x80])]), 1007),
            ("text ending inside a code point", wire([frame(.text, [0xE2, 0x82])]), 1007),
            ("invalid UTF-8 across fragments", wire([frame(.text, [0xCE], fin: false), frame(.continuation, [0x41])]), 1007),
        ] as [(String, [UInt8], Int)])
    func violations(name: String, bytes: [UInt8], code: Int) {
        for chunk in [1, 4, 1000] {
            #expect(Self.failureCode(Self.events(bytes, chunk: chunk)) == code, "\(name), chunk \(chunk)")
        }
    }

    @Test("invalid UTF-8 fails as soon as the bad byte arrives, before the frame is complete")
    func failFastInsideFrame() {
        var receiver = WebSocketReceiver(options: Self.options())
        let bytes = Self.wire([Self.frame(.text, Array("good".utf8) + [0xFF] + Array(repeating: 0x41, count: 1000))])
        var head = ByteBuffer(bytes: bytes.prefix(6 + 4 + 5))  // 4-byte header with 16-bit length, key, 5 payload bytes
        guard case .failure(let error)? = receiver.next(from: &head) else {
            Issue.record("no failure after the invalid byte")
            return
        }
        #expect(error.closeCode == 1007)
    }

    @Test("a frame over maxReceivedFrameSize fails with 1009 from its header alone")
    func frameTooBig() {
        var receiver = WebSocketReceiver(options: Self.options(maxFrame: 1000))
        let bytes = Self.wire([Self.frame(.binary, Array(repeating: 1, count: 1001))])
        var header = ByteBuffer(bytes: bytes.prefix(8))  // header and key only: no payload buffered
        guard case .failure(let error)? = receiver.next(from: &header) else {
            Issue.record("expected a failure from the header")
            return
        }
        #expect(error.closeCode == 1009)
    }

    @Test("a message over maxReceivedMessageSize fails with 1009 at the header of the fragment that crosses it")
    func messageTooBig() {
        let bytes = Self.wire([
            Self.frame(.binary, Array(repeating: 1, count: 600), fin: false),
            Self.frame(.continuation, Array(repeating: 1, count: 600)),
        ])
        var receiver = WebSocketReceiver(options: Self.options(maxFrame: 1000, maxMessage: 1000))
        var firstAndHeader = ByteBuffer(bytes: bytes.prefix(8 + 600 + 8))
        #expect(receiver.next(from: &firstAndHeader) == .failure(WebSocketProtocolError(1009, "Message size of at least 1200 bytes exceeds maximum accepted message size of 1000")))
    }

    @Test("many empty fragments are capped (1009)")
    func fragmentCap() {
        var frames = [Self.text("", fin: false)]
        frames += Array(repeating: Self.frame(.continuation, [], fin: false), count: 20)
        #expect(Self.failureCode(Self.events(Self.wire(frames), chunk: 1000, options: Self.options(maxFragments: 10))) == 1009)
    }

    @Test("control frames may come between fragments")
    func controlBetweenFragments() {
        let bytes = Self.wire([Self.text("ab", fin: false), Self.frame(.ping, [9]), Self.frame(.continuation, Array("cd".utf8))])
        #expect(Self.events(bytes, chunk: 3) == [.ping(ByteBuffer(bytes: [9])), .message(.utf8("abcd"))])
    }

    @Test("a close frame ends the input: its code and reason, 1005 when empty; later bytes are ignored")
    func closeFrames() {
        let withReason = Self.wire([Self.frame(.connectionClose, [0x0F, 0xA0] + Array("bye".utf8)), Self.text("ignored")])
        #expect(Self.events(withReason, chunk: 2) == [.close(code: 4000, reason: "bye")])
        #expect(Self.events(Self.wire([Self.frame(.connectionClose, [])]), chunk: 1) == [.close(code: 1005, reason: "")])
    }

    @Test("with assembleFragments off, every data frame is a frame event; single-frame messages also a message")
    func framesWhenNotAssembling() {
        let bytes = Self.wire([Self.text("ab", fin: false), Self.frame(.continuation, Array("cd".utf8)), Self.frame(.binary, [7])])
        let events = Self.events(bytes, chunk: 1000, options: Self.options(assemble: false))
        guard events.count == 4, case .frame(let first) = events[0], case .frame(let second) = events[1],
            case .frame(let third) = events[2]
        else {
            Issue.record("unexpected events \(events)")
            return
        }
        #expect(first.opcode == .text && !first.fin && first.binaryPayload == ByteBuffer(string: "ab"))
        #expect(second.opcode == .continuation && second.fin && second.binaryPayload == ByteBuffer(string: "cd"))
        #expect(third.opcode == .binary && third.mask)
        #expect(events[3] == .message(.binary(ByteBuffer(bytes: [7]))))
    }
}
