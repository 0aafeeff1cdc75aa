import NIOCore
import NIOHTTP2
import NIOPosix
import NIOSSL
import NIOTLS

// Listening: the listener's bootstrap and each accepted connection's pipeline (TLS, then ALPN's
// choice of HTTP/2 or HTTP/1.1 where HTTP/2 is on), the HTTP/2 pipeline, and the report of a TLS
// handshake that failed before ALPN chose.
extension WebSocketServer {
    /// Starts listening on `host:port` (port 0 picks a free one) and returns the bound address;
    /// with `tlsConfiguration`, the listener speaks `wss://`. May be called several times to
    /// listen on several addresses, plain and TLS alike. The first call starts the configured
    /// ``Configuration/broker`` (see ``startBroker()``), and fails if it cannot start.
    @discardableResult
    public func listen(host: String = "0.0.0.0", port: Int, tlsConfiguration: TLSConfiguration? = nil) async throws -> SocketAddress {
        try configuration.validate()
        try await startBroker()
        let sslContext: NIOSSLContext?
        let http2 = configuration.http2 && tlsConfiguration != nil
        do {
            sslContext = try tlsConfiguration.map { tls in
                var tls = tls
                if http2 && tls.applicationProtocols.isEmpty {
                    tls.applicationProtocols = ["h2", "http/1.1"]
                }
                return try NIOSSLContext(configuration: tls)
            }
        } catch {
            throw WebSocketError(.invalidArgument, "Invalid TLS configuration for \(host):\(port): \(error)")
        }
        let nodelay = configuration.disableNagleAlgorithm
        var bootstrap = ServerBootstrap(group: eventLoopGroup)
            .serverChannelOption(ChannelOptions.backlog, value: 256)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
        #if os(Linux)
        // Accepted sockets inherit TCP_NODELAY from the listening socket on Linux: one
        // setsockopt per listener instead of one per connection (and no per-connection chain of
        // option futures, ~5% of a handshake's CPU in the W4 profile).
        bootstrap = bootstrap.serverChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: nodelay ? 1 : 0)
        #else
        bootstrap = bootstrap.childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: nodelay ? 1 : 0)
        #endif
        let channel = try await bootstrap
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.syncOptions?.setOption(ChannelOptions.maxMessagesPerRead, value: 16)
                    try channel.syncOptions?.setOption(ChannelOptions.recvAllocator, value: WebSocketReceiveBuffers.sizes)
                    if let sslContext {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: sslContext))
                    }
                    if http2 {
                        // ALPN decides: h2 gets the HTTP/2 pipeline (RFC 8441), anything else HTTP/1.1.
                        // A client that never finishes TLS is cut off like a slow HTTP/1.1 request.
                        let timeout = TimeAmount(scheduling: self.configuration.handshakeTimeout)
                        let timer = channel.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
                        let reporter = TLSFailureReporter(server: self)
                        let alpn = NIOTypedApplicationProtocolNegotiationHandler<Void> { result, channel in
                            timer.cancel()
                            return channel.eventLoop.makeCompletedFuture {
                                // From here on the protocol's own handlers report errors.
                                _ = channel.pipeline.syncOperations.removeHandler(reporter)
                                if case .negotiated("h2") = result {
                                    try self.installHTTP2(on: channel)
                                } else {
                                    try WebSocketServerHandshakeHandler.install(on: channel, server: self)
                                }
                            }
                        }
                        try channel.pipeline.syncOperations.addHandlers([alpn, reporter])
                    } else {
                        try WebSocketServerHandshakeHandler.install(on: channel, server: self)
                    }
                }
            }
            .bind(host: host, port: port)
            .get()
        state.withLockedValue { $0.listeners.append(channel) }
        guard let address = channel.localAddress else {
            throw WebSocketError(.connectionFailed, "The listener on \(host):\(port) has no local address")
        }
        logger.info("WebSocket server listening", metadata: ["address": "\(address)", "tls": "\(tlsConfiguration != nil)"])
        return address
    }

    /// The HTTP/2 pipeline of a connection that chose h2 by ALPN: SETTINGS_ENABLE_CONNECT_PROTOCOL
    /// = 1 so clients may open WebSockets as extended CONNECT streams, each stream handled by a
    /// ``WebSocketHTTP2ServerStreamHandler``; an idle connection (no stream for
    /// `http2IdleTimeout`) is closed with GOAWAY.
    func installHTTP2(on channel: Channel) throws {
        let configuration = self.configuration
        var connectionConfiguration = NIOHTTP2Handler.ConnectionConfiguration()
        connectionConfiguration.initialSettings = [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: configuration.http2MaxConcurrentStreams),
            HTTP2Setting(parameter: .maxHeaderListSize, value: configuration.maxHandshakeSize),
            HTTP2Setting(parameter: .enableConnectProtocol, value: 1),
        ]
        var streamConfiguration = NIOHTTP2Handler.StreamConfiguration()
        streamConfiguration.outboundBufferSizeHighWatermark = configuration.writeBufferWaterMark.high
        streamConfiguration.outboundBufferSizeLowWatermark = configuration.writeBufferWaterMark.low
        let management = NIOHTTP2ServerConnectionManagementHandler(
            eventLoop: channel.eventLoop,
            configuration: .init(
                maxIdleTime: TimeAmount(scheduling: configuration.http2IdleTimeout), maxAge: nil,
                maxGraceTime: TimeAmount(scheduling: configuration.closeTimeout) + .seconds(1), keepalive: nil))
        let pipeline = channel.pipeline.syncOperations
        _ = try pipeline.configureHTTP2Pipeline(
            mode: .server, connectionConfiguration: connectionConfiguration, streamConfiguration: streamConfiguration,
            streamDelegate: management.http2StreamDelegate
        ) { stream in
            stream.eventLoop.makeCompletedFuture {
                try stream.pipeline.syncOperations.addHandler(WebSocketHTTP2ServerStreamHandler(server: self))
            }
        }
        try pipeline.addHandler(management)
        try pipeline.addHandler(WebSocketHTTP2ConnectionErrorHandler(server: self))
        // The handler starts its idle timer on channelActive, which it missed: ALPN runs after
        // the channel became active. Deliver it (it passes it on to the error handler only).
        if channel.isActive {
            management.channelActive(context: try pipeline.context(handler: management))
        }
        let id = ObjectIdentifier(channel)
        state.withLockedValue { $0.http2Connections[id] = channel }
        channel.closeFuture.whenComplete { _ in
            self.state.withLockedValue { _ = $0.http2Connections.removeValue(forKey: id) }
        }
    }
}

/// Reports a failed TLS handshake as `upgradeError` while ALPN has not yet chosen the
/// protocol (afterwards the HTTP/1.1 or HTTP/2 handlers report errors), and closes.
final class TLSFailureReporter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = Any

    private let server: WebSocketServer
    private var reported = false

    init(server: WebSocketServer) {
        self.server = server
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !reported {
            reported = true
            server.upgradeErrorHandlers.emit(WebSocketError(.handshakeFailed, "TLS handshake failed: \(error)"))
        }
        context.close(promise: nil)
    }
}
