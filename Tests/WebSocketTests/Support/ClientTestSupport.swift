import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

@testable import WebSocket

/// The test-only TLS files in Resources/tls (see its README).
enum ClientTLSFiles {
    static func path(_ name: String) -> String {
        guard let url = Bundle.module.url(forResource: "Resources/tls/\(name)", withExtension: nil) else {
            fatalError("test resource Resources/tls/\(name) is missing")
        }
        return url.path
    }

    /// A client configuration trusting only the test CA.
    static func clientTrustingTestCA() throws -> WebSocketClient.Configuration {
        var configuration = WebSocketClient.Configuration()
        configuration.tlsConfiguration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(path("ca.pem")))
        return configuration
    }

    /// The server side: the certificate for localhost/127.0.0.1/::1 signed by the test CA, or
    /// the self-signed untrusted one.
    static func serverConfiguration(untrusted: Bool = false) throws -> TLSConfiguration {
        let (cert, key) = untrusted ? ("untrusted.pem", "untrusted-key.pem") : ("server.pem", "server-key.pem")
        return TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(path(cert)).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: path(key), format: .pem)))
    }
}

/// The `Sec-WebSocket-Accept` value for the key in a raw request head.
func acceptKey(inRequest head: String) -> String {
    let key = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("sec-websocket-key:") }
        .map { $0.dropFirst("sec-websocket-key:".count).trimmingCharacters(in: .whitespaces) } ?? ""
    return WebSocketHandshake.acceptValue(forKey: key)
}

/// A raw TCP server on 127.0.0.1 for client tests: for each connection it reads the request
/// head and answers with whatever `respond` returns (nil: answers nothing and keeps the
/// connection open). It records the request heads.
final class RawHTTPServer: Sendable {
    private final class Handler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let respond: @Sendable (String) -> [UInt8]?
        let heads: Collected<String>
        var buffer = ByteBuffer()
        var answered = false

        init(respond: @escaping @Sendable (String) -> [UInt8]?, heads: Collected<String>) {
            self.respond = respond
            self.heads = heads
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var incoming = unwrapInboundIn(data)
            guard !answered else { return }
            buffer.writeBuffer(&incoming)
            let view = buffer.readableBytesView
            guard let end = view.firstRange(of: Array("\r\n\r\n".utf8)) else { return }
            answered = true
            let head = buffer.readString(length: end.upperBound - view.startIndex) ?? ""
            heads.append(head)
            if let answer = respond(head) {
                context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: answer)), promise: nil)
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }

    let channel: Channel
    let heads: Collected<String>
    var port: Int { channel.localAddress!.port! }

    private init(channel: Channel, heads: Collected<String>) {
        self.channel = channel
        self.heads = heads
    }

    static func start(host: String = "127.0.0.1", respond: @escaping @Sendable (String) -> [UInt8]?) async throws -> RawHTTPServer {
        let heads = Collected<String>()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Handler(respond: respond, heads: heads))
                }
            }
            .bind(host: host, port: 0).get()
        return RawHTTPServer(channel: channel, heads: heads)
    }

    /// A server whose 101 answer is valid except for the headers `extra` adds (and the accept
    /// key, which `acceptOverride` replaces when given).
    /// `trailer` is sent right behind the head, in the same write (e.g. a first frame).
    static func upgrading(extra: String = "", acceptOverride: String? = nil, trailer: [UInt8] = []) async throws -> RawHTTPServer {
        try await start { head in
            let text = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Accept: \(acceptOverride ?? acceptKey(inRequest: head))\r\n\(extra)\r\n"
            return Array(text.utf8) + trailer
        }
    }

    /// A server answering every request with `response` as is.
    static func answering(_ response: String) async throws -> RawHTTPServer {
        try await start { _ in Array(response.utf8) }
    }

    func stop() async { try? await channel.close() }
}

/// A `wss://` server for tests: NIOSSLServerHandler in front of a ``WebSocketServer``'s own
/// pipeline (`configurePipeline(for:)`), on 127.0.0.1 or ::1. Echoes every message.
struct TLSTestServer {
    let server: WebSocketServer
    let listener: Channel
    /// The server names clients sent in SNI.
    let serverNames: Collected<String>
    var port: Int { listener.localAddress!.port! }

    static func start(
        host: String = "127.0.0.1", untrusted: Bool = false,
        configure: (inout TLSConfiguration) throws -> Void = { _ in }
    ) async throws -> TLSTestServer {
        var tls = try ClientTLSFiles.serverConfiguration(untrusted: untrusted)
        let serverNames = Collected<String>()
        tls.sslContextCallback = { values, promise in
            serverNames.append(values.serverHostname ?? "")
            promise.succeed(NIOSSLContextConfigurationOverride())
        }
        try configure(&tls)
        let context = try NIOSSLContext(configuration: tls)
        let server = WebSocketServer()
        server.onRequest { request in
            guard let connection = try? request.accept(protocol: request.requestedProtocols.first) else { return }
            connection.onMessage { connection.send($0) }
        }
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                    try server.configurePipeline(for: channel)
                }
            }
            .bind(host: host, port: 0).get()
        return TLSTestServer(server: server, listener: listener, serverNames: serverNames)
    }

    func stop() async {
        try? await listener.close()
        await server.shutDown()
    }
}

/// An HTTP `CONNECT` proxy on 127.0.0.1 for tests. With `requiredAuthorization` it answers
/// 407 to requests without that exact `Proxy-Authorization` value. It records each request head.
final class TestConnectProxy: Sendable {
    /// Copies bytes from one channel to its partner.
    private final class Glue: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        var partner: Channel?

