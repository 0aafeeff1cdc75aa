import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Testing

@testable import WebSocket

/// Runs `body` with an echo server (8 MiB limits) and always stops it.
private func withEchoServer(
    _ configure: @escaping (inout WebSocketServer.Configuration) -> Void = { _ in },
    _ body: (TestServer) async throws -> Void
) async throws {
    let server = try await TestServer.echo {
        $0.maxReceivedMessageSize = 8 << 20
        configure(&$0)
    }
    do {
        try await body(server)
    } catch {
        await server.stop()
        throw error
    }
    await server.stop()
}

/// Connects, runs `body` with the connection and its inbox, then drops the connection if open.
private func withConnection(
    _ url: String, client: WebSocketClient = WebSocketClient(), protocols: [String] = [],
    requestOptions: WebSocketClient.RequestOptions? = nil,
    _ body: (WebSocketConnection, Expectation<WebSocketMessage>) async throws -> Void
) async throws {
    let connection = try await withTimeout(10, "connecting to \(url)") {
        try await client.connect(url: url, protocols: protocols, requestOptions: requestOptions)
    }
    defer { if connection.connected { connection.drop(reasonCode: 1001, skipCloseFrame: true) } }
    let inbox = Expectation<WebSocketMessage>()
    connection.onMessage { inbox.fulfill($0) }
    try await body(connection, inbox)
}

/// Sends a text and checks that it comes back.
private func expectEcho(_ connection: WebSocketConnection, _ inbox: Expectation<WebSocketMessage>, _ text: String = "ping ✓") async throws {
    try await connection.write(text)
    #expect(try await inbox.value(10, "the echo").utf8Data == text)
}

/// Runs `body` with a port of 127.0.0.1 that refuses connections for as long as it runs: a socket
/// bound to it that never listens (a connect gets a reset: ECONNREFUSED). Held bound, so no other
/// test running in parallel can take the port meanwhile (a port bound and closed again could be
/// taken by another test's listener, and the connect would then reach that one instead).
private func withRefusingPort<T>(_ body: (Int) async throws -> T) async throws -> T {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    try #require(fd >= 0, "socket(): errno \(errno)")
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    try #require(bound == 0, "bind(): errno \(errno)")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let named = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    try #require(named == 0, "getsockname(): errno \(errno)")
    return try await body(Int(UInt16(bigEndian: address.sin_port)))
}

@Suite("WebSocketClient against our server")
struct ClientEchoTests {
    @Test("text, empty text, emoji and binary echo; connect event carries the connection")
    func textAndBinary() async throws {
        try await withEchoServer { server in
            let client = WebSocketClient()
            let connected = Expectation<WebSocketConnection>()
            client.onConnect { connected.fulfill($0) }
            try await withConnection(server.url, client: client) { connection, inbox in
                #expect(try await connected.value() === connection)
                for text in ["hello", "", "héllo 🌍 你好"] { try await expectEcho(connection, inbox, text) }
                let bytes: [UInt8] = [0, 1, 2, 255, 254]
                try await connection.write(ByteBuffer(bytes: bytes))
                let echo = try await inbox.value(10, "the binary echo")
                #expect(echo.type == .binary)
                #expect(echo.binaryData.map { Array($0.readableBytesView) } == bytes)
            }
        }
    }

    @Test("a 5 MiB binary message goes out fragmented and comes back whole")
    func fiveMiB() async throws {
        try await withEchoServer { server in
            try await withConnection(server.url) { connection, inbox in
                var buffer = ByteBuffer()
                buffer.reserveCapacity(5 << 20)
                for i in 0..<(5 << 18) { buffer.writeInteger(UInt32(truncatingIfNeeded: i &* 2_654_435_761)) }
                try await connection.write(buffer)
                let echo = try await inbox.value(30, "the 5 MiB echo")
                #expect(echo.binaryData?.readableBytes == 5 << 20)
                #expect(echo.binaryData == buffer)
            }
        }
    }

