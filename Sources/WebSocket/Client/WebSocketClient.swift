import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Connects to WebSocket servers: the Swift counterpart of WebSocket-Node's `WebSocketClient`.
///
/// ```swift
/// let client = WebSocketClient()
/// let connection = try await client.connect(url: "wss://example.com/chat", protocols: ["echo"])
/// try await connection.sendUTF("hello")
/// for try await message in connection.messages { print(message) }
/// ```
///
/// Or Node-style: register ``onConnect(_:)`` and ``onConnectFailed(_:)`` (and optionally
/// ``onHttpResponse(_:)``), then call `connect(_:protocols:origin:headers:requestOptions:)`
/// without `await`, which returns at once. The events are emitted for both styles, on the connection's event
/// loop; `connect` listeners run before any message of the new connection is delivered.
///
/// One client may run several connection attempts, one after another or at once;
/// ``abort()`` abandons all that have not finished.
public final class WebSocketClient: Sendable {
    /// The client's options.
    public let configuration: Configuration
    /// Where connections run.
    public let eventLoopGroup: any EventLoopGroup
    /// Where the client logs.
    public let logger: Logger

    let connectHandlers = WebSocketEventHandlers<WebSocketConnection>()
    let connectFailedHandlers = WebSocketEventHandlers<WebSocketError>()
    let httpResponseHandlers = WebSocketEventHandlers<(HTTPResponse, WebSocketClient)>()
    private let attempts = NIOLockedValueBox<(next: UInt64, live: [UInt64: EventLoopPromise<WebSocketConnection>])>((0, [:]))
    private let cachedTLSContext = NIOLockedValueBox<NIOSSLContext?>(nil)
    private let cachedHTTP2TLSContext = NIOLockedValueBox<NIOSSLContext?>(nil)
    /// With `configuration.http2`: the HTTP/2 connection (or the finding that there is none to
    /// have) per `host:port`, shared by this client's WebSockets.
    private let http2Pool = NIOLockedValueBox<[String: HTTP2PoolEntry]>([:])

    /// A server's answer other than 101 Switching Protocols, as the `httpResponse` event
    /// gives it (Node's `http.IncomingMessage`: status, headers and body).
    public struct HTTPResponse: Sendable {
        /// The status line and headers.
        public var head: HTTPResponseHead
        /// The body, at most the first 64 KiB of it.
        public var body: ByteBuffer

        /// The status code, e.g. 404.
        public var statusCode: Int { Int(head.status.code) }
        /// The reason phrase, e.g. `Not Found`.
        public var statusMessage: String { head.status.reasonPhrase }
        /// The response headers.
        public var headers: HTTPHeaders { head.headers }

        /// Creates a response value.
        public init(head: HTTPResponseHead, body: ByteBuffer = ByteBuffer()) {
            self.head = head
            self.body = body
        }
    }

    /// Carries the non-101 response, when there was one, to the `httpResponse` event.
    struct HandshakeFailure: Error {
        var error: WebSocketError
        var response: HTTPResponse?
    }