        init(partner: Channel?) { self.partner = partner }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            partner?.writeAndFlush(data, promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            partner?.close(promise: nil)
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }

    private final class Front: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let proxy: TestConnectProxy
        var buffer = ByteBuffer()
        var state = 0  // 0 reading the head, 1 connecting, 2 tunnelling
        var glue: Glue?

        init(proxy: TestConnectProxy) { self.proxy = proxy }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var incoming = unwrapInboundIn(data)
            switch state {
            case 2:
                glue?.partner?.writeAndFlush(incoming, promise: nil)
                return
            case 1:
                buffer.writeBuffer(&incoming)
                return
            default:
                buffer.writeBuffer(&incoming)
            }
            let view = buffer.readableBytesView
            guard let end = view.firstRange(of: Array("\r\n\r\n".utf8)) else { return }
            let head = buffer.readString(length: end.upperBound - view.startIndex) ?? ""
            proxy.heads.append(head)
            let lines = head.split(separator: "\r\n")
            let parts = lines.first?.split(separator: " ") ?? []
            guard parts.count == 3, parts[0] == "CONNECT" else {
                return answer(context, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", close: true)
            }
            if let required = proxy.requiredAuthorization {
                let given = lines.first { $0.lowercased().hasPrefix("proxy-authorization:") }
                    .map { $0.dropFirst("proxy-authorization:".count).trimmingCharacters(in: .whitespaces) }
                guard given == required else {
                    return answer(
                        context, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n",
                        close: true)
                }
            }
            let target = String(parts[1])
            guard let colon = target.lastIndex(of: ":"), let port = Int(target[target.index(after: colon)...]) else {
                return answer(context, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", close: true)
            }
            var host = String(target[..<colon])
            if host.hasPrefix("[") { host = String(host.dropFirst().dropLast()) }
            state = 1
            let front = context.channel
            let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
            let contextBound = NIOLoopBound(context, eventLoop: context.eventLoop)
            ClientBootstrap(group: context.eventLoop)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(Glue(partner: front))
                    }
                }
                .connect(host: host, port: port)
                .whenComplete { result in
                    let this = loopBound.value
                    let context = contextBound.value
                    switch result {
                    case .success(let back):
                        this.glue = Glue(partner: back)
                        this.state = 2
                        this.proxy.tunnels.append(target)
                        this.answer(context, "HTTP/1.1 200 Connection established\r\n\r\n", close: false)
                        if this.buffer.readableBytes > 0 {
                            back.writeAndFlush(this.buffer, promise: nil)
                            this.buffer.clear()
                        }
                    case .failure:
                        this.answer(context, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n", close: true)
                    }
                }
        }

        func answer(_ context: ChannelHandlerContext, _ text: String, close: Bool) {
            let written = context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: text)))
            if close { written.whenComplete { _ in context.channel.close(promise: nil) } }
        }

        func channelInactive(context: ChannelHandlerContext) {
            glue?.partner?.close(promise: nil)
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }

    let requiredAuthorization: String?
    let heads = Collected<String>()
    /// The `host:port` targets of the tunnels opened.
    let tunnels = Collected<String>()
    private let listener = NIOLockedValueBox<Channel?>(nil)

    var port: Int { listener.withLockedValue { $0 }!.localAddress!.port! }

    private init(requiredAuthorization: String?) {
        self.requiredAuthorization = requiredAuthorization
    }

    static func start(requiredAuthorization: String? = nil) async throws -> TestConnectProxy {
        let proxy = TestConnectProxy(requiredAuthorization: requiredAuthorization)
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Front(proxy: proxy))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        proxy.listener.withLockedValue { $0 = channel }
        return proxy
    }

    func stop() async { try? await listener.withLockedValue { $0 }?.close() }
}

/// Outcome of a Node-style connect, for tests.
enum ConnectOutcome: Sendable {
    case connected(WebSocketConnection)
    case failed(WebSocketError)
    case httpResponse(WebSocketClient.HTTPResponse)
}

/// Runs a Node-style connect and returns the first event.
func connectOutcome(
    _ client: WebSocketClient = WebSocketClient(), url: String, protocols: [String] = [],
    requestOptions: WebSocketClient.RequestOptions? = nil, timeout: Double = 10
) async throws -> ConnectOutcome {
    let outcome = Expectation<ConnectOutcome>()
    let tokens = [
        client.onConnect { outcome.fulfill(.connected($0)) },
        client.onConnectFailed { outcome.fulfill(.failed($0)) },
    ]
    defer { tokens.forEach { $0.cancel() } }
    client.connect(url, protocols: protocols, requestOptions: requestOptions)
    return try await outcome.value(timeout, "the outcome of connecting to \(url)")
}

/// The error of a connect that must fail.
func connectError(
    _ client: WebSocketClient = WebSocketClient(), url: String, protocols: [String] = [],
    requestOptions: WebSocketClient.RequestOptions? = nil, timeout: Double = 10
) async throws -> WebSocketError {
    switch try await connectOutcome(client, url: url, protocols: protocols, requestOptions: requestOptions, timeout: timeout) {
    case .failed(let error):
        return error
    case .connected(let connection):
        connection.drop(skipCloseFrame: true)
        throw WebSocketError(.invalidArgument, "expected the connection to \(url) to fail, but it opened")
    case .httpResponse:
        throw WebSocketError(.invalidArgument, "expected connectFailed, got httpResponse")
    }
}
