import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP2
import NIOPosix
import NIOSSL
import NIOTLS

/// One HTTP/2 connection (TLS, ALPN `h2`) to a server that accepts WebSockets as streams
/// (RFC 8441): open it once, then open any number of WebSockets over it with
/// ``WebSocketClient/connect(url:protocols:origin:headers:over:)``. Each WebSocket is a
/// stream; closing one never closes the others or the connection.
///
/// ```swift
/// let h2 = try await WebSocketHTTP2Connection.connect(host: "example.com")
/// let chat = try await client.connect(url: "wss://example.com/chat", over: h2)
/// let feed = try await client.connect(url: "wss://example.com/feed", over: h2)
/// ```
///
/// A ``WebSocketClient`` with ``WebSocketClient/Configuration/http2`` set opens and shares
/// such connections by itself.
public final class WebSocketHTTP2Connection: Sendable {
    /// The TCP connection; the WebSockets' channels are its streams (their `parent`).
    public let channel: Channel
    /// The host and port connected to.
    public let host: String
    /// The port connected to.
    public let port: Int
    private let multiplexer: NIOLoopBound<NIOHTTP2Handler.StreamMultiplexer>
    /// Set when the server sent GOAWAY: streams that are open go on, new ones are refused.
    private let goingAway = NIOLockedValueBox(false)

    private init(channel: Channel, host: String, port: Int, multiplexer: NIOHTTP2Handler.StreamMultiplexer) {
        self.channel = channel
        self.host = host
        self.port = port
        self.multiplexer = NIOLoopBound(multiplexer, eventLoop: channel.eventLoop)
    }

    /// Whether the connection is still open for new WebSockets: not closed, and the server has
    /// not sent GOAWAY (after which the WebSockets already open go on, but no new one may start).
    public var isActive: Bool { channel.isActive && !goingAway.withLockedValue { $0 } }

    func serverSentGoAway() { goingAway.withLockedValue { $0 = true } }

    /// Connects to `host:port` over TLS offering `h2` (and `http/1.1`) by ALPN, and waits for
    /// the server's SETTINGS.
    ///
    /// Throws a ``WebSocketError``: `.handshakeFailed` when the server did not choose HTTP/2 or
    /// does not announce SETTINGS_ENABLE_CONNECT_PROTOCOL (no WebSockets over HTTP/2 there:
    /// connect over HTTP/1.1 instead), or the codes of ``WebSocketClient/onConnectFailed(_:)``
    /// for connection and TLS failures.
    ///
    /// - Parameters:
    ///   - host: the server's host name or IP address.
    ///   - port: its port. Default 443.
    ///   - tlsConfiguration: TLS settings (trust roots, client certificate); its
    ///     `applicationProtocols` are replaced by `h2`, `http/1.1`.
    ///   - serverName: the TLS server name (SNI, certificate check). Default: `host`, or none
    ///     when that is an IP address.
    ///   - eventLoopGroup: where the connection runs.
    ///   - timeout: the time limit for connecting, TLS and the server's SETTINGS. Default 10 s.
    ///   - writeBufferWaterMark: each stream's write buffer marks, for `drain` and async sends.
    public static func connect(
        host: String, port: Int = 443, tlsConfiguration: TLSConfiguration = .makeClientConfiguration(),
        serverName: String? = nil, eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        timeout: Duration = .seconds(10), writeBufferWaterMark: WebSocketWriteBufferWaterMark = WebSocketWriteBufferWaterMark()
    ) async throws -> WebSocketHTTP2Connection {
        let context: NIOSSLContext
        do {
            context = try NIOSSLContext(configuration: alpnConfiguration(tlsConfiguration))
        } catch {
            throw WebSocketError(.tlsFailed, "The TLS configuration is not usable: \(error)")
        }
        let name = serverName ?? (Self.isIPAddress(host) ? nil : host)
        let result = try await open(
            host: host, port: port, sslContext: context, serverName: name, eventLoop: eventLoopGroup.next(),
            timeout: timeout, writeBufferWaterMark: writeBufferWaterMark
        ).get()
        switch result {
        case .http2(let connection):
            return connection
        case .notSupported(let why):
            throw WebSocketError(.handshakeFailed, why)
        }
    }

    /// Closes the connection and every WebSocket on it (they see 1006).
    public func close() async {
        try? await channel.close()
    }

    // MARK: Internals

    enum OpenResult: Sendable {
        case http2(WebSocketHTTP2Connection)
        /// The server is reachable but takes no WebSockets over HTTP/2; the reason.
        case notSupported(String)
    }

    /// `configuration` with ALPN offering h2, then http/1.1.
    static func alpnConfiguration(_ configuration: TLSConfiguration) -> TLSConfiguration {
        var configuration = configuration
        configuration.applicationProtocols = ["h2", "http/1.1"]
        return configuration
    }

    static func isIPAddress(_ host: String) -> Bool {
        (try? SocketAddress(ipAddress: host, port: 0)) != nil
    }