    @Test("fragmented both ways: small thresholds, assembled; with assembleFragments off the client sees frames")
    func fragmented() async throws {
        try await withEchoServer({ $0.fragmentationThreshold = 7 }) { server in
            var configuration = WebSocketClient.Configuration()
            configuration.fragmentationThreshold = 5
            try await withConnection(server.url, client: WebSocketClient(configuration: configuration)) { connection, inbox in
                let text = String(repeating: "fragmenté ", count: 20)
                try await expectEcho(connection, inbox, text)
            }
            configuration.assembleFragments = false
            let connection = try await WebSocketClient(configuration: configuration).connect(url: server.url)
            defer { connection.drop(skipCloseFrame: true) }
            let frames = Expectation<WebSocketFrame>()
            connection.onFrame { frames.fulfill($0) }
            try await connection.write("abcdefghijklmnop")  // 16 bytes: server echoes 7 + 7 + 2
            let first = try await frames.value()
            #expect(first.opcode == .text && !first.fin && first.binaryPayload.readableBytes == 7)
            let second = try await frames.value()
            #expect(second.opcode == .continuation && !second.fin)
            let third = try await frames.value()
            #expect(third.opcode == .continuation && third.fin && third.binaryPayload.readableBytes == 2)
        }
    }

    @Test("ping/pong both ways: our ping gets a pong with its payload; the server's ping gets our automatic pong")
    func pingPong() async throws {
        let serverSide = Expectation<WebSocketConnection>()
        try await withEchoServer { server in
            server.server.onConnect { serverSide.fulfill($0) }
            try await withConnection(server.url) { connection, inbox in
                let pongs = Expectation<[UInt8]>()
                connection.onPong { pongs.fulfill(Array($0.readableBytesView)) }
                try connection.ping("client ping")
                #expect(try await pongs.value() == Array("client ping".utf8))

                let serverConnection = try await serverSide.value()
                let serverPongs = Expectation<[UInt8]>()
                let clientPings = Expectation<[UInt8]>()
                connection.onPing { _, data in clientPings.fulfill(Array(data.readableBytesView)) }
                serverConnection.onPong { serverPongs.fulfill(Array($0.readableBytesView)) }
                try serverConnection.ping("server ping")
                #expect(try await clientPings.value() == Array("server ping".utf8))
                #expect(try await serverPongs.value() == Array("server ping".utf8))
                #expect(throws: WebSocketError.self) { try connection.ping(ByteBuffer(repeating: 0, count: 126)) }
            }
        }
    }

    @Test("IPv4, IPv6 literal and host name URLs; path, query and Host header")
    func addresses() async throws {
        let server = WebSocketServer()
        let requests = Expectation<(String, String?)>()
        server.onRequest { request in
            requests.fulfill((request.resource, request.httpRequest.headers.first(name: "host")))
            guard let connection = try? request.accept() else { return }
            connection.onMessage { connection.send($0) }
        }
        let v4 = try await server.listen(host: "127.0.0.1", port: 0)
        let v6 = try await server.listen(host: "::1", port: 0)
        defer { Task { await server.shutDown() } }
        for url in ["ws://127.0.0.1:\(v4.port!)/a?b=c", "ws://[::1]:\(v6.port!)/six", "ws://localhost:\(v4.port!)/name"] {
            try await withConnection(url) { connection, inbox in
                try await expectEcho(connection, inbox)
            }
        }
        let seen = [try await requests.value(), try await requests.value(), try await requests.value()]
        #expect(seen.map(\.0) == ["/a?b=c", "/six", "/name"])
        #expect(seen.map(\.1) == ["127.0.0.1:\(v4.port!)", "[::1]:\(v6.port!)", "localhost:\(v4.port!)"])
    }

    @Test("request headers: origin, extra headers, URL credentials as Basic auth, version 8 origin header")
    func requestHeaders() async throws {
        let raw = try await RawHTTPServer.upgrading()
        defer { Task { await raw.stop() } }
        let first = try await WebSocketClient().connect(
            url: "ws://alice:s3cret@127.0.0.1:\(raw.port)/x", protocols: ["chat", "superchat"], origin: "http://example.test",
            headers: ["X-Extra": "1"])
        first.drop(skipCloseFrame: true)
        var configuration = WebSocketClient.Configuration()
        configuration.webSocketVersion = 8
        let second = try await WebSocketClient(configuration: configuration).connect(url: "ws://127.0.0.1:\(raw.port)/", origin: "http://old.test")
        second.drop(skipCloseFrame: true)
        let heads = raw.heads.all
        #expect(heads.count == 2)
        let a = heads.first ?? "", b = heads.last ?? ""
        #expect(a.hasPrefix("GET /x HTTP/1.1\r\n"))
        #expect(a.contains("Origin: http://example.test\r\n"))
        #expect(a.contains("Sec-WebSocket-Protocol: chat, superchat\r\n"))
        #expect(a.contains("X-Extra: 1\r\n"))
        #expect(a.contains("Authorization: Basic \(Data("alice:s3cret".utf8).base64EncodedString())\r\n"))
        #expect(a.contains("Sec-WebSocket-Version: 13\r\n"))
        #expect(b.contains("Sec-WebSocket-Version: 8\r\n"))
        #expect(b.contains("Sec-WebSocket-Origin: http://old.test\r\n"))
    }