    /// Creates a client.
    ///
    /// - Parameters:
    ///   - configuration: the options; WebSocket-Node's client defaults unless changed.
    ///   - eventLoopGroup: where connections run; by default NIO's shared group.
    ///   - logger: where to log.
    public init(
        configuration: Configuration = Configuration(),
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "websocket.client")
    ) {
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
    }

    // MARK: Events

    /// Registers a handler for `connect`: the handshake succeeded. It runs on the connection's
    /// event loop right after the handshake, before the socket is read again; messages that
    /// came with the handshake wait for the first `message` listener, so none is missed.
    @discardableResult
    public func onConnect(_ handler: @escaping @Sendable (WebSocketConnection) -> Void) -> WebSocketHandlerToken {
        connectHandlers.add(handler)
    }

    /// Registers a handler for `connectFailed`, with a ``WebSocketError`` whose ``WebSocketError/code``
    /// says what went wrong: `.dnsFailed`, `.connectionRefused`, `.connectionFailed`, `.timeout`,
    /// `.tlsFailed`, `.proxyFailed`, `.unexpectedStatus`, `.invalidAcceptKey`,
    /// `.protocolNotOffered`, `.extensionNotOffered`, `.handshakeFailed`, `.invalidURL`,
    /// `.invalidArgument` or `.aborted`; its message gives the details.
    ///
    /// When the server refused the handshake (`.unexpectedStatus`), the error's
    /// ``WebSocketError/response`` has the status code, the headers and the
    /// `X-WebSocket-Reject-Reason` as fields. That case goes to ``onHttpResponse(_:)`` instead
    /// while any `httpResponse` handler is registered.
    @discardableResult
    public func onConnectFailed(_ handler: @escaping @Sendable (WebSocketError) -> Void) -> WebSocketHandlerToken {
        connectFailedHandlers.add(handler)
    }

    /// Registers a handler for `httpResponse`: the server answered with a status other than
    /// 101 (over HTTP/2: other than 2xx). While any such handler is registered, it replaces
    /// `connectFailed` for that case: the `connectFailed` handlers are not called for it.
    ///
    /// It does not change the `async` `connect`: that throws the same `.unexpectedStatus`
    /// ``WebSocketError`` (with ``WebSocketError/response``) whether or not an `httpResponse`
    /// handler is registered; the handlers are called too, before it throws.
    @discardableResult
    public func onHttpResponse(_ handler: @escaping @Sendable (HTTPResponse, WebSocketClient) -> Void) -> WebSocketHandlerToken {
        httpResponseHandlers.add { handler($0.0, $0.1) }
    }

    /// Unregisters a handler.
    public func removeHandler(_ token: WebSocketHandlerToken) { token.cancel() }

    // MARK: Connecting

    /// Starts connecting to `url` and returns at once; the outcome comes as `connect`,
    /// `connectFailed` or `httpResponse`.
    ///
    /// - Parameters:
    ///   - url: `ws://` or `wss://`, with a host name, an IPv4 address or an IPv6 literal in
    ///     brackets (`ws://[::1]:8080/`), an optional port, path and query. `user:password@`
    ///     in the URL is sent as `Authorization: Basic`.
    ///   - protocols: the subprotocols to offer, in order of preference.
    ///   - origin: sent as `Origin` (`Sec-WebSocket-Origin` for version 8).
    ///   - headers: extra request headers.
    ///   - requestOptions: a proxy, and TLS settings for this connection.
    ///
    /// The URL comes without a label, as in WebSocket-Node (`client.connect(url, protocols)`):
    /// that is what tells this form from ``connect(url:protocols:origin:headers:requestOptions:)``,
    /// the `async` one, wherever it is called (top-level code, `async` functions or callbacks).
    public func connect(
        _ url: String, protocols: [String] = [], origin: String? = nil, headers: [String: String] = [:],
        requestOptions: RequestOptions? = nil
    ) {
        _ = start(url: url, protocols: protocols, origin: origin, headers: headers, requestOptions: requestOptions)
    }

    /// Connects to `url` and returns the open connection, or throws a ``WebSocketError`` that
    /// says what went wrong (see ``onConnectFailed(_:)`` for the codes). Cancelling the task
    /// aborts the attempt. The parameters are those of
    /// ``connect(_:protocols:origin:headers:requestOptions:)``, the Node-style form, which
    /// returns at once; the events are emitted by this one too.
    ///
    /// A server that refuses (answers other than 101) makes it throw `.unexpectedStatus` with
    /// ``WebSocketError/response`` set: ``WebSocketError/HTTPResponseInfo/statusCode``,
    /// ``WebSocketError/HTTPResponseInfo/headers`` and
    /// ``WebSocketError/HTTPResponseInfo/rejectReason``. Registering ``onHttpResponse(_:)``
    /// does not change that: this still throws, and the `httpResponse` handlers run as well
    /// (in place of the `connectFailed` ones).
    public func connect(
        url: String, protocols: [String] = [], origin: String? = nil, headers: [String: String] = [:],
        requestOptions: RequestOptions? = nil
    ) async throws -> WebSocketConnection {
        let promise = start(url: url, protocols: protocols, origin: origin, headers: headers, requestOptions: requestOptions)
        return try await Self.outcome(of: promise, url: url)
    }

    /// Opens a WebSocket as a new stream of an HTTP/2 connection (RFC 8441) and returns it,
    /// or throws a ``WebSocketError`` (see ``onConnectFailed(_:)``; a server that refuses
    /// answers with a status other than 2xx, which comes as `.unexpectedStatus`, with
    /// ``WebSocketError/response`` set, and to ``onHttpResponse(_:)``). The URL gives the path and `:authority`; `connection` must
    /// lead to the same server. The events are emitted too.
    public func connect(
        url: String, protocols: [String] = [], origin: String? = nil, headers: [String: String] = [:],
        over connection: WebSocketHTTP2Connection
    ) async throws -> WebSocketConnection {
        let promise = start(url: url, protocols: protocols, origin: origin, headers: headers, requestOptions: nil, over: connection)
        return try await Self.outcome(of: promise, url: url)
    }

    /// Waits for an attempt: its connection, or its error; cancelling the task aborts it.
    private static func outcome(of promise: EventLoopPromise<WebSocketConnection>, url: String) async throws -> WebSocketConnection {
        try await withTaskCancellationHandler {
            do {
                return try await promise.futureResult.get()
            } catch let failure as HandshakeFailure {
                throw failure.error
            }
        } onCancel: {
            promise.fail(WebSocketError(.aborted, "The connection attempt to \(url) was cancelled"))
        }
    }

    /// Abandons every connection attempt of this client that has not finished; each fails
    /// with `.aborted`. Connections already open are not affected.
    public func abort() {
        let live = attempts.withLockedValue { Array($0.live.values) }
        for promise in live {
            promise.fail(WebSocketError(.aborted, "The connection attempt was aborted"))
        }
    }

    // MARK: Internals

    /// The keys of ``WebSocketLogMetadata`` for a line about an attempt that has no connection
    /// (yet): the URL's `host:port` and path; no connection id, no subprotocol.
    static func attemptMetadata(_ url: String) -> Logger.Metadata {
        let target = try? WebSocketURL(url)
        return WebSocketLogMetadata.metadata(
            id: nil, remoteAddress: target?.authority ?? "", path: WebSocketLogMetadata.path(of: target?.resource ?? ""), protocol: nil)
    }

    /// Starts an attempt; the returned promise completes with the connection, a
    /// ``HandshakeFailure`` or a ``WebSocketError``. The events are emitted when it completes.
    func start(
        url: String, protocols: [String], origin: String?, headers: [String: String], requestOptions: RequestOptions?,
        over http2Connection: WebSocketHTTP2Connection? = nil
    ) -> EventLoopPromise<WebSocketConnection> {
        let eventLoop = eventLoopGroup.next()
        let promise = eventLoop.makePromise(of: WebSocketConnection.self)
        let id = attempts.withLockedValue { state -> UInt64 in
            state.next += 1
            state.live[state.next] = promise
            return state.next
        }
        promise.futureResult.whenComplete { result in
            self.attempts.withLockedValue { _ = $0.live.removeValue(forKey: id) }
            switch result {
            case .success(let connection):
                self.connectHandlers.emit(connection)
            case .failure(let failure as HandshakeFailure):
                self.logger.debug("WebSocket connect failed", metadata: Self.attemptMetadata(url).merging(["url": "\(url)", "error": "\(failure.error)"]) { $1 })
                if let response = failure.response, !self.httpResponseHandlers.isEmpty {
                    self.httpResponseHandlers.emit((response, self))
                } else {
                    self.connectFailedHandlers.emit(failure.error)
                }
            case .failure(let error):
                self.logger.debug("WebSocket connect failed", metadata: Self.attemptMetadata(url).merging(["url": "\(url)", "error": "\(error)"]) { $1 })
                self.connectFailedHandlers.emit(
                    error as? WebSocketError ?? WebSocketError(.connectionFailed, "Could not connect to \(url): \(error)"))
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
        guard configuration.webSocketVersion == 13 || configuration.webSocketVersion == 8 else {
            throw WebSocketError(.invalidArgument, "webSocketVersion must be 13 or 8, not \(configuration.webSocketVersion)")
        }
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

        let tlsContext: NIOSSLContext?
        do {
            tlsContext = target.isSecure ? try sslContext(for: requestOptions) : nil
        } catch {
            throw WebSocketError(.tlsFailed, "The TLS configuration is not usable: \(error)")
        }
        let serverName = requestOptions?.serverName ?? (target.hostIsIPAddress ? nil : target.host)
        let proxy = requestOptions?.proxy
        let proxyName = proxy.map { ($0.host.contains(":") ? "[\($0.host)]" : $0.host) + ":\($0.port)" }
        let peer = target.authority + (proxyName.map { " (via proxy \($0))" } ?? "")
        let request = WebSocketClientHandshakeHandler.Request(
            target: target.resource, host: target.hostHeader, protocols: protocols, origin: origin,
            headers: headerList, version: configuration.webSocketVersion,
            options: configuration.connectionOptions, logger: logger, peerDescription: peer,
            negotiators: configuration.negotiators)

        let eventLoop = promise.futureResult.eventLoop
        let handshakeTimeout = configuration.handshakeTimeout
        let timer = eventLoop.scheduleTask(in: TimeAmount(scheduling: handshakeTimeout)) {
            promise.fail(WebSocketError(.timeout, "Connecting to \(peer) and the opening handshake did not finish within \(handshakeTimeout)"))
        }
        promise.futureResult.whenComplete { _ in timer.cancel() }

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
                        proxyName: proxyName, promise: promise)
                case .failure(let error):
                    promise.fail(error)
                }
            }
            return
        }
        connectHTTP1(
            target: target, request: request, tlsContext: tlsContext, serverName: serverName, proxy: proxy, proxyName: proxyName,
            promise: promise)
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

    /// The shared HTTP/2 connection to `host:port`, opened on first use and again after it
    /// closed or failed; a server found not to take WebSockets over HTTP/2 is remembered.
    private func pooledHTTP2Connection(host: String, port: Int, serverName: String?) -> EventLoopFuture<WebSocketHTTP2Connection.OpenResult> {
        let key = "\(host):\(port)"
        let eventLoop = eventLoopGroup.next()
        let context: NIOSSLContext
        do {
            context = try cachedHTTP2TLSContext.withLockedValue { cached in
                if let cached { return cached }
                let context = try NIOSSLContext(configuration: WebSocketHTTP2Connection.alpnConfiguration(configuration.tlsConfiguration))
                cached = context
                return context
            }
        } catch {
            return eventLoop.makeFailedFuture(WebSocketError(.tlsFailed, "The TLS configuration is not usable: \(error)"))
        }
        let promise = eventLoop.makePromise(of: WebSocketHTTP2Connection.OpenResult.self)
        let existing = http2Pool.withLockedValue { pool -> EventLoopFuture<WebSocketHTTP2Connection.OpenResult>? in
            switch pool[key] {
            case .opening(let future): return future
            case .known(let result):
                if case .http2(let connection) = result, !connection.isActive { break }
                return eventLoop.makeSucceededFuture(result)
            case nil: break
            }
            pool[key] = .opening(promise.futureResult)
            return nil
        }
        if let existing {
            promise.completeWith(existing)  // (a promise must not be dropped uncompleted)
            return existing
        }
        // Opened outside the lock: its callbacks take the lock.
        WebSocketHTTP2Connection.open(
            host: host, port: port, sslContext: context, serverName: serverName, eventLoop: eventLoop,
            timeout: configuration.handshakeTimeout, writeBufferWaterMark: configuration.writeBufferWaterMark
        ).whenComplete { result in
            self.http2Pool.withLockedValue { pool in
                switch result {
                case .success(let known): pool[key] = .known(known)
                case .failure: pool[key] = nil
                }
            }
            if case .success(.http2(let connection)) = result {
                // Forget it once closed (a new one is opened on the next connect).
                connection.channel.closeFuture.whenComplete { _ in
                    self.http2Pool.withLockedValue { pool in
                        if case .known(.http2(let pooled)) = pool[key], pooled === connection { pool[key] = nil }
                    }
                }
            }
            promise.completeWith(result)
        }
        return promise.futureResult
    }

    /// What the pool holds for `host:port` (for tests): nil, "opening", "http2" or "http1".
    func http2PoolState(host: String, port: Int) -> String? {
        http2Pool.withLockedValue { pool in
            switch pool["\(host):\(port)"] {
            case nil: return nil
            case .opening: return "opening"
            case .known(.http2): return "http2"
            case .known(.notSupported): return "http1"
            }
        }
    }

    /// An entry of the HTTP/2 connection pool.
    enum HTTP2PoolEntry: Sendable {
        case opening(EventLoopFuture<WebSocketHTTP2Connection.OpenResult>)
        case known(WebSocketHTTP2Connection.OpenResult)
    }

    /// Connects over TCP (through the proxy, with TLS) and runs the HTTP/1.1 upgrade.
    private func connectHTTP1(
        target: WebSocketURL, request: WebSocketClientHandshakeHandler.Request, tlsContext: NIOSSLContext?,
        serverName: String?, proxy: HTTPProxy?, proxyName: String?, promise: EventLoopPromise<WebSocketConnection>
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

    private func sslContext(for requestOptions: RequestOptions?) throws -> NIOSSLContext {
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

    /// Characters a subprotocol name (an HTTP token) may not contain, besides controls and space.
    private static let separators = Set("()<>@,;:\\\"/[]?={}")

    static func isToken(_ s: String) -> Bool {
        !s.isEmpty && s.unicodeScalars.allSatisfy { $0.value >= 0x21 && $0.value <= 0x7E && !separators.contains(Character($0)) }
    }

    /// Node's check: every subprotocol is a token; we also refuse duplicates (RFC 6455 §4.1).
    static func validate(protocols: [String]) throws {
        var seen = Set<String>()
        for name in protocols {
            guard isToken(name) else {
                throw WebSocketError(.invalidArgument, "The subprotocol \"\(name)\" is not a valid token (no spaces, controls or separators like , ; / \")")
            }
            guard seen.insert(name.lowercased()).inserted else {
                throw WebSocketError(.invalidArgument, "The subprotocol \"\(name)\" is offered twice")
            }
        }
    }

    /// Turns a TCP connect failure into a ``WebSocketError`` naming the cause.
    static func classifyConnectError(_ error: any Error, host: String, port: Int, isProxy: Bool) -> WebSocketError {
        let what = (isProxy ? "the proxy " : "") + (host.contains(":") ? "[\(host)]" : host) + ":\(port)"
        func isRefused(_ error: any Error) -> Bool {
            (error as? IOError)?.errnoCode == ECONNREFUSED
        }
        if let error = error as? NIOConnectionError {
            if error.connectionErrors.isEmpty, let dns = error.dnsAError ?? error.dnsAAAAError {
                return WebSocketError(.dnsFailed, "Could not resolve the host name \"\(host)\"\(isProxy ? " of the proxy" : ""): \(dns)")
            }
            if !error.connectionErrors.isEmpty, error.connectionErrors.allSatisfy({ isRefused($0.error) }) {
                return WebSocketError(.connectionRefused, "Connection refused by \(what) (nothing listens there?)")
            }
            let details = error.connectionErrors.map { "\($0.target): \($0.error)" }.joined(separator: "; ")
            return WebSocketError(.connectionFailed, "Could not connect to \(what): \(details.isEmpty ? "\(error)" : details)")
        }
        if let error = error as? ChannelError, case .connectTimeout(let amount) = error {
            return WebSocketError(.timeout, "Could not connect to \(what) within \(Double(amount.nanoseconds) / 1e9) s")
        }
        if isRefused(error) {
            return WebSocketError(.connectionRefused, "Connection refused by \(what) (nothing listens there?)")
        }
        if error is SocketAddressError || error is SocketAddressError.UnknownHost {
            return WebSocketError(.dnsFailed, "Could not resolve the host name \"\(host)\": \(error)")
        }
        if let error = error as? WebSocketError { return error }
        return WebSocketError(.connectionFailed, "Could not connect to \(what): \(error)")
    }
}
