import NIOCore
import Testing

@testable import WebSocket

/// Each protocol error of SPEC.md sent as raw bytes to a real server: it must answer with a
/// close frame carrying the right code, then close the TCP connection.
@Suite("Protocol violations over a socket")
struct ProtocolViolationTests {
    typealias R = WebSocketReceiverTests

    @Test(
        "the server fails the connection with the right close code",
        arguments: [
            ("unmasked client frame", R.wire([R.text("x")], masked: false), 1002),
            ("reserved opcode 3", R.wire([R.frame(WebSocketOpcode(rawValue: 3)!, [])]), 1002),
            ("reserved control opcode 0xF", R.wire([R.frame(WebSocketOpcode(rawValue: 0xF)!, [])]), 1002),
            ("RSV1 without extension", R.wire([R.frame(.text, [0x41], rsv1: true)]), 1002),
            ("RSV3 without extension", R.wire([WebSocketFrame(rsv3: true, opcode: .binary)]), 1002),
            ("fragmented ping", R.wire([R.frame(.ping, [], fin: false)]), 1002),
            ("ping over 125 bytes", R.wire([R.frame(.ping, Array(repeating: 0, count: 126))]), 1002),
            ("continuation without start", R.wire([R.frame(.continuation, [1])]), 1002),
            ("new message inside a fragmented one", R.wire([R.text("a", fin: false), R.text("b")]), 1002),
            ("close with 1-byte payload", R.wire([R.frame(.connectionClose, [0x03])]), 1002),
            ("close code 1004", R.wire([R.frame(.connectionClose, [0x03, 0xEC])]), 1002),
            ("close code 2999", R.wire([R.frame(.connectionClose, [0x0B, 0xB7])]), 1002),
            ("invalid UTF-8 in close reason", R.wire([R.frame(.connectionClose, [0x03, 0xE8, 0xC0, 0x80])]), 1007),
            ("invalid UTF-8 text", R.wire([R.frame(.text, [0x61, 0xED, 0xA0, 0x80])]), 1007),
            ("invalid UTF-8 across fragments", R.wire([R.frame(.text, [0xF0, 0x9F], fin: false), R.frame(.continuation, [0x41, 0x41])]), 1007),
            ("frame over maxReceivedFrameSize", R.wire([R.frame(.binary, Array(repeating: 0, count: 70_000))]), 1009),
            ("message over maxReceivedMessageSize", R.wire(Array(repeating: R.frame(.binary, Array(repeating: 0, count: 60_000), fin: false), count: 1) + Array(repeating: R.frame(.continuation, Array(repeating: 0, count: 60_000), fin: false), count: 20)), 1009),
            ("64-bit length with the top bit set", [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4], 1002),
        ] as [(String, [UInt8], Int)])
    func violation(name: String, bytes: [UInt8], code: Int) async throws {
        let server = try await TestServer.echo { $0.maxReceivedFrameSize = 65536; $0.maxReceivedMessageSize = 1 << 20 }
        defer { Task { await server.stop() } }
        let raw = try await RawClient.connected(port: server.port)
        try await raw.send(bytes)
        #expect(try await raw.readCloseCode() == code, "\(name)")
        try await raw.waitForEOF(timeout: 6)
    }

    @Test("a valid message before the violation is still echoed first (Autobahn 5.15)")
    func echoBeforeFailure() async throws {
        let server = try await TestServer.echo()
        defer { Task { await server.stop() } }
        let raw = try await RawClient.connected(port: server.port)
        try await raw.send(R.wire([R.text("fine"), R.frame(.continuation, [1])]))
        let echo = try #require(try await raw.readFrame())
        #expect(echo.opcode == .text && echo.binaryPayload == ByteBuffer(string: "fine"))
        #expect(try await raw.readCloseCode() == 1002)
    }

    @Test("a close frame between fragments is answered normally (Autobahn 7.1.5)")
    func closeBetweenFragments() async throws {
        let server = try await TestServer.echo()
        defer { Task { await server.stop() } }
        let raw = try await RawClient.connected(port: server.port)
        try await raw.send(R.wire([R.text("frag", fin: false), R.frame(.connectionClose, [0x03, 0xE8]), R.frame(.continuation, [0x41])]))
        #expect(try await raw.readCloseCode() == 1000)
        try await raw.waitForEOF()
    }
}