    @Test("the server's first frame, in the same packet as the 101, is delivered")
    func frameRightAfterHandshake() async throws {
        let frame = WebSocketFrame(opcode: .text, binaryPayload: ByteBuffer(string: "welcome")).serialized()
        let raw = try await RawHTTPServer.upgrading(trailer: Array(frame.readableBytesView))
        defer { Task { await raw.stop() } }
        let client = WebSocketClient()
        let messages = Expectation<String>()
        client.onConnect { connection in connection.onMessage { messages.fulfill($0.utf8Data ?? "") } }
        client.connect("ws://127.0.0.1:\(raw.port)/")
        #expect(try await messages.value() == "welcome")
    }
}

@Suite("WebSocketClient close paths")
struct ClientCloseTests {
    private func closeEvents(_ server: TestServer) -> Expectation<CloseEvent> {
        let events = Expectation<CloseEvent>()
        server.server.onClose { _, code, description in events.fulfill(CloseEvent(code: code, description: description)) }
        return events
    }

    @Test("client closes with the default code, and with 4000 \"bye\": both ends see it")
    func clientCloses() async throws {
        try await withEchoServer { server in
            let serverSide = closeEvents(server)
            for (code, reason, expected) in [(1000, nil, "Normal connection closure"), (4000, "bye", "bye")] as [(Int, String?, String)] {
                try await withConnection(server.url) { connection, _ in
                    let closed = Expectation<CloseEvent>()
                    connection.onClose { closed.fulfill(CloseEvent(code: $0, description: $1)) }
                    try connection.close(reasonCode: code, description: reason)
                    #expect(!connection.connected)
                    #expect(try await closed.value() == CloseEvent(code: code, description: expected))
                    #expect(try await serverSide.value() == CloseEvent(code: code, description: expected))
                }
            }
        }
    }

    @Test("server closes with 4001 \"server bye\"; server drops without a close frame: 1006")
    func serverCloses() async throws {
        try await withEchoServer { server in
            let serverConnections = Expectation<WebSocketConnection>()
            server.server.onConnect { serverConnections.fulfill($0) }
            try await withConnection(server.url) { connection, _ in
                let closed = Expectation<CloseEvent>()
                connection.onClose { closed.fulfill(CloseEvent(code: $0, description: $1)) }
                try await serverConnections.value().close(reasonCode: 4001, description: "server bye")
                #expect(try await closed.value() == CloseEvent(code: 4001, description: "server bye"))
            }
            try await withConnection(server.url) { connection, _ in
                let closed = Expectation<CloseEvent>()
                connection.onClose { closed.fulfill(CloseEvent(code: $0, description: $1)) }
                try await serverConnections.value().drop(reasonCode: 1001, skipCloseFrame: true)
                #expect(try await closed.value().code == 1006)
            }
        }
    }

    @Test("client drops: the server sees the close frame's code")
    func clientDrops() async throws {
        try await withEchoServer { server in
            let serverSide = closeEvents(server)
            try await withConnection(server.url) { connection, inbox in
                try await expectEcho(connection, inbox)
                connection.drop(reasonCode: 1008, description: "policy")
                #expect(try await serverSide.value() == CloseEvent(code: 1008, description: "policy"))
            }
        }
    }

