import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOPosix
import Testing

@testable import WebSocket

// The two entry points for another HTTP server's channels (the adapters in Integrations/ use
// them): configurePipeline(for:upgradingWhere:otherwise:), which shares a fresh channel with
// the other server, and upgradeResponse(for:on:) + completeUpgrade(_:on:), for a server that
// has read the request and writes the answer itself. "The other server" here is NIO's own
// HTTP/1.1 server pipeline with a small handler: it answers `other <method> <uri> <body length>`.
@Suite("Framework bridge", .serialized)
struct FrameworkBridgeTests {
    // MARK: configurePipeline(for:upgradingWhere:otherwise:)

    @Test("a shared channel: upgrades to the chosen path are ours, everything else the other server's, every byte")
    func sharedChannel() async throws {
        let server = WebSocketServer()
        server.onRequest { request in
            guard let connection = try? request.accept() else { return }
            connection.onMessage { connection.send($0) }
        }
        let listener = try await OtherHTTPServer.start { channel in
            try server.configurePipeline(for: channel, upgradingWhere: { $0.uri.hasPrefix("/ws") }) { channel in
                try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                try channel.pipeline.syncOperations.addHandler(OtherHTTPServer.Answer())
            }
        }
        defer { Task { try? await listener.close() } }
        let port = listener.localAddress!.port!

        // An upgrade to /ws: a WebSocket of `server`.
        let connection = try await withTimeout(10, "connecting") {
            try await WebSocketClient().connect(url: "ws://127.0.0.1:\(port)/ws")
        }
        let inbox = Expectation<WebSocketMessage>()
        connection.onMessage { inbox.fulfill($0) }
        connection.send("ping")
        #expect(try await inbox.value(10, "the echo") == .utf8("ping"))
        #expect(server.connectionCount == 1)

        // A plain GET, an upgrade to another path, a head outside the fast path (a POST with a
        // body bigger than maxHandshakeSize) followed by a keep-alive GET: the other server's.
        let plain = try await RawClient.connect(port: port)
        try await plain.send("GET /page HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        #expect(try await plain.readAllText().hasSuffix("other GET /page 0"))

        let elsewhere = try await RawClient.connect(port: port)
        let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        try await elsewhere.send("GET /chat HTTP/1.1\r\nHost: x\r\n\(upgrade)\r\n")
        let head = try await elsewhere.readHTTPHead()
        #expect(head.hasPrefix("HTTP/1.1 200"))

        let posted = try await RawClient.connect(port: port)
        let body = String(repeating: "b", count: 40_000)
        try await posted.send(
            "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
                + "GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        let answers = try await posted.readAllText()
        #expect(answers.contains("other POST /upload 40000"))
        #expect(answers.hasSuffix("other GET /next 0"))

        // A GET whose head comes in pieces, slower than one read: still read whole, and ours.
        let slow = try await RawClient.connect(port: port)
        try await slow.send("GET /ws2 HTTP/1.1\r\nHost: x\r\n")
        try await Task.sleep(for: .milliseconds(50))
        try await slow.send("\(upgrade)\r\n")
        #expect(try await slow.readHTTPHead().hasPrefix("HTTP/1.1 101"))
        #expect(server.connectionCount == 2)
        await slow.close()
        await server.shutDown()
    }

    @Test("a shared channel: a request this server refuses gets its answer (403 with the reason), not the other server's")
    func sharedChannelRefusal() async throws {
        let server = WebSocketServer()
        server.onRequest { $0.reject(status: 403, reason: "go away") }
        let listener = try await OtherHTTPServer.start { channel in
            try server.configurePipeline(for: channel, upgradingWhere: { _ in true }) { channel in
                try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                try channel.pipeline.syncOperations.addHandler(OtherHTTPServer.Answer())
            }
        }
        defer { Task { try? await listener.close() } }
        let client = try await RawClient.connect(port: listener.localAddress!.port!)
        let head = try await client.handshake(path: "/ws")
        #expect(head.hasPrefix("HTTP/1.1 403"))
        #expect(head.contains("X-WebSocket-Reject-Reason: go away"))
    }

    // MARK: upgradeResponse(for:on:) and completeUpgrade(_:on:)

    @Test("a server that answers itself: accepted (101, subprotocol, permessage-deflate), then our connection", arguments: [false, true])
    func answeredUpgrade(completingOffLoop: Bool) async throws {
        var configuration = WebSocketServer.Configuration()
        configuration.perMessageDeflate = PerMessageDeflate.Options()
        let server = WebSocketServer(configuration: configuration)
        let connected = Expectation<String?>()
        server.onRequest { request in
            guard let connection = try? request.accept(protocol: "chat") else { return }
            connected.fulfill(connection.protocol)
            connection.onMessage { connection.send($0) }
        }
        let listener = try await OtherHTTPServer.start { channel in
            try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                withPipeliningAssistance: false, withErrorHandling: false, withOutboundHeaderValidation: false)
            // completeUpgrade off the loop hops to it (it once asserted, and raced in release),
            // and may come after the client's first frame.
            try channel.pipeline.syncOperations.addHandler(OtherHTTPServer.Upgrading(server: server, offLoop: completingOffLoop))
        }
        defer { Task { try? await listener.close() } }
        var clientConfiguration = WebSocketClient.Configuration()
        clientConfiguration.perMessageDeflate = PerMessageDeflate.Options()
        let offering = clientConfiguration
        let connection = try await withTimeout(10, "connecting") {
            try await WebSocketClient(configuration: offering).connect(
                url: "ws://127.0.0.1:\(listener.localAddress!.port!)/chat", protocols: ["chat"])
        }
        #expect(connection.protocol == "chat")
        #expect(connection.extensions.map(\.name) == ["permessage-deflate"])
        #expect(try await connected.value(10, "the connect") == "chat")
        let inbox = Expectation<WebSocketMessage>()
        connection.onMessage { inbox.fulfill($0) }
        let text = String(repeating: "compressible ", count: 500)
        connection.send(text)
        #expect(try await inbox.value(10, "the echo") == .utf8(text))
        #expect(server.connectionCount == 1)
        await server.shutDown()
    }

    @Test(
        "a server that answers itself: refusals come as answers to write",
        arguments: [
            RefusalCase(request: "GET /x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: https://evil.example\r\n\r\n", status: 403),
            RefusalCase(request: "GET /x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n", status: 400),
            RefusalCase(request: "GET /x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 12\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", status: 426),
        ])
    func answeredRefusals(_ refusal: RefusalCase) async throws {
        let server = WebSocketServer()
        let errors = Expectation<String>()
        server.onUpgradeError { errors.fulfill("\($0)") }
        server.onRequest { request in
            if request.origin == "https://evil.example" { return request.reject(status: 403, reason: "origin") }
            _ = try? request.accept()
        }
        let listener = try await OtherHTTPServer.start { channel in
            try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                withPipeliningAssistance: false, withErrorHandling: false, withOutboundHeaderValidation: false)
            try channel.pipeline.syncOperations.addHandler(OtherHTTPServer.Upgrading(server: server))
        }
        defer { Task { try? await listener.close() } }
        let client = try await RawClient.connect(port: listener.localAddress!.port!)
        try await client.send(refusal.request)
        let answer = try await client.readAllText()
        #expect(answer.hasPrefix("HTTP/1.1 \(refusal.status)"))
        #expect(answer.lowercased().contains("connection: close"))
        if refusal.status != 403 { _ = try await errors.value(5, "the upgradeError") }
        #expect(server.connectionCount == 0)
    }

