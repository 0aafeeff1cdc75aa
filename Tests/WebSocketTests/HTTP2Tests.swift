import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import Testing

@testable import WebSocket

/// WebSockets over HTTP/2 (RFC 8441): our client and our server, over TLS on 127.0.0.1.
@Suite(.timeLimit(.minutes(1)))
struct HTTP2Tests {
    /// A server with HTTP/2 on a TLS listener, echoing every message; `requests` sees every request.
    static func h2Server(
        _ configure: (inout WebSocketServer.Configuration) -> Void = { _ in },
        requests: Collected<WebSocketRequest> = Collected(),
        decide: @escaping @Sendable (WebSocketRequest) -> Bool = { _ in true }
    ) async throws -> (TestServer, Int) {
        let server = try await TestServer.start({ configuration in
            configuration.http2 = true
            configure(&configuration)
        }, setup: { server in
            server.onRequest { request in
                requests.append(request)
                guard decide(request) else { return request.reject(status: 403, reason: "not here") }
                guard let connection = try? request.accept(protocol: request.requestedProtocols.first) else { return }
                connection.onMessage { connection.send($0) }
            }
        })
        let address = try await server.server.listen(host: "127.0.0.1", port: 0, tlsConfiguration: TestTLS.serverConfiguration())
        return (server, address.port!)
    }

    static func clientConfiguration(http2: Bool = true) throws -> WebSocketClient.Configuration {
        var configuration = WebSocketClient.Configuration()
        configuration.tlsConfiguration = try WebSocketClient.tlsConfiguration(caFile: TestTLS.caFile)
        configuration.http2 = http2
        return configuration
    }

    static func echo(_ connection: WebSocketConnection, _ message: WebSocketMessage) async throws -> WebSocketMessage? {
        let reply = Expectation<WebSocketMessage>()
        let token = connection.onMessage { reply.fulfill($0) }
        defer { token.cancel() }
        try await connection.write(message)
        return try await reply.value(10, "echo")
    }

    @Test("three WebSockets from one client share one HTTP/2 connection; closing one leaves the others and the connection")
    func sharedConnection() async throws {
        let requests = Collected<WebSocketRequest>()
        let (server, port) = try await Self.h2Server(requests: requests)
        defer { Task { await server.stop() } }
        let client = WebSocketClient(configuration: try Self.clientConfiguration())
        let url = "wss://localhost:\(port)"
        async let a = client.connect(url: "\(url)/a", protocols: ["chat"])
        async let b = client.connect(url: "\(url)/b")
        async let c = client.connect(url: "\(url)/c?x=1")
        let connections = try await [a, b, c]

        // Server side: three extended CONNECTs, on streams of one TCP connection.
        let seen = requests.all
        #expect(seen.count == 3)
        #expect(seen.allSatisfy { $0.isHTTP2 && $0.httpRequest.method == .CONNECT && $0.key.isEmpty })
        #expect(Set(seen.map(\.resource)) == ["/a", "/b", "/c?x=1"])
        #expect(seen.first { $0.resource == "/a" }?.requestedProtocols == ["chat"])
        #expect(seen.allSatisfy { $0.host == "localhost:\(port)" && $0.remoteAddress == "127.0.0.1" })
        let parents = Set(seen.compactMap { $0.socket.parent.map(ObjectIdentifier.init) })
        #expect(parents.count == 1)
        #expect(server.server.http2ConnectionCount == 1)
        #expect(server.server.connectionCount == 3)
        // Client side: three streams of one connection too.
        #expect(Set(connections.compactMap { $0.socket.parent.map(ObjectIdentifier.init) }).count == 1)
        #expect(connections[0].protocol == "chat")

        // Text, and binary bigger than HTTP/2's initial 64 KiB flow-control window.
        var big = ByteBuffer()
        for i in 0..<300_000 { big.writeInteger(UInt8(truncatingIfNeeded: i &* 7)) }
        for (i, connection) in connections.enumerated() {
            #expect(try await Self.echo(connection, .utf8("hello \(i)")) == .utf8("hello \(i)"))
            #expect(try await Self.echo(connection, .binary(big)) == .binary(big))
        }

        // Closing one WebSocket ends its stream only.
        let closed = Expectation<Int>()
        connections[1].onClose { code, _ in closed.fulfill(code) }
        let closeStarted = ContinuousClock.now
        try connections[1].close()
        #expect(try await closed.value() == 1000)
        // Ended by both END_STREAMs, not by the reset that follows a silent peer after closeTimeout.
        #expect(ContinuousClock.now - closeStarted < .seconds(2))
        let deadline = ContinuousClock.now + .seconds(5)
        while server.server.connectionCount != 2 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(server.server.connectionCount == 2)
        #expect(try await Self.echo(connections[0], .utf8("still here")) == .utf8("still here"))
        #expect(try await Self.echo(connections[2], .utf8("me too")) == .utf8("me too"))
        #expect(server.server.http2ConnectionCount == 1)
        #expect(connections[0].socket.parent?.isActive == true)

        // A fourth WebSocket reuses the same connection.
        let d = try await client.connect(url: "\(url)/d")
        #expect(d.socket.parent.map(ObjectIdentifier.init) == connections[0].socket.parent.map(ObjectIdentifier.init))
        for connection in [connections[0], connections[2], d] { try connection.close() }
    }