    @Test("a close frame without a code gives 1005")
    func closeWithoutCode() async throws {
        let emptyClose: [UInt8] = [0x88, 0x00]
        let raw = try await RawHTTPServer.upgrading(trailer: emptyClose)
        defer { Task { await raw.stop() } }

        // (The raw server never closes TCP: the client gives up waiting after closeTimeout, which
        // CloseTimeoutVirtualTimeTests checks on virtual time; here it is short, to end soon.)
        var configuration = WebSocketClient.Configuration()
        configuration.closeTimeout = .milliseconds(300)
        let client = WebSocketClient(configuration: configuration)
        let events = Expectation<CloseEvent>()
        client.onConnect { connection in connection.onClose { events.fulfill(CloseEvent(code: $0, description: $1)) } }
        client.connect("ws://127.0.0.1:\(raw.port)/")
        #expect(try await events.value(30).code == 1005)
    }
}

@Suite("WebSocketClient connectFailed causes")
struct ClientConnectFailedTests {
    @Test("closed port: connectionRefused")
    func refused() async throws {
        try await withRefusingPort { port in
            let error = try await connectError(url: "ws://127.0.0.1:\(port)/")
            #expect(error.code == .connectionRefused, "\(error)")
            #expect(error.message.contains("127.0.0.1:\(port)"))
            // The async form throws the same.
            await #expect(throws: WebSocketError(.connectionRefused, error.message)) {
                _ = try await WebSocketClient().connect(url: "ws://127.0.0.1:\(port)/")
            }
        }
    }

    @Test("a name under .invalid: dnsFailed")
    func dns() async throws {
        let error = try await connectError(url: "ws://no-such-host.invalid:8080/", timeout: 30)
        #expect(error.code == .dnsFailed, "\(error)")
        #expect(error.message.contains("no-such-host.invalid"))
    }

    @Test("a server answering 200: unexpectedStatus with the status line")
    func status200() async throws {
        let raw = try await RawHTTPServer.answering("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        defer { Task { await raw.stop() } }
        let error = try await connectError(url: "ws://127.0.0.1:\(raw.port)/")
        #expect(error.code == .unexpectedStatus, "\(error)")
        #expect(error.message.contains("HTTP/1.1 200 OK"), "\(error)")
    }

    @Test("a server answering with the wrong Sec-WebSocket-Accept: invalidAcceptKey")
    func wrongAccept() async throws {
        let raw = try await RawHTTPServer.upgrading(acceptOverride: "dGhpcyBpcyBub3QgaXQ=")
        defer { Task { await raw.stop() } }
        let error = try await connectError(url: "ws://127.0.0.1:\(raw.port)/")
        #expect(error.code == .invalidAcceptKey, "\(error)")
    }

    @Test("a server choosing a subprotocol not offered: protocolNotOffered")
    func unofferedProtocol() async throws {
        let raw = try await RawHTTPServer.upgrading(extra: "Sec-WebSocket-Protocol: mqtt\r\n")
        defer { Task { await raw.stop() } }
        let error = try await connectError(url: "ws://127.0.0.1:\(raw.port)/", protocols: ["chat"])
        #expect(error.code == .protocolNotOffered, "\(error)")
        #expect(error.message.contains("mqtt"))
        let none = try await connectError(url: "ws://127.0.0.1:\(raw.port)/")
        #expect(none.code == .protocolNotOffered)
    }

    @Test("a server accepting an extension not offered: extensionNotOffered")
    func unofferedExtension() async throws {
        let raw = try await RawHTTPServer.upgrading(extra: "Sec-WebSocket-Extensions: x-custom; a=1\r\n")
        defer { Task { await raw.stop() } }
        let error = try await connectError(url: "ws://127.0.0.1:\(raw.port)/")
        #expect(error.code == .extensionNotOffered, "\(error)")
        #expect(error.message.contains("x-custom"))
    }

    @Test("a TLS server with an untrusted certificate: tlsFailed; the system roots do not trust the test CA either")
    func untrustedCertificate() async throws {
        let untrusted = try await TLSTestServer.start(untrusted: true)
        let trusted = try await TLSTestServer.start()
        defer { Task { await untrusted.stop(); await trusted.stop() } }
        let client = WebSocketClient(configuration: try ClientTLSFiles.clientTrustingTestCA())
        let error = try await connectError(client, url: "wss://localhost:\(untrusted.port)/")
        #expect(error.code == .tlsFailed, "\(error)")
        #expect(error.message.contains("not trusted"), "\(error)")
        let systemRoots = try await connectError(url: "wss://localhost:\(trusted.port)/")
        #expect(systemRoots.code == .tlsFailed, "\(systemRoots)")
    }

    @Test("a certificate for another name: tlsFailed")
    func wrongHostName() async throws {
        // untrusted.pem names localhost and 127.0.0.1 only; trusted here, reached over ::1.
        let server = try await TLSTestServer.start(host: "::1", untrusted: true)
        defer { Task { await server.stop() } }
        var configuration = WebSocketClient.Configuration()
        configuration.tlsConfiguration.trustRoots = .file(ClientTLSFiles.path("untrusted.pem"))
        let client = WebSocketClient(configuration: configuration)
        let url = "wss://[::1]:\(server.port)/"
        let error = try await connectError(client, url: url, requestOptions: .init(serverName: "other.example"))
        #expect(error.code == .tlsFailed, "\(error)")
        #expect(error.message.contains("not valid for this host name"), "\(error)")
        try await withConnection(url, client: client, requestOptions: .init(serverName: "localhost")) { connection, inbox in
            try await expectEcho(connection, inbox)
        }
    }

    @Test("a server that never answers: timeout after handshakeTimeout")
    func timeout() async throws {
        let raw = try await RawHTTPServer.start { _ in nil }
        defer { Task { await raw.stop() } }
        var configuration = WebSocketClient.Configuration()
        configuration.handshakeTimeout = .milliseconds(300)
        let error = try await connectError(WebSocketClient(configuration: configuration), url: "ws://127.0.0.1:\(raw.port)/")
        #expect(error.code == .timeout, "\(error)")
    }

    @Test("bad arguments: invalidURL, invalidArgument")
    func badArguments() async throws {
        for url in ["http://127.0.0.1/", "127.0.0.1:80", "ws://", "ws://[::1/", "ws://host:99999/"] {
            let error = try await connectError(url: url)
            #expect(error.code == .invalidURL, "\(url): \(error)")
        }
        let badProtocol = try await connectError(url: "ws://127.0.0.1:1/", protocols: ["a b"])
        #expect(badProtocol.code == .invalidArgument)
        let duplicate = try await connectError(url: "ws://127.0.0.1:1/", protocols: ["a", "A"])
        #expect(duplicate.code == .invalidArgument)
        var configuration = WebSocketClient.Configuration()
        configuration.webSocketVersion = 7
        let version = try await connectError(WebSocketClient(configuration: configuration), url: "ws://127.0.0.1:1/")
        #expect(version.code == .invalidArgument)
    }

    @Test("httpResponse, when handled, replaces connectFailed for a non-101 answer and carries status, headers, body")
    func httpResponse() async throws {
        let raw = try await RawHTTPServer.answering("HTTP/1.1 404 Not Found\r\nX-Why: gone\r\nContent-Length: 4\r\n\r\nnope")
        defer { Task { await raw.stop() } }
        let client = WebSocketClient()
        let responses = Expectation<WebSocketClient.HTTPResponse>()
        let failures = Expectation<WebSocketError>()
        client.onHttpResponse { response, from in
            #expect(from === client)
            responses.fulfill(response)
        }
        client.onConnectFailed { failures.fulfill($0) }
        client.connect("ws://127.0.0.1:\(raw.port)/")
        let response = try await responses.value()
        #expect(response.statusCode == 404)
        #expect(response.statusMessage == "Not Found")
        #expect(response.headers.first(name: "x-why") == "gone")
        #expect(String(buffer: response.body) == "nope")
        #expect(await failures.values(during: 0.2).isEmpty)
        // The async form still throws.
        await #expect(throws: WebSocketError.self) { _ = try await client.connect(url: "ws://127.0.0.1:\(raw.port)/") }
    }

    @Test("abort() and task cancellation end a pending attempt with aborted, at once")
    func abort() async throws {
        let raw = try await RawHTTPServer.start { _ in nil }
        defer { Task { await raw.stop() } }
        let client = WebSocketClient()
        let failures = Expectation<WebSocketError>()
        client.onConnectFailed { failures.fulfill($0) }
        client.connect("ws://127.0.0.1:\(raw.port)/")
        try await withTimeout(5) { while raw.heads.all.isEmpty { try await Task.sleep(for: .milliseconds(5)) } }
        client.abort()
        #expect(try await failures.value(2).code == .aborted)

        let task = Task { try await WebSocketClient().connect(url: "ws://127.0.0.1:\(raw.port)/") }
        try await withTimeout(5) { while raw.heads.all.count < 2 { try await Task.sleep(for: .milliseconds(5)) } }
        task.cancel()
        do {
            _ = try await withTimeout(2) { try await task.value }
            Issue.record("the cancelled connect succeeded")
        } catch let error as WebSocketError {
            #expect(error.code == .aborted)
        }
    }
}

