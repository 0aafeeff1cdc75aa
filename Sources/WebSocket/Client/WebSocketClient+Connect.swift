import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

// Connecting: an attempt's promise and timeout, then the transport (a TCP connection, through
// a proxy and with TLS, or a stream of an HTTP/2 connection) and the opening handshake.
extension WebSocketClient {
    /// Starts an attempt; the returned promise completes with the connection, a
    /// ``HandshakeFailure`` or a ``WebSocketError``. The events are emitted when it completes,
    /// unless `quiet` (a reconnection's attempt: the ``WebSocketReconnection`` reports it), and
    /// with ``Configuration/reconnect`` set, a connection made by URL is followed by a
    /// reconnection. The attempt runs on `eventLoop`, or on the group's next loop.
    func start(
        url: String, protocols: [String], origin: String?, headers: [String: String], requestOptions: RequestOptions?,
        over http2Connection: WebSocketHTTP2Connection? = nil, on eventLoop: (any EventLoop)? = nil, quiet: Bool = false
    ) -> EventLoopPromise<WebSocketConnection> {
        let eventLoop = eventLoop ?? eventLoopGroup.next()
        let promise = eventLoop.makePromise(of: WebSocketConnection.self)
        let id = attempts.withLockedValue { state -> UInt64 in
            state.next += 1
            state.live[state.next] = promise
            return state.next
        }
        promise.futureResult.whenComplete { result in
            self.attempts.withLockedValue { _ = $0.live.removeValue(forKey: id) }
            guard !quiet else { return }
            switch result {
            case .success(let connection):
                self.connectHandlers.emit(connection)
                if let policy = self.configuration.reconnect, http2Connection == nil {
                    self.reconnection(policy: policy, url: url, protocols: protocols, origin: origin, headers: headers,
                        requestOptions: requestOptions, eventLoop: connection.eventLoop
                    ).follow(connection)
                }
            case .failure(let failure):
                self.emitConnectFailure(failure, url: url)
            }
        }
        do {
            try begin(
                url: url, protocols: protocols, origin: origin, headers: headers, requestOptions: requestOptions,
                over: http2Connection, promise: promise)
        } catch {
            promise.fail(error)
        }
        return promise
    }

