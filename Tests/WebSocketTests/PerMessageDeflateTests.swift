import CompressNIO
import NIOCore
import Testing

@testable import WebSocket

@Suite("permessage-deflate")
struct PerMessageDeflateTests {
    static func offer(_ header: String) -> [WebSocketExtension] { WebSocketExtension.parse([header]) }

    @Test(
        "server negotiation: every parameter, and offers that must be declined",
        arguments: [
            ("permessage-deflate", PerMessageDeflate.Options(), "permessage-deflate"),
            ("permessage-deflate; client_max_window_bits", .init(), "permessage-deflate"),
            ("permessage-deflate; client_max_window_bits=10", .init(), "permessage-deflate; client_max_window_bits=10"),
            ("permessage-deflate; server_max_window_bits=11", .init(), "permessage-deflate; server_max_window_bits=11"),
            ("permessage-deflate; server_no_context_takeover", .init(), "permessage-deflate; server_no_context_takeover"),
            ("permessage-deflate; client_no_context_takeover", .init(), "permessage-deflate; client_no_context_takeover"),
            ("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9; client_max_window_bits=12", .init(),
             "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9; client_max_window_bits=12"),
            // The server's own preferences.
            ("permessage-deflate; client_max_window_bits", { var o = PerMessageDeflate.Options(); o.clientMaxWindowBits = 10; o.serverNoContextTakeover = true; return o }(),
             "permessage-deflate; server_no_context_takeover; client_max_window_bits=10"),
            ("permessage-deflate", { var o = PerMessageDeflate.Options(); o.serverMaxWindowBits = 12; o.clientMaxWindowBits = 10; return o }(),
             "permessage-deflate; server_max_window_bits=12"),
            ("permessage-deflate; server_max_window_bits=10", { var o = PerMessageDeflate.Options(); o.serverMaxWindowBits = 12; return o }(),
             "permessage-deflate; server_max_window_bits=10"),
            // Invalid or duplicate parameters: that offer is declined, the next one taken.
            ("permessage-deflate; server_max_window_bits=16, permessage-deflate", .init(), "permessage-deflate"),
            ("permessage-deflate; server_max_window_bits, permessage-deflate; client_no_context_takeover", .init(), "permessage-deflate; client_no_context_takeover"),
            ("permessage-deflate; client_max_window_bits=7", .init(), nil),
            ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", .init(), nil),
            ("permessage-deflate; server_no_context_takeover=1", .init(), nil),
            ("permessage-deflate; unknown_parameter", .init(), nil),
            ("permessage-deflate; server_max_window_bits=010", .init(), nil),
            ("x-webkit-deflate-frame", .init(), nil),
        ] as [(String, PerMessageDeflate.Options, String?)])
    func serverNegotiation(offer: String, options: PerMessageDeflate.Options, expected: String?) {
        let (header, codecs) = ([PerMessageDeflate(options)] as [any WebSocketExtensionNegotiator]).negotiate(offers: Self.offer(offer))
        #expect(header == expected)
        #expect(codecs.count == (expected == nil ? 0 : 1))
    }

    @Test(
        "client validation of the server's answer",
        arguments: [
            ("permessage-deflate", PerMessageDeflate.Options(), true),
            ("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=11", .init(), true),
            ("permessage-deflate; client_max_window_bits", .init(), false),
            ("permessage-deflate; client_max_window_bits=12", { var o = PerMessageDeflate.Options(); o.clientMaxWindowBits = 10; return o }(), false),
            ("permessage-deflate; server_max_window_bits=12", { var o = PerMessageDeflate.Options(); o.serverMaxWindowBits = 10; return o }(), false),
            ("permessage-deflate", { var o = PerMessageDeflate.Options(); o.serverMaxWindowBits = 10; return o }(), false),
            ("permessage-deflate", { var o = PerMessageDeflate.Options(); o.serverNoContextTakeover = true; return o }(), false),
            ("permessage-deflate; server_max_window_bits=7", .init(), false),
            ("permessage-deflate; bogus", .init(), false),
            ("permessage-deflate; client_no_context_takeover; client_no_context_takeover", .init(), false),
        ] as [(String, PerMessageDeflate.Options, Bool)])
    func clientValidation(answer: String, options: PerMessageDeflate.Options, ok: Bool) {
        let result = Result { try PerMessageDeflate(options).accepted(response: Self.offer(answer)[0]) }
        let accepted = (try? result.get()) != nil
        #expect(accepted == ok, "\(answer)")
    }