@Suite("WebSocketClient wss://")
struct ClientTLSTests {
    @Test("wss:// to localhost, 127.0.0.1 and ::1 with the test CA; SNI is the host name, none for IP addresses")
    func wss() async throws {
        let v4 = try await TLSTestServer.start()
        let v6 = try await TLSTestServer.start(host: "::1")
        defer { Task { await v4.stop(); await v6.stop() } }
        let client = WebSocketClient(configuration: try ClientTLSFiles.clientTrustingTestCA())
        for url in ["wss://localhost:\(v4.port)/", "wss://127.0.0.1:\(v4.port)/", "wss://[::1]:\(v6.port)/"] {
            try await withConnection(url, client: client, protocols: ["chat"]) { connection, inbox in
                #expect(connection.protocol == "chat")
                try await expectEcho(connection, inbox)
                let big = ByteBuffer(repeating: 7, count: 300_000)
                try await connection.write(big)
                #expect(try await inbox.value(10, "the large echo").binaryData == big)
                try connection.close()
            }
        }
        #expect(v4.serverNames.all == ["localhost", ""])
        #expect(v6.serverNames.all == [""])
    }

    @Test("serverName overrides SNI; per-request tlsConfiguration overrides the client's; verification can be switched off")
    func options() async throws {
        let server = try await TLSTestServer.start()
        let untrusted = try await TLSTestServer.start(untrusted: true)
        defer { Task { await server.stop(); await untrusted.stop() } }
        let url = "wss://127.0.0.1:\(server.port)/"
        var trusting = TLSConfiguration.makeClientConfiguration()
        trusting.trustRoots = .file(ClientTLSFiles.path("ca.pem"))
        try await withConnection(url, requestOptions: .init(tlsConfiguration: trusting, serverName: "localhost")) { connection, inbox in
            try await expectEcho(connection, inbox)
        }
        #expect(server.serverNames.all == ["localhost"])

        var insecure = WebSocketClient.Configuration()
        insecure.tlsConfiguration.certificateVerification = .none
        try await withConnection("wss://localhost:\(untrusted.port)/", client: WebSocketClient(configuration: insecure)) { connection, inbox in
            try await expectEcho(connection, inbox)
        }
    }