    /// Connects, negotiates, and waits for the server's first SETTINGS frame.
    static func open(
        host: String, port: Int, sslContext: NIOSSLContext, serverName: String?, eventLoop: any EventLoop,
        timeout: Duration, writeBufferWaterMark: WebSocketWriteBufferWaterMark = WebSocketWriteBufferWaterMark()
    ) -> EventLoopFuture<OpenResult> {
        let promise = eventLoop.makePromise(of: OpenResult.self)
        let what = (host.contains(":") ? "[\(host)]" : host) + ":\(port)"
        let timer = eventLoop.scheduleTask(in: TimeAmount(scheduling: timeout)) {
            promise.fail(WebSocketError(.timeout, "Connecting to \(what) over HTTP/2 did not finish within \(timeout)"))
        }
        promise.futureResult.whenComplete { _ in timer.cancel() }
        ClientBootstrap(group: eventLoop)
            .connectTimeout(TimeAmount(scheduling: timeout))
            .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    do {
                        try pipeline.addHandler(NIOSSLClientHandler(context: sslContext, serverHostname: serverName))
                    } catch {
                        throw WebSocketError(.tlsFailed, "Cannot use \"\(serverName ?? "")\" as the TLS server name: \(error)")
                    }
                    let alpn = NIOTypedApplicationProtocolNegotiationHandler<Void> { result, channel in
                        channel.eventLoop.makeCompletedFuture {
                            guard case .negotiated("h2") = result else {
                                promise.succeed(.notSupported("The server \(what) did not choose HTTP/2 (ALPN: \(result))"))
                                channel.close(promise: nil)
                                return
                            }
                            var streamConfiguration = NIOHTTP2Handler.StreamConfiguration()
                            streamConfiguration.outboundBufferSizeHighWatermark = writeBufferWaterMark.high
                            streamConfiguration.outboundBufferSizeLowWatermark = writeBufferWaterMark.low
                            let multiplexer = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
                                mode: .client, connectionConfiguration: .init(), streamConfiguration: streamConfiguration
                            ) { stream in
                                // The server opens no streams of its own toward a client.
                                stream.close()
                            }
                            let connection = WebSocketHTTP2Connection(channel: channel, host: host, port: port, multiplexer: multiplexer)
                            try channel.pipeline.syncOperations.addHandler(
                                SettingsObserver(goAway: { connection.serverSentGoAway() }) { enablesConnect in
                                    if enablesConnect {
                                        promise.succeed(.http2(connection))
                                    } else {
                                        promise.succeed(.notSupported("The server \(what) speaks HTTP/2 but does not accept WebSockets over it (no SETTINGS_ENABLE_CONNECT_PROTOCOL)"))
                                        channel.close(promise: nil)
                                    }
                                })
                        }
                    }
                    try pipeline.addHandler(alpn)
                    try pipeline.addHandler(OpenFailureCatcher(promise: promise, peer: what))
                }
            }
            .connect(host: host, port: port)
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    promise.futureResult.whenFailure { _ in channel.close(promise: nil) }
                    channel.closeFuture.whenComplete { _ in
                        promise.fail(WebSocketError(.handshakeFailed, "The server \(what) closed the connection before its HTTP/2 SETTINGS"))
                    }
                case .failure(let error):
                    promise.fail(WebSocketClient.classifyConnectError(error, host: host, port: port, isProxy: false))
                }
            }
        return promise.futureResult
    }

    /// Opens a stream on the connection with `initializer` for its pipeline.
    func openStream(_ initializer: @escaping NIOChannelInitializer) -> EventLoopFuture<Channel> {
        let promise = channel.eventLoop.makePromise(of: Channel.self)
        let multiplexer = self.multiplexer
        channel.eventLoop.execute {
            multiplexer.value.createStreamChannel(promise: promise, initializer)
        }
        return promise.futureResult
    }
}

/// Reports whether the server's first SETTINGS frame enables extended CONNECT (RFC 8441 §3).
private final class SettingsObserver: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    typealias InboundOut = HTTP2Frame

    private var report: ((Bool) -> Void)?
    private let goAway: () -> Void

    init(goAway: @escaping () -> Void, report: @escaping (Bool) -> Void) {
        self.goAway = goAway
        self.report = report
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data).payload {
        case .settings(.settings(let settings)):
            if let report {
                self.report = nil
                report(settings.contains { $0.parameter == .enableConnectProtocol && $0.value == 1 })
            }
        case .goAway:
            goAway()
        default:
            break
        }
        context.fireChannelRead(data)
    }
}

/// Fails the opening of an HTTP/2 connection with the first pipeline error (TLS, protocol).
private final class OpenFailureCatcher: ChannelInboundHandler {
    typealias InboundIn = Any

    private let promise: EventLoopPromise<WebSocketHTTP2Connection.OpenResult>
    private let peer: String

    init(promise: EventLoopPromise<WebSocketHTTP2Connection.OpenResult>, peer: String) {
        self.promise = promise
        self.peer = peer
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(WebSocketClientHandshakeHandler.classify(error, peer: peer))
        context.close(promise: nil)
    }
}
