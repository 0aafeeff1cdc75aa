import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import Testing

@testable import WebSocket

@Suite("WebSocketServer")
struct WebSocketServerTests {
    @Test("autoAcceptConnections accepts the first requested protocol and emits connect")
    func autoAccept() async throws {
        let connects = Expectation<WebSocketConnection>()
        let server = try await TestServer.start({ $0.autoAcceptConnections = true }, setup: { server in
            server.onConnect { connects.fulfill($0) }
        })
        defer { Task { await server.stop() } }
        let client = try await WebSocketClient().connect(url: server.url, protocols: ["one", "two"], origin: "http://x")
        let serverSide = try await connects.value()
        #expect(client.protocol == "one")
        #expect(serverSide.protocol == "one")
        #expect(server.server.connectionCount == 1)
        try client.close()
    }

    @Test("requests as an async sequence, decided later from another task")
    func requestSequence() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        let requests = server.server.requests
        let serverTask = Task {
            for await request in requests {
                try await Task.sleep(for: .milliseconds(100))
                let connection = try request.accept()
                for try await message in connection.messages {
                    try await connection.write(message)
                }
                return
            }
        }
        defer { serverTask.cancel() }
        let client = try await WebSocketClient().connect(url: server.url)
        try await client.write("ping?")
        let reply = try await withTimeout(5) { try await client.messages.first { _ in true } }
        #expect(reply == .utf8("ping?"))
        try client.close()
    }

    @Test("a request accepted at once, over HTTP/1.1 and HTTP/2, leaves nothing that keeps the request or its connection alive after close")
    func acceptedAtOnceIsReleased() async throws {
        final class Weak: @unchecked Sendable {
            weak var request: WebSocketRequest?
            weak var connection: WebSocketConnection?
            var released: Bool { request == nil && connection == nil }
        }
        let held = NIOLockedValueBox<[Weak]>([])
        // A long requestTimeout: a request timer left running would hold the request and its
        // handshake handler (with the HTTP codec's buffers) that long: the soak test saw 100 MB.
        let server = try await TestServer.start({ $0.requestTimeout = .seconds(60); $0.http2 = true }, setup: { server in
            server.onRequest { request in
                guard let connection = try? request.accept() else { return }
                let weak = Weak()
                weak.request = request
                weak.connection = connection
                held.withLockedValue { $0.append(weak) }
            }
        })
        defer { Task { await server.stop() } }
        let tls = try await server.server.listen(host: "127.0.0.1", port: 0, tlsConfiguration: TestTLS.serverConfiguration())
        var h2 = WebSocketClient.Configuration()
        h2.tlsConfiguration = try WebSocketClient.tlsConfiguration(caFile: TestTLS.caFile)
        h2.http2 = true
        for (client, url) in [(WebSocketClient(), server.url), (WebSocketClient(configuration: h2), "wss://localhost:\(tls.port!)/")] {
            let connection = try await client.connect(url: url)
            let closed = Expectation<Int>()
            connection.onClose { code, _ in closed.fulfill(code) }
            try connection.close()
            #expect(try await closed.value() == 1000)
        }
        let deadline = ContinuousClock.now + .seconds(5)
        while held.withLockedValue({ $0.contains { !$0.released } }) && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(held.withLockedValue { $0.count } == 2)
        #expect(held.withLockedValue { $0.allSatisfy(\.released) }, "a request or server-side connection is still alive after the close")
    }

    // requestTimeout and handshakeTimeout (slowloris): HandshakeTimeoutVirtualTimeTests, on
    // virtual time through the same pipeline (`configurePipeline`).

    @Test("an oversized request head gets 431, too many headers too")
    func handshakeSize() async throws {
        let server = try await TestServer.echo { $0.maxHandshakeSize = 2048; $0.maxHeaderCount = 20 }
        defer { Task { await server.stop() } }
        let big = try await RawClient.connect(port: server.port)
        let bigResponse = try await big.handshake(headers: ["X-Big: " + String(repeating: "a", count: 4000)])
        #expect(bigResponse.hasPrefix("HTTP/1.1 431"))
        let many = try await RawClient.connect(port: server.port)
        let manyResponse = try await many.handshake(headers: (0..<30).map { "X-H\($0): v" })
        #expect(manyResponse.hasPrefix("HTTP/1.1 431"))
    }

    @Test("over maxConnections, new upgrades get 503")
    func maxConnections() async throws {
        let server = try await TestServer.echo { $0.maxConnections = 2 }
        defer { Task { await server.stop() } }
        let a = try await WebSocketClient().connect(url: server.url)
        let b = try await WebSocketClient().connect(url: server.url)
        let raw = try await RawClient.connect(port: server.port)
        #expect(try await raw.handshake().hasPrefix("HTTP/1.1 503"))
        try a.close()
        try await withTimeout(5) { while server.server.connectionCount > 1 { try await Task.sleep(for: .milliseconds(10)) } }
        let c = try await WebSocketClient().connect(url: server.url)
        try b.close()
        try c.close()
    }

    @Test("shutDown sends 1001 to every connection, waits for them, and stops listening")
    func shutDown() async throws {
        let server = try await TestServer.echo()
        let closes = Expectation<Int>()
        let clients = try await (0..<3).asyncMap { _ in try await WebSocketClient().connect(url: server.url) }
        for client in clients { client.onClose { code, _ in closes.fulfill(code) } }
        let serverCloses = Expectation<Int>()
        server.server.onClose { _, code, _ in serverCloses.fulfill(code) }
        try await withTimeout(10) { await server.server.shutDown() }
        for _ in 0..<3 { #expect(try await closes.value() == 1001) }
        for _ in 0..<3 { #expect(try await serverCloses.value() == 1001) }
        #expect(server.server.connectionCount == 0)
        await #expect(throws: (any Error).self) { _ = try await RawClient.connect(port: server.port) }
    }

    @Test("unmount stops listening but keeps open connections")
    func unmount() async throws {
        let server = try await TestServer.echo()
        let client = try await WebSocketClient().connect(url: server.url)
        await server.server.unmount()
        // No listener left (a connect to the port would prove nothing: in the parallel suite
        // another test's listener may take the freed port, as it did once).
        #expect(server.server.localAddresses.isEmpty)
        try await client.write("still here")
        #expect(try await withTimeout(5) { try await client.messages.first { _ in true } } == .utf8("still here"))
        await server.stop()
    }

    @Test("a client that leaves before accept gives an upgradeError and a 1006 close, nothing escapes")
    func leaveBeforeAccept() async throws {
        let requests = Expectation<WebSocketRequest>()
        let errors = Expectation<String>()
        let server = try await TestServer.start(setup: { server in
            server.onRequest { requests.fulfill($0) }
            server.onUpgradeError { errors.fulfill("\($0)") }
        })
        defer { Task { await server.stop() } }
        let raw = try await RawClient.connect(port: server.port)
        try await raw.send("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        let request = try await requests.value()
        await raw.close()
        #expect(try await errors.value().contains("went away"))
        let connection = try request.accept()
        let closes = Expectation<Int>()
        connection.onClose { code, _ in closes.fulfill(code) }
        #expect(try await closes.value() == 1006)
    }

    @Test("the server's handlers can be added to a user's own NIO server")
    func configurePipeline() async throws {
        let server = WebSocketServer()
        server.onRequest { request in
            guard let connection = try? request.accept() else { return }
            connection.onMessage { connection.send($0) }
        }
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try server.configurePipeline(for: channel) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        defer { channel.close(promise: nil) }
        let client = try await WebSocketClient().connect(url: "ws://127.0.0.1:\(channel.localAddress!.port!)/")
        try await client.write("own server")
        #expect(try await withTimeout(5) { try await client.messages.first { _ in true } } == .utf8("own server"))
        try client.close()
    }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var result: [T] = []
        for element in self { result.append(try await transform(element)) }
        return result
    }
}