    private func begin(
        url: String, protocols: [String], origin: String?, headers: [String: String], requestOptions: RequestOptions?,
        over http2Connection: WebSocketHTTP2Connection?, promise: EventLoopPromise<WebSocketConnection>
    ) throws {
        let target = try WebSocketURL(url)
        if http2Connection == nil { try configuration.reconnect?.validate() }
        try configuration.validate()
        try Self.validate(protocols: protocols)
        var headerList = headers.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        for (name, value) in headerList {
            guard Self.isToken(name), !value.contains(where: { $0 == "\r" || $0 == "\n" }) else {
                throw WebSocketError(.invalidArgument, "Invalid request header \"\(name)\"")
            }
        }
        if let userInfo = target.userInfo, !headers.keys.contains(where: { $0.lowercased() == "authorization" }) {
            headerList.append(("Authorization", "Basic " + Base64.encode(Array(userInfo.utf8))))
        }

        let serverName = requestOptions?.serverName ?? (target.hostIsIPAddress ? nil : target.host)
        let proxy = requestOptions?.proxy
        // An IP address target through a proxy: NIOSSL would check the certificate against the
        // socket's peer, the proxy. Its own check is turned off for that connection and
        // ``WebSocketTLSAddressVerifier`` checks the target's address instead.
        let verifiedAddress = target.isSecure && proxy != nil && serverName == nil && target.hostIsIPAddress ? target.host : nil
        let tlsContext: NIOSSLContext?
        do {
            tlsContext = target.isSecure ? try sslContext(for: requestOptions, checkingHostnames: verifiedAddress == nil) : nil
        } catch {
            throw WebSocketError(.tlsFailed, "The TLS configuration is not usable: \(error)")
        }
        let addressToVerify = verifiedAddress.flatMap { address in
            (requestOptions?.tlsConfiguration ?? configuration.tlsConfiguration).certificateVerification == .fullVerification ? address : nil
        }
        let proxyName = proxy.map { ($0.host.contains(":") ? "[\($0.host)]" : $0.host) + ":\($0.port)" }
        let peer = target.authority + (proxyName.map { " (via proxy \($0))" } ?? "")
        let request = WebSocketClientHandshakeHandler.Request(
            target: target.resource, host: target.hostHeader, protocols: protocols, origin: origin,
            headers: headerList, version: configuration.webSocketVersion,
            options: configuration.connectionOptions, logger: logger, peerDescription: peer,
            negotiators: configuration.negotiators)

        Self.armHandshakeTimeout(configuration.handshakeTimeout, for: promise, peer: peer)

        if let http2Connection {
            guard configuration.webSocketVersion == 13 else {
                throw WebSocketError(.invalidArgument, "WebSockets over HTTP/2 are version 13; this client is configured for version \(configuration.webSocketVersion)")
            }
            Self.openStream(on: http2Connection, request: request, promise: promise)
            return
        }
        let ownTransport = requestOptions.map { $0.proxy != nil || $0.tlsConfiguration != nil || $0.serverName != nil } ?? false
        if configuration.http2, target.isSecure, !ownTransport, configuration.webSocketVersion == 13 {
            // RFC 8441 when the server offers it, on a connection shared with this client's
            // other WebSockets to the same server; HTTP/1.1 otherwise.
            pooledHTTP2Connection(host: target.host, port: target.port, serverName: serverName).whenComplete { result in
                switch result {
                case .success(.http2(let connection)):
                    Self.openStream(on: connection, request: request, promise: promise)
                case .success(.notSupported(let why)):
                    self.logger.debug("WebSocket over HTTP/1.1", metadata: Self.attemptMetadata(url).merging(["url": "\(url)", "reason": "\(why)"]) { $1 })
                    self.connectHTTP1(
                        target: target, request: request, tlsContext: tlsContext, serverName: serverName, proxy: proxy,
                        proxyName: proxyName, addressToVerify: addressToVerify, promise: promise)
                case .failure(let error):
                    promise.fail(error)
                }
            }
            return
        }
        connectHTTP1(
            target: target, request: request, tlsContext: tlsContext, serverName: serverName, proxy: proxy, proxyName: proxyName,
            addressToVerify: addressToVerify, promise: promise)
    }

    /// The keys of ``WebSocketLogMetadata`` for a line about an attempt that has no connection
    /// (yet): the URL's `host:port` and path; no connection id, no subprotocol.
    static func attemptMetadata(_ url: String) -> Logger.Metadata {
        let target = try? WebSocketURL(url)
        return WebSocketLogMetadata.metadata(
            id: nil, remoteAddress: target?.authority ?? "", path: WebSocketLogMetadata.path(of: target?.resource ?? ""), protocol: nil)
    }

    /// The ``WebSocketError`` an attempt failed with.
    static func webSocketError(_ failure: any Error, url: String) -> WebSocketError {
        if let failure = failure as? HandshakeFailure { return failure.error }
        return failure as? WebSocketError ?? WebSocketError(.connectionFailed, "Could not connect to \(url): \(failure)")
    }

    /// Emits `connectFailed`, or `httpResponse` for a refusal while such handlers are registered.
    func emitConnectFailure(_ failure: any Error, url: String) {
        let error = Self.webSocketError(failure, url: url)
        logger.debug("WebSocket connect failed", metadata: Self.attemptMetadata(url).merging(["url": "\(url)", "error": "\(error)"]) { $1 })
        if let response = (failure as? HandshakeFailure)?.response, !httpResponseHandlers.isEmpty {
            httpResponseHandlers.emit((response, self))
        } else {
            connectFailedHandlers.emit(error)
        }
    }

    /// Opens a stream on `connection` for the opening handshake of `request`.
    private static func openStream(
        on connection: WebSocketHTTP2Connection, request: WebSocketClientHandshakeHandler.Request,
        promise: EventLoopPromise<WebSocketConnection>
    ) {
        connection.openStream { stream in
            stream.eventLoop.makeCompletedFuture {
                try stream.pipeline.syncOperations.addHandler(WebSocketHTTP2ClientStreamHandler(request: request, promise: promise))
            }
        }.whenComplete { result in
            switch result {
            case .success(let stream):
                // Whatever ends the attempt unsuccessfully (timeout, abort) resets the stream.
                promise.futureResult.whenFailure { _ in stream.close(promise: nil) }
            case .failure(let error):
                promise.fail(
                    WebSocketError(.connectionFailed, "Could not open an HTTP/2 stream to \(request.peerDescription): \(error)"))
            }
        }
    }