    @Test("client certificates: a server that requires one accepts ours and refuses a client without")
    func clientCertificate() async throws {
        let server = try await TLSTestServer.start { tls in
            tls.certificateVerification = .noHostnameVerification
            tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ClientTLSFiles.path("untrusted.pem")))
        }
        defer { Task { await server.stop() } }
        var configuration = try ClientTLSFiles.clientTrustingTestCA()
        let url = "wss://localhost:\(server.port)/"

        let noCertificate = configuration
        let without = try await withTimeout(10) { try await connectError(WebSocketClient(configuration: noCertificate), url: url) }
        #expect(without.code == .tlsFailed || without.code == .handshakeFailed, "\(without)")

        configuration.tlsConfiguration.certificateChain = try NIOSSLCertificate.fromPEMFile(ClientTLSFiles.path("untrusted.pem")).map { .certificate($0) }
        configuration.tlsConfiguration.privateKey = .file(ClientTLSFiles.path("untrusted-key.pem"))
        try await withConnection(url, client: WebSocketClient(configuration: configuration)) { connection, inbox in
            try await expectEcho(connection, inbox)
        }
    }
}

@Suite("WebSocketClient through an HTTP CONNECT proxy")
struct ClientProxyTests {
    @Test("ws:// and wss:// through a proxy without authorization")
    func plainProxy() async throws {
        let proxy = try await TestConnectProxy.start()
        let tls = try await TLSTestServer.start()
        defer { Task { await proxy.stop(); await tls.stop() } }
        try await withEchoServer { server in
            let options = WebSocketClient.RequestOptions(proxy: .init(host: "127.0.0.1", port: proxy.port))
            try await withConnection(server.url + "via-proxy", requestOptions: options) { connection, inbox in
                try await expectEcho(connection, inbox)
                try await expectEcho(connection, inbox, String(repeating: "x", count: 100_000))
            }
            let client = WebSocketClient(configuration: try ClientTLSFiles.clientTrustingTestCA())
            try await withConnection("wss://localhost:\(tls.port)/", client: client, requestOptions: options) { connection, inbox in
                try await expectEcho(connection, inbox)
            }
        }
        #expect(proxy.tunnels.all.count == 2)
        #expect(proxy.tunnels.all.last == "localhost:\(tls.port)")
        #expect(proxy.heads.all.first?.hasPrefix("CONNECT 127.0.0.1:") == true)
        #expect(proxy.heads.all.allSatisfy { !$0.lowercased().contains("proxy-authorization") })
        #expect(tls.serverNames.all == ["localhost"])
    }