    @Test("a refused request over HTTP/2 is a 403 with the reason; the connection serves the next WebSocket")
    func rejectedThenAccepted() async throws {
        let (server, port) = try await Self.h2Server(decide: { $0.resourceURL.path != "/forbidden" })
        defer { Task { await server.stop() } }
        let tls = try WebSocketClient.tlsConfiguration(caFile: TestTLS.caFile)
        let h2 = try await WebSocketHTTP2Connection.connect(host: "localhost", port: port, tlsConfiguration: tls)
        defer { Task { await h2.close() } }
        let client = WebSocketClient()
        let responses = Expectation<WebSocketClient.HTTPResponse>()
        client.onHttpResponse { response, _ in responses.fulfill(response) }
        await #expect(throws: WebSocketError.self) {
            try await client.connect(url: "wss://localhost:\(port)/forbidden", over: h2)
        }
        let response = try await responses.value()
        #expect(response.statusCode == 403)
        #expect(response.head.version.major == 2)
        #expect(response.headers.first(name: "x-websocket-reject-reason") == "not here")
        #expect(String(buffer: response.body) == "Forbidden")
        #expect(h2.isActive)
        let connection = try await client.connect(url: "wss://localhost:\(port)/fine", over: h2)
        #expect(connection.socket.parent === h2.channel)
        #expect(try await Self.echo(connection, .utf8("after a refusal")) == .utf8("after a refusal"))
        try connection.close()
    }

    @Test("subprotocol, origin, cookies and permessage-deflate are negotiated over HTTP/2 as over HTTP/1.1")
    func negotiation() async throws {
        let accepted = Expectation<(WebSocketRequest, WebSocketConnection)>()
        let server = try await TestServer.start({ $0.http2 = true; $0.perMessageDeflate = PerMessageDeflate.Options() }, setup: { server in
            server.onRequest { request in
                guard let connection = try? request.accept(
                    protocol: "b", origin: request.origin, cookies: [WebSocketCookie(name: "session", value: "42")])
                else { return }
                connection.onMessage { connection.send($0) }
                accepted.fulfill((request, connection))
            }
        })
        defer { Task { await server.stop() } }
        let address = try await server.server.listen(host: "127.0.0.1", port: 0, tlsConfiguration: TestTLS.serverConfiguration())
        var configuration = try Self.clientConfiguration()
        configuration.perMessageDeflate = PerMessageDeflate.Options()
        let client = try await WebSocketClient(configuration: configuration).connect(
            url: "wss://localhost:\(address.port!)/n", protocols: ["a", "b"], origin: "https://app.example",
            headers: ["Cookie": "theme=dark", "X-Custom": "yes"])
        let (request, serverSide) = try await accepted.value()
        #expect(request.isHTTP2)
        #expect(request.origin == "https://app.example")
        #expect(request.requestedProtocols == ["a", "b"])
        #expect(request.cookies.map(\.name) == ["theme"])
        #expect(request.httpRequest.headers.first(name: "x-custom") == "yes")
        #expect(client.protocol == "b")
        #expect(client.extensions.map(\.name) == ["permessage-deflate"])
        #expect(serverSide.extensions.map(\.name) == ["permessage-deflate"])
        let text = String(repeating: "compressed over a stream ", count: 200)
        #expect(try await Self.echo(client, .utf8(text)) == .utf8(text))
        try client.close()
    }

    @Test("a TLS server without HTTP/2: the client falls back to HTTP/1.1; the explicit HTTP/2 connection says why it cannot")
    func fallback() async throws {
        let requests = Collected<WebSocketRequest>()
        let (server, port) = try await Self.h2Server({ $0.http2 = false }, requests: requests)
        defer { Task { await server.stop() } }
        let client = WebSocketClient(configuration: try Self.clientConfiguration())
        let connection = try await client.connect(url: "wss://localhost:\(port)/old")
        #expect(requests.all.first?.isHTTP2 == false)
        #expect(try await Self.echo(connection, .utf8("over 1.1")) == .utf8("over 1.1"))
        // Remembered: the second connection goes straight to HTTP/1.1 as well.
        #expect(client.http2PoolState(host: "localhost", port: port) == "http1")
        let second = try await client.connect(url: "wss://localhost:\(port)/again")
        #expect(requests.all.count == 2 && requests.all.allSatisfy { !$0.isHTTP2 })
        try connection.close()
        try second.close()
        do {
            _ = try await WebSocketHTTP2Connection.connect(
                host: "localhost", port: port, tlsConfiguration: try WebSocketClient.tlsConfiguration(caFile: TestTLS.caFile))
            Issue.record("connected over HTTP/2 to a server without it")
        } catch let error as WebSocketError {
            #expect(error.code == .handshakeFailed)
            #expect(error.message.contains("did not choose HTTP/2"))
        }
    }

    @Test("HTTP/2 flow control is backpressure: a paused reader stalls the server's async send, resume lets it finish")
    func flowControlBackpressure() async throws {
        let serverSide = Expectation<WebSocketConnection>()
        let server = try await TestServer.start({ $0.http2 = true; $0.maxReceivedMessageSize = 1 << 24 }, setup: { server in
            server.onRequest { request in
                if let connection = try? request.accept() { serverSide.fulfill(connection) }
            }
        })
        defer { Task { await server.stop() } }
        let address = try await server.server.listen(host: "127.0.0.1", port: 0, tlsConfiguration: TestTLS.serverConfiguration())
        var configuration = try Self.clientConfiguration()
        configuration.maxReceivedFrameSize = 1 << 24
        configuration.maxReceivedMessageSize = 1 << 24
        let client = try await WebSocketClient(configuration: configuration).connect(url: "wss://localhost:\(address.port!)/")
        let received = NIOLockedValueBox(0)
        client.onMessage { message in received.withLockedValue { $0 += message.binaryData?.readableBytes ?? 0 } }
        client.pause()
        let sender = try await serverSide.value()
        let chunk = ByteBuffer(repeating: 0x5A, count: 256 * 1024)
        let sent = NIOLockedValueBox(0)
        let sending = Task {
            for _ in 0..<16 {
                try await sender.write(chunk)
                sent.withLockedValue { $0 += 1 }
            }
        }
        // With the reader paused, the stream's window (64 KiB) and the watermark (64 KiB) stop
        // the sender long before 4 MiB: its stream stops being writable.
        try await waitUntil(20, "the sender's stream to stop being writable") { !sender.socket.isWritable }
        let sentWhilePaused = sent.withLockedValue { $0 }
        #expect(sentWhilePaused < 4)
        #expect(received.withLockedValue { $0 } == 0)
        client.resume()
        try await withTimeout(20, "sending after resume") { try await sending.value }
        let deadline = ContinuousClock.now + .seconds(20)
        while received.withLockedValue({ $0 }) < 16 * chunk.readableBytes && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(received.withLockedValue { $0 } == 16 * chunk.readableBytes)
        try client.close()
    }

    @Test("shutDown closes HTTP/2 WebSockets with 1001 and then their connection")
    func shutDown() async throws {
        let (server, port) = try await Self.h2Server()
        let client = WebSocketClient(configuration: try Self.clientConfiguration())
        let first = try await client.connect(url: "wss://localhost:\(port)/1")
        let second = try await client.connect(url: "wss://localhost:\(port)/2")
        let codes = Expectation<Int>()
        first.onClose { code, _ in codes.fulfill(code) }
        second.onClose { code, _ in codes.fulfill(code) }
        await server.stop()
        #expect(try await codes.value() == 1001)
        #expect(try await codes.value() == 1001)
        let parent = try #require(first.socket.parent)
        try await withTimeout(10, "the HTTP/2 connection to close") { try await parent.closeFuture.get() }
        let deadline = ContinuousClock.now + .seconds(5)
        while server.server.http2ConnectionCount != 0 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(server.server.http2ConnectionCount == 0)
    }

    @Test("a plain HTTP/2 request (curl --http2) gets the server's HTTP handler answer")
    func plainRequestOverHTTP2() async throws {
        let (server, port) = try await Self.h2Server()
        defer { Task { await server.stop() } }
        server.server.setHTTPHandler { head in
            (.ok, ["X-Path": head.uri, "Content-Type": "text/html", "Content-Length": "1"], "hello over \(head.version.major == 2 ? "h2" : "h1")")
        }
        let curl = Process()
        curl.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        curl.arguments = [
            "--silent", "--show-error", "--max-time", "10", "--http2", "--cacert", TestTLS.caFile,
            "--include", "https://localhost:\(port)/page",
        ]
        let out = try OutputFile()
        curl.standardOutput = out.handle
        try curl.run()
        try await curl.exit(within: 20, "curl")
        let text = try out.contents()
        #expect(curl.terminationStatus == 0)
        #expect(text.hasPrefix("HTTP/2 200"))
        #expect(text.lowercased().contains("x-path: /page"))
        // The application's content-type replaces the default; content-length stays the server's.
        let lines = text.lowercased().split(separator: "\r\n").map(String.init)
        #expect(lines.filter { $0.hasPrefix("content-type:") } == ["content-type: text/html"])
        #expect(lines.filter { $0.hasPrefix("content-length:") } == ["content-length: 13"])
        #expect(text.hasSuffix("hello over h2"))
    }

    @Test("an HTTP/2 connection that opens no stream is closed after http2IdleTimeout")
    func idleConnectionClosed() async throws {
        let (server, port) = try await Self.h2Server({ $0.http2IdleTimeout = .milliseconds(500) })
        defer { Task { await server.stop() } }
        let started = ContinuousClock.now
        let h2 = try await WebSocketHTTP2Connection.connect(
            host: "localhost", port: port, tlsConfiguration: try WebSocketClient.tlsConfiguration(caFile: TestTLS.caFile))
        try await withTimeout(10, "the idle HTTP/2 connection to be closed") { try await h2.channel.closeFuture.get() }
        // Not at once: after the idle time (counted from the server's side of the connect).
        #expect(ContinuousClock.now - started >= .milliseconds(450))
    }

    @Test("Python h2 as an independent RFC 8441 client: echo, a malformed stream is reset alone, clean close")
    func pythonH2Client() async throws {
        let requests = Collected<WebSocketRequest>()
        let (server, port) = try await Self.h2Server(requests: requests)
        defer { Task { await server.stop() } }
        let peer = try PeerProcess(
            name: "python h2 client", executable: try Interop.python(),
            arguments: ["-u", Interop.script("python_h2_client.py"), String(port), TestTLS.caFile])
        defer { peer.killByPID() }
        let report = try await peer.finish(30)
        #expect(report["alpn"] as? String == "h2")
        #expect(report["enable_connect_protocol"] as? Int == 1)
        #expect(report["status"] as? String == "200")
        #expect(report["echo1"] as? String == "first over h2 ✓")
        #expect(report["stream3_reset"] as? Int == 1)  // PROTOCOL_ERROR, on that stream only
        #expect(report["echo2"] as? String == "second, after the reset")
        #expect((report["close_reply"] as? [Any])?.first as? Int == 1000)
        #expect(report["stream1_ended"] as? Bool == true)
        #expect(requests.all.first?.origin == "https://python.example")
        #expect(requests.all.first?.isHTTP2 == true)
    }
}