    /// Fails `promise` with `.timeout` if it has not completed `timeout` from now, by the clock
    /// of its event loop (virtual time on a test's event loop); the timer ends with the promise.
    static func armHandshakeTimeout(_ timeout: Duration, for promise: EventLoopPromise<WebSocketConnection>, peer: String) {
        let timer = promise.futureResult.eventLoop.scheduleTask(in: TimeAmount(scheduling: timeout)) {
            promise.fail(WebSocketError(.timeout, "Connecting to \(peer) and the opening handshake did not finish within \(timeout)"))
        }
        promise.futureResult.whenComplete { _ in timer.cancel() }
    }

    /// Connects over TCP (through the proxy, with TLS) and runs the HTTP/1.1 upgrade.
    private func connectHTTP1(
        target: WebSocketURL, request: WebSocketClientHandshakeHandler.Request, tlsContext: NIOSSLContext?,
        serverName: String?, proxy: HTTPProxy?, proxyName: String?, addressToVerify: String? = nil,
        promise: EventLoopPromise<WebSocketConnection>
    ) {
        let eventLoop = promise.futureResult.eventLoop
        let handshakeTimeout = configuration.handshakeTimeout
        let (connectHost, connectPort) = proxy.map { ($0.host, $0.port) } ?? (target.host, target.port)
        let proxyAuthorization = proxy?.authorization?.headerValue
        let nodelay = configuration.disableNagleAlgorithm
        ClientBootstrap(group: eventLoop)
            .connectTimeout(TimeAmount(scheduling: handshakeTimeout))
            .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: nodelay ? 1 : 0)
            .channelOption(ChannelOptions.recvAllocator, value: WebSocketReceiveBuffers.sizes)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    if let proxyName {
                        try pipeline.addHandler(
                            WebSocketProxyConnectHandler(
                                target: target.authority, proxyDescription: proxyName, authorization: proxyAuthorization,
                                failure: { promise.fail(HandshakeFailure(error: $0, response: nil)) }))
                    }
                    if let tlsContext {
                        do {
                            try pipeline.addHandler(NIOSSLClientHandler(context: tlsContext, serverHostname: serverName))
                        } catch {
                            throw WebSocketError(.tlsFailed, "Cannot use \"\(serverName ?? "")\" as the TLS server name: \(error)")
                        }
                        if let addressToVerify {
                            try pipeline.addHandler(
                                WebSocketTLSAddressVerifier(address: addressToVerify) { promise.fail(HandshakeFailure(error: $0, response: nil)) })
                        }
                    }
                    let encoder = HTTPRequestEncoder()
                    let decoder = ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .fireError))
                    let handshake = WebSocketClientHandshakeHandler(request: request, encoder: encoder, decoder: decoder, promise: promise)
                    try pipeline.addHandlers([encoder, decoder, handshake])
                }
            }
            .connect(host: connectHost, port: connectPort)
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    // Whatever ends the attempt unsuccessfully (timeout, abort) closes the socket.
                    promise.futureResult.whenFailure { _ in channel.close(promise: nil) }
                case .failure(let error):
                    promise.fail(Self.classifyConnectError(error, host: connectHost, port: connectPort, isProxy: proxy != nil))
                }
            }
    }

    /// The TLS context of a connection; `checkingHostnames: false` turns NIOSSL's host name check
    /// off (the chain is still verified) for a connection whose address is checked by
    /// ``WebSocketTLSAddressVerifier``.
    private func sslContext(for requestOptions: RequestOptions?, checkingHostnames: Bool = true) throws -> NIOSSLContext {
        if !checkingHostnames {
            var tls = requestOptions?.tlsConfiguration ?? configuration.tlsConfiguration
            if tls.certificateVerification == .fullVerification { tls.certificateVerification = .noHostnameVerification }
            return try NIOSSLContext(configuration: tls)
        }
        if let custom = requestOptions?.tlsConfiguration {
            return try NIOSSLContext(configuration: custom)
        }
        return try cachedTLSContext.withLockedValue { cached in
            if let cached { return cached }
            let context = try NIOSSLContext(configuration: configuration.tlsConfiguration)
            cached = context
            return context
        }
    }
}