    @Test("the client's offer carries its preferences")
    func clientOffer() {
        var options = PerMessageDeflate.Options()
        #expect(PerMessageDeflate(options).makeOffers().map(\.description) == ["permessage-deflate; client_max_window_bits"])
        options.serverNoContextTakeover = true
        options.clientNoContextTakeover = true
        options.serverMaxWindowBits = 10
        options.clientMaxWindowBits = 12
        #expect(PerMessageDeflate(options).makeOffers().map(\.description) == [
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=12"
        ])
    }

    /// A server codec and a client codec agreed from one offer.
    static func pair(_ offer: String, options: PerMessageDeflate.Options = .init()) throws -> (server: any WebSocketExtensionCodec, client: any WebSocketExtensionCodec) {
        var options = options
        options.threshold = 0
        let (response, server) = try #require(PerMessageDeflate(options).accept(offers: Self.offer(offer)))
        let client = try PerMessageDeflate(options).accepted(response: response)
        return (server, client)
    }

    static func roundTrip(_ from: any WebSocketExtensionCodec, _ to: any WebSocketExtensionCodec, _ text: String) throws -> (wireSize: Int, decoded: String) {
        let (encoded, rsv) = try #require(try from.encode(message: ByteBuffer(string: text), opcode: .text, allowed: true, allocator: .init()))
        #expect(rsv == 0x40)
        #expect(to.startDecoding(reservedBits: rsv))
        var input = encoded
        var output = ByteBuffer()
        try to.decode(&input, endOfMessage: true, into: &output, limit: 1 << 20)
        return (encoded.readableBytes, String(buffer: output))
    }

    @Test("context takeover makes a repeated message smaller; no context takeover does not")
    func contextTakeover() throws {
        let text = String(repeating: "The quick brown fox jumps over the lazy dog. ", count: 20) + "😀 end"
        let (server, client) = try Self.pair("permessage-deflate")
        let first = try Self.roundTrip(server, client, text)
        let second = try Self.roundTrip(server, client, text)
        #expect(first.decoded == text && second.decoded == text)
        #expect(second.wireSize < first.wireSize / 2)
        let back = try Self.roundTrip(client, server, text)
        #expect(back.decoded == text)

        let (s2, c2) = try Self.pair("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        let a = try Self.roundTrip(s2, c2, text)
        let b = try Self.roundTrip(s2, c2, text)
        #expect(a.wireSize == b.wireSize)
        #expect(try Self.roundTrip(c2, s2, text).decoded == text)
        #expect(try Self.roundTrip(c2, s2, text).decoded == text)
    }

    @Test("an 8-bit window limit sends messages uncompressed (zlib cannot make such streams)")
    func eightBitWindow() throws {
        let (server, _) = try Self.pair("permessage-deflate; server_max_window_bits=8")
        #expect(try server.encode(message: ByteBuffer(string: String(repeating: "a", count: 500)), opcode: .text, allowed: true, allocator: .init()) == nil)
    }

    @Test("messages below the threshold, and opted out, go out uncompressed")
    func threshold() throws {
        let (response, server) = try #require(PerMessageDeflate().accept(offers: Self.offer("permessage-deflate")))
        _ = response
        #expect(try server.encode(message: ByteBuffer(string: "tiny"), opcode: .text, allowed: true, allocator: .init()) == nil)
        let big = ByteBuffer(string: String(repeating: "b", count: 1000))
        #expect(try server.encode(message: big, opcode: .text, allowed: false, allocator: .init()) == nil)
        #expect(try server.encode(message: big, opcode: .text, allowed: true, allocator: .init()) != nil)
    }

    /// `count` zero bytes, raw-deflated and without the 00 00 FF FF tail: a deflate bomb.
    static func bomb(_ count: Int) throws -> ByteBuffer {
        let (_, client) = try pair("permessage-deflate")
        return try #require(try client.encode(message: ByteBuffer(repeating: 0, count: count), opcode: .binary, allowed: true, allocator: .init())).payload
    }

    @Test("a deflate bomb fails with 1009 having allocated no more than about the limit")
    func bombUnit() throws {
        let payload = try Self.bomb(64 << 20)
        #expect(payload.readableBytes < 100_000)
        let (server, _) = try Self.pair("permessage-deflate")
        var input = payload
        var output = ByteBuffer()
        let limit = 1 << 20
        do {
            try server.decode(&input, endOfMessage: true, into: &output, limit: limit)
            Issue.record("the bomb was inflated")
        } catch let error as WebSocketProtocolError {
            #expect(error.closeCode == 1009)
        }
        #expect(output.capacity <= limit + 64 * 1024, "allocated \(output.capacity) bytes for a \(limit)-byte limit")
    }

    /// A server with permessage-deflate, its connections handed to the test.
    static func deflateServer(_ configure: @escaping (inout WebSocketServer.Configuration) -> Void = { _ in }) async throws -> (TestServer, Expectation<WebSocketConnection>) {
        let accepted = Expectation<WebSocketConnection>()
        let server = try await TestServer.start({ configuration in
            configuration.perMessageDeflate = PerMessageDeflate.Options()
            configure(&configuration)
        }, setup: { server in
            server.onRequest { request in
                guard let connection = try? request.accept() else { return }
                connection.onMessage { connection.send($0) }
                accepted.fulfill(connection)
            }
        })
        return (server, accepted)
    }

    /// A raw client that negotiated permessage-deflate, and its codec.
    static func deflateClient(_ server: TestServer) async throws -> (RawClient, any WebSocketExtensionCodec) {
        let raw = try await RawClient.connect(port: server.port)
        let response = try await raw.handshake(headers: ["Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"])
        let line = try #require(response.split(separator: "\r\n").first { $0.lowercased().hasPrefix("sec-websocket-extensions:") })
        let answer = WebSocketExtension.parse([String(line.split(separator: ":", maxSplits: 1)[1])])[0]
        var options = PerMessageDeflate.Options()
        options.threshold = 0
        return (raw, try PerMessageDeflate(options).accepted(response: answer))
    }

    @Test("over a socket: compressed messages in, compressed echo out, extensions reported")
    func overSocket() async throws {
        let (server, accepted) = try await Self.deflateServer()
        defer { Task { await server.stop() } }
        let (raw, codec) = try await Self.deflateClient(server)
        let connection = try await accepted.value()
        #expect(connection.extensions.map(\.name) == ["permessage-deflate"])
        let text = String(repeating: "compress me please ", count: 50) + "✓"
        let (payload, _) = try #require(try codec.encode(message: ByteBuffer(string: text), opcode: .text, allowed: true, allocator: .init()))
        // Fragmented: RSV1 on the first frame only.
        let half = payload.readableBytes / 2
        try await raw.send(frame: WebSocketFrame(fin: false, rsv1: true, opcode: .text, binaryPayload: payload.getSlice(at: payload.readerIndex, length: half)!))
        try await raw.send(frame: WebSocketFrame(fin: true, opcode: .continuation, binaryPayload: payload.getSlice(at: payload.readerIndex + half, length: payload.readableBytes - half)!))
        let echo = try #require(try await raw.readFrame())
        #expect(echo.rsv1 && echo.opcode == .text)
        #expect(echo.length < text.utf8.count)
        var input = echo.binaryPayload
        var output = ByteBuffer()
        #expect(codec.startDecoding(reservedBits: 0x40))
        try codec.decode(&input, endOfMessage: true, into: &output, limit: 1 << 20)
        #expect(String(buffer: output) == text)
        // Uncompressed messages still work, and opt-out sends them plain.
        try await raw.send(frame: WebSocketFrame(opcode: .text, binaryPayload: ByteBuffer(string: "plain")))
        let plain = try #require(try await raw.readFrame())
        #expect(!plain.rsv1 && plain.binaryPayload == ByteBuffer(string: "plain"))
        connection.sendUTF(String(repeating: "z", count: 500), compress: false, completion: nil)
        let optedOut = try #require(try await raw.readFrame())
        #expect(!optedOut.rsv1 && optedOut.length == 500)
    }

    @Test(
        "over a socket: bomb 1009, bad data 1007, RSV1 on a continuation or control frame 1002",
        arguments: ["bomb", "garbage", "rsv1-continuation", "rsv1-ping"])
    func failures(kind: String) async throws {
        let (server, _) = try await Self.deflateServer { $0.maxReceivedMessageSize = 1 << 20 }
        defer { Task { await server.stop() } }
        let (raw, _) = try await Self.deflateClient(server)
        switch kind {
        case "bomb":
            try await raw.send(frame: WebSocketFrame(rsv1: true, opcode: .binary, binaryPayload: try Self.bomb(32 << 20)))
            #expect(try await raw.readCloseCode() == 1009)
        case "garbage":
            try await raw.send(frame: WebSocketFrame(rsv1: true, opcode: .binary, binaryPayload: ByteBuffer(bytes: [0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x12])))
            #expect(try await raw.readCloseCode() == 1007)
        case "rsv1-continuation":
            try await raw.send(frame: WebSocketFrame(fin: false, opcode: .text, binaryPayload: ByteBuffer(string: "a")))
            try await raw.send(frame: WebSocketFrame(fin: true, rsv1: true, opcode: .continuation, binaryPayload: ByteBuffer(string: "b")))
            #expect(try await raw.readCloseCode() == 1002)
        default:
            try await raw.send(frame: WebSocketFrame(rsv1: true, opcode: .ping))
            #expect(try await raw.readCloseCode() == 1002)
        }
    }

    @Test("Python websockets (compression on, as by default) against our server: text and 1 MiB binary, compressed")
    func pythonClientCompressed() async throws {
        let connects = Expectation<WebSocketConnection>()
        let server = try await TestServer.echo { configuration in
            Interop.largeLimits(&configuration)
            configuration.perMessageDeflate = PerMessageDeflate.Options()
        }
        server.server.onConnect { connects.fulfill($0) }
        defer { Task { await server.stop() } }
        for scenario in ["text+deflate", "binary+deflate"] {
            let report = try await Interop.runPythonClient(url: server.url, scenario: scenario)
            #expect((report["extensions"] as? String)?.hasPrefix("permessage-deflate") == true, "\(report)")
            #expect(report["close_code"] as? Int == 1000)
            #expect(try await connects.value().extensions.map(\.name) == ["permessage-deflate"])
        }
    }
}