    @Test("a server that answers itself: no upgrade is 426; an undecided request times out with 503")
    func answeredTimeoutAndPlain() async throws {
        var configuration = WebSocketServer.Configuration()
        configuration.requestTimeout = .milliseconds(200)
        let server = WebSocketServer(configuration: configuration)
        server.onRequest { _ in }  // never decides
        let channel = EmbeddedChannel()
        let plain = try server.upgradeResponse(
            for: HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: ["Host": "x"]), on: channel
        ).wait()
        #expect(plain.status == .upgradeRequired)
        #expect(!plain.isAccepted)
        let listener = try await OtherHTTPServer.start { channel in
            try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                withPipeliningAssistance: false, withErrorHandling: false, withOutboundHeaderValidation: false)
            try channel.pipeline.syncOperations.addHandler(OtherHTTPServer.Upgrading(server: server))
        }
        defer { Task { try? await listener.close() } }
        let client = try await RawClient.connect(port: listener.localAddress!.port!)
        let head = try await client.handshake(path: "/slow")
        #expect(head.hasPrefix("HTTP/1.1 503"))
    }
}

struct RefusalCase: Sendable, CustomTestStringConvertible {
    var request: String
    var status: Int
    var testDescription: String { "\(status)" }
}

/// A NIO HTTP/1.1 server standing in for a framework.
enum OtherHTTPServer {
    static func start(_ initialize: @escaping @Sendable (Channel) throws -> Void) async throws -> Channel {
        try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try initialize(channel) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    /// Answers every request with `other <method> <uri> <body length>`, keep-alive unless the
    /// request says `Connection: close`.
    final class Answer: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        private var head: HTTPRequestHead?
        private var length = 0

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                self.head = head
                length = 0
            case .body(let bytes):
                length += bytes.readableBytes
            case .end:
                guard let head else { return }
                let body = "other \(head.method) \(head.uri) \(length)"
                let close = !head.isKeepAlive
                var headers = HTTPHeaders([("Content-Length", "\(body.utf8.count)")])
                if close { headers.add(name: "Connection", value: "close") }
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
                context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
                let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
                if close { done.assumeIsolated().whenComplete { _ in context.close(promise: nil) } }
            }
        }
    }

    /// Asks `server` about every request and writes its answer, as a framework would: on a
    /// 101 takes NIO's HTTP handlers out and hands the channel over.
    final class Upgrading: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let server: WebSocketServer
        /// Calls `completeUpgrade` from a task off the event loop (as an async framework might).
        let offLoop: Bool
        private var head: HTTPRequestHead?

        init(server: WebSocketServer, offLoop: Bool = false) {
            self.server = server
            self.offLoop = offLoop
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head): self.head = head
            case .body: break
            case .end:
                guard let head else { return }
                let channel = context.channel
                server.upgradeResponse(for: head, on: channel).assumeIsolated().whenSuccess { answer in
                    var headers = answer.headers
                    if !answer.isAccepted { headers.add(name: "Content-Length", value: "\(answer.body.utf8.count)") }
                    context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: answer.status, headers: headers))), promise: nil)
                    if !answer.isAccepted {
                        context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: answer.body)))), promise: nil)
                    }
                    context.writeAndFlush(self.wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
                        guard answer.isAccepted else { return context.close(promise: nil) }
                        let pipeline = channel.pipeline.syncOperations
                        let encoder = try? pipeline.handler(type: HTTPResponseEncoder.self)
                        let decoder = try? pipeline.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
                        if let encoder { _ = pipeline.removeHandler(encoder) }
                        _ = pipeline.removeHandler(context: context)
                        if self.offLoop {
                            let server = self.server
                            // Later than the client's first frame (it sends on the 101): that
                            // frame waits in the socket, as reading stopped at the accept (it
                            // was lost in the emptied pipeline before).
                            Task.detached {
                                try? await Task.sleep(for: .milliseconds(300))
                                server.completeUpgrade(answer, on: channel)
                            }
                        } else {
                            self.server.completeUpgrade(answer, on: channel)
                        }
                        if let decoder { _ = pipeline.removeHandler(decoder) }
                    }
                }
            }
        }
    }
}