    @Test("wss:// to an IP address through a proxy: the certificate is checked against the target's address, not the proxy's")
    func ipTargetThroughProxy() async throws {
        let proxy = try await TestConnectProxy.start()  // on 127.0.0.1, which the certificate names
        let named = try await TLSTestServer.start(host: "127.0.0.1")
        let unnamed = try await TLSTestServer.start(host: "127.0.0.2")  // not in the certificate
        defer { Task { await proxy.stop(); await named.stop(); await unnamed.stop() } }
        let options = WebSocketClient.RequestOptions(proxy: .init(host: "127.0.0.1", port: proxy.port))
        let client = WebSocketClient(configuration: try ClientTLSFiles.clientTrustingTestCA())
        try await withConnection("wss://127.0.0.1:\(named.port)/", client: client, requestOptions: options) { connection, inbox in
            try await expectEcho(connection, inbox)
        }
        // Checked against the proxy's address (127.0.0.1) this one passed.
        let error = try await connectError(client, url: "wss://127.0.0.2:\(unnamed.port)/", requestOptions: options)
        #expect(error.code == .tlsFailed, "\(error)")
        #expect(error.message.contains("127.0.0.2"), "\(error)")
        #expect(proxy.tunnels.all.last == "127.0.0.2:\(unnamed.port)")
        #expect(unnamed.server.connectionCount == 0)
        // Without a proxy the same address fails NIOSSL's own check, as before.
        let direct = try await connectError(client, url: "wss://127.0.0.2:\(unnamed.port)/")
        #expect(direct.code == .tlsFailed, "\(direct)")
    }

    @Test("a proxy that wants credentials: 407 without them (proxyFailed), tunnel with Basic credentials")
    func authorizingProxy() async throws {
        let expected = "Basic " + Data("user:pa:ss".utf8).base64EncodedString()
        let proxy = try await TestConnectProxy.start(requiredAuthorization: expected)
        defer { Task { await proxy.stop() } }
        try await withEchoServer { server in
            let bare = try await connectError(url: server.url, requestOptions: .init(proxy: .init(host: "127.0.0.1", port: proxy.port)))
            #expect(bare.code == .proxyFailed, "\(bare)")
            #expect(bare.message.contains("407"), "\(bare)")

            let wrong = try await connectError(
                url: server.url, requestOptions: .init(proxy: .init(host: "127.0.0.1", port: proxy.port, authorization: .basic(username: "user", password: "no"))))
            #expect(wrong.code == .proxyFailed)

            let fromURL = try WebSocketClient.HTTPProxy(url: "http://user:pa%3Ass@127.0.0.1:\(proxy.port)")
            #expect(fromURL.authorization?.headerValue == expected)
            try await withConnection(server.url, requestOptions: .init(proxy: fromURL)) { connection, inbox in
                try await expectEcho(connection, inbox)
            }
        }
        #expect(proxy.tunnels.all.count == 1)
        #expect(proxy.heads.all.last?.contains("Proxy-Authorization: \(expected)\r\n") == true)
    }

    @Test("a proxy that is not there: connectionRefused names the proxy")
    func proxyRefused() async throws {
        try await withRefusingPort { port in
            let error = try await connectError(url: "ws://127.0.0.1:9/", requestOptions: .init(proxy: .init(host: "127.0.0.1", port: port)))
            #expect(error.code == .connectionRefused, "\(error)")
            #expect(error.message.contains("proxy"))
        }
    }
}
