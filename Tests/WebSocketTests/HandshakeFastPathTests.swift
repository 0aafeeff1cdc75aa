import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOPosix
import Testing

@testable import WebSocket

/// The server reads the usual upgrade request with its own strict parser and hands every other
/// request to NIO's HTTP/1.1 decoder. These tests hold the parser to NIO's answers and check
/// both paths over real sockets.
@Suite("Handshake fast path")
struct HandshakeFastPathTests {
    /// What NIO's HTTP/1.1 decoder makes of `bytes`: the head, or nil when it finds no complete
    /// head or reports an error.
    static func nioHead(_ bytes: [UInt8]) -> HTTPRequestHead? {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)))
        defer { _ = try? channel.finish() }
        do {
            try channel.writeInbound(channel.allocator.buffer(bytes: bytes))
            guard case .head(let head)? = try channel.readInbound(as: HTTPServerRequestPart.self) else { return nil }
            return head
        } catch {
            return nil
        }
    }

    static func fields(_ head: HTTPRequestHead) -> [String] {
        head.headers.map { "\($0.name)=\($0.value)" }
    }

    static let browserRequest = """
        GET /chat?room=1&x=%20y HTTP/1.1\r
        Host: 127.0.0.1:8080\r
        Connection: Upgrade\r
        Pragma: no-cache\r
        Cache-Control: no-cache\r
        User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36\r
        Upgrade: websocket\r
        Origin: http://127.0.0.1:8080\r
        Sec-WebSocket-Version: 13\r
        Accept-Encoding: gzip, deflate, br\r
        Accept-Language: en-US,en;q=0.9\r
        Cookie: a=1; b="two"\r
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r
        Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r
        Sec-WebSocket-Protocol: chat, superchat\r
        \r

        """

    /// Requests the fast path must take, each with the head NIO's decoder gives them.
    static let accepted: [String] = [
        browserRequest,
        "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost:x\r\nEmpty:\r\nSpaces:   \r\n\r\n",
        "GET /a HTTP/1.1\r\nX-Tab:\tvalue\twith\ttabs\t\r\nX-Trailing: v   \r\nx-lower: V\r\n\r\n",
        "GET /a HTTP/1.1\r\nDup: 1\r\nDup: 2\r\nDUP: 3\r\n\r\n",
        "GET /#fragment HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /a HTTP/1.1\r\n!#$%&'*+-.^_`|~09AZaz: token characters\r\nQuote: \"q\" ; = , @ [ ] { } ( ) \\ / ?\r\n\r\n",
    ]

    /// Requests outside the subset: NIO decides (some are valid HTTP, some not).
    static let fallback: [String] = [
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        "get / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.0\r\nHost: x\r\n\r\n",
        "GET / HTTP/2.0\r\n\r\n",
        "GET  / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\nHost: x\n\n",
        "GET / HTTP/1.1\r\nHost: x\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
        "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        "GET / HTTP/1.1\r\n: x\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        "GET / HTTP/1.1\r\ncontent-LENGTH: 0\r\n\r\n",
        "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET / HTTP/1.1\r\nUser-Agent: café\r\n\r\n",
        "GET / HTTP/1.1\r\nX: a\u{0}b\r\n\r\n",
        "GET / HTTP/1.1\r\nX: a\u{7F}\r\n\r\n",
        "GET /é HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\r\n\r\n",
        "GET / HTTP/1.1\r\nX: y\r\r\n\r\n",
        "GET / HTTP/1.1\r\n\rx",
        "PUT / HTTP/1.1\r\n\r\n",
        "GET * HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET http://example.com/p?q HTTP/1.1\r\nHost: example.com\r\n\r\n",
        "GET ?/ HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\n" + (0..<65).map { "H\($0): v\r\n" }.joined() + "\r\n",
    ]

    @Test("requests of the subset parse to NIO's head, and every shorter prefix is incomplete")
    func acceptedMatchNIO() throws {
        for request in Self.accepted {
            let bytes = Array(request.utf8)
            guard case .parsed(let head, let length) = bytes.withUnsafeBytes({ HTTPRequestHeadParser.parse($0) }) else {
                Issue.record("not parsed: \(request.debugDescription)")
                continue
            }
            #expect(length == bytes.count)
            let nio = try #require(Self.nioHead(bytes), "NIO rejects \(request.debugDescription)")
            #expect(head.method == nio.method)
            #expect(head.uri == nio.uri)
            #expect(head.version == nio.version)
            #expect(Self.fields(head) == Self.fields(nio), "\(request.debugDescription)")
            for cut in 0..<bytes.count {
                let result = bytes[0..<cut].withUnsafeBytes { HTTPRequestHeadParser.parse($0) }
                #expect(result == .incomplete, "prefix of \(cut) bytes of \(request.debugDescription): \(result)")
            }
        }
    }

    @Test("bytes after the head are not part of it")
    func trailingBytes() {
        let bytes = Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n\u{81}\u{85}abcdefghi".utf8)
        guard case .parsed(_, let length) = bytes.withUnsafeBytes({ HTTPRequestHeadParser.parse($0) }) else {
            Issue.record("not parsed")
            return
        }
        #expect(length == 27)
    }

    @Test("anything outside the subset falls back to NIO's decoder")
    func fallbackCases() {
        for request in Self.fallback {
            let result = Array(request.utf8).withUnsafeBytes { HTTPRequestHeadParser.parse($0) }
            #expect(result == .fallback, "\(request.debugDescription): \(result)")
        }
    }

    @Test("mutated requests: whatever the fast path accepts, NIO parses to the same head")
    func mutationDifferential() throws {
        var random = SystemRandomNumberGenerator()
        let alphabet: [UInt8] = Array(" \t\r\n:;,=\"/?%#<>\\^`{|}*@GETHhtp1.\u{7F}".utf8) + [0, 0x80, 0xC3, 0xFF]
        var parsed = 0
        for iteration in 0..<6_000 {
            var bytes = Array(Self.accepted[iteration % Self.accepted.count].utf8)
            for _ in 0..<Int.random(in: 1...3, using: &random) {
                let index = Int.random(in: 0..<bytes.count, using: &random)
                switch Int.random(in: 0..<3, using: &random) {
                case 0: bytes[index] = alphabet.randomElement(using: &random)!
                case 1: bytes.insert(alphabet.randomElement(using: &random)!, at: index)
                default: bytes.remove(at: index)
                }
            }
            guard case .parsed(let head, let length) = bytes.withUnsafeBytes({ HTTPRequestHeadParser.parse($0) }) else {
                continue
            }
            parsed += 1
            let input = Array(bytes[0..<length])
            let nio = try #require(Self.nioHead(input), "fast path accepted what NIO rejects: \(String(decoding: input, as: UTF8.self).debugDescription)")
            #expect(head.method == nio.method && head.uri == nio.uri && head.version == nio.version)
            #expect(Self.fields(head) == Self.fields(nio), "\(String(decoding: input, as: UTF8.self).debugDescription)")
        }
        // The check means something only if many mutants stayed inside the subset.
        #expect(parsed > 1_000)
    }

    @Test("the request byte by byte, then a frame in the same write as the request's end: both paths upgrade and echo")
    func splitAndTrailingFrame() async throws {
        // Byte by byte is slow on a loaded machine: a handshakeTimeout that cannot cut it off.
        let server = try await TestServer.echo { $0.handshakeTimeout = .seconds(120) }
        defer { Task { await server.stop() } }
        // The fast path, and a request NIO reads (a non-ASCII byte in a value takes it there).
        for extra in ["X-Agent: plain", "X-Agent: caf\u{E9}"] {
            let client = try await RawClient.connect(port: server.port)
            let request = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\(extra)\r\n\r\n"
            var bytes = Array(request.utf8)
            for byte in bytes.dropLast(2) { try await client.send([byte]) }
            bytes = Array(bytes.suffix(2))
            let frame = WebSocketFrame(mask: true, maskingKey: .random(), opcode: .text, binaryPayload: ByteBuffer(string: "right after"))
            bytes += Array(buffer: frame.serialized())
            try await client.send(bytes)
            let head = try await client.readHTTPHead()
            #expect(head.hasPrefix("HTTP/1.1 101"), "\(extra): \(head)")
            #expect(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="))
            let echo = try #require(try await client.readFrame())
            #expect(echo.opcode == .text)
            #expect(echo.binaryPayload == ByteBuffer(string: "right after"))
        }
    }

    @Test("a request NIO's decoder judges malformed still gets 400 and an upgradeError")
    func malformedFallback() async throws {
        let errors = Expectation<String>()
        let server = try await TestServer.echo()
        _ = server.server.onUpgradeError { errors.fulfill(String(describing: $0)) }
        defer { Task { await server.stop() } }
        let client = try await RawClient.connect(port: server.port)
        try await client.send("GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n")
        let head = try await client.readHTTPHead()
        #expect(head.hasPrefix("HTTP/1.1 400"))
        let error = try await errors.value()
        #expect(error.contains("Malformed HTTP request"), "\(error)")
    }

    @Test("headers of a rejection cannot inject lines into the response")
    func rejectionHeadersSanitized() async throws {
        let server = try await TestServer.start(setup: { server in
            server.onRequest { request in
                request.reject(status: 403, reason: "no\r\nX-Injected: 1", extraHeaders: ["X-Mine": "a\r\nX-Injected: 2"])
            }
        })
        defer { Task { await server.stop() } }
        let client = try await RawClient.connect(port: server.port)
        let head = try await client.handshake()
        #expect(head.hasPrefix("HTTP/1.1 403 Forbidden\r\n"))
        #expect(head.contains("X-Mine: aX-Injected: 2\r\n"))
        #expect(!head.contains("\r\nX-Injected"))
        let body = try await client.readAllText()
        #expect(body == "Forbidden")
    }

    @Test("a plain response: the application's Content-Type replaces the default, the framing headers stay the server's")
    func plainResponseHeaders() async throws {
        let server = try await TestServer.start(setup: { server in
            server.setHTTPHandler { head in
                (.ok, ["content-type": "text/html", "Content-Length": "1", "Connection": "keep-alive", "Bad Name": "x", "X-Path": head.uri], "<p>hi</p>")
            }
        })
        defer { Task { await server.stop() } }
        let client = try await RawClient.connect(port: server.port)
        try await client.send("GET /page?q=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        let head = try await client.readHTTPHead()
        let lines = head.split(separator: "\r\n").map(String.init)
        #expect(lines.first == "HTTP/1.1 200 OK")
        #expect(lines.filter { $0.lowercased().hasPrefix("content-type:") } == ["content-type: text/html"])
        #expect(lines.filter { $0.lowercased().hasPrefix("content-length:") } == ["Content-Length: 9"])
        #expect(lines.filter { $0.lowercased().hasPrefix("connection:") } == ["Connection: close"])
        #expect(lines.contains("X-Path: /page?q=1"))
        #expect(!head.contains("Bad Name"))
        #expect(try await client.readAllText() == "<p>hi</p>")
    }

    @Test("accepted sockets have TCP_NODELAY as disableNagleAlgorithm says, and read up to 16 times per wake-up")
    func socketOptions() async throws {
        for nodelay in [true, false] {
            let connects = Expectation<WebSocketConnection>()
            let server = try await TestServer.start({ $0.disableNagleAlgorithm = nodelay; $0.autoAcceptConnections = true }, setup: { server in
                server.onConnect { connects.fulfill($0) }
            })
            let client = try await WebSocketClient().connect(url: server.url)
            let connection = try await connects.value()
            let value = try await connection.socket.getOption(ChannelOptions.socketOption(.tcp_nodelay)).get()
            #expect((value != 0) == nodelay)
            let reads = try await connection.socket.getOption(ChannelOptions.maxMessagesPerRead).get()
            #expect(reads == 16)
            try client.close()
            await server.stop()
        }
    }
}
