import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// A WebSocket server: listens for HTTP upgrade requests, emits `request` for each, and keeps
/// track of the open connections. The Swift counterpart of WebSocket-Node's
/// `WebSocketServer`, with its own embedded HTTP/1.1 listener (Node's `http.createServer`).
///
/// ```swift
/// let server = WebSocketServer(configuration: .init())
/// server.onRequest { request in
///     let connection = try? request.accept(protocol: request.requestedProtocols.first)
///     connection?.onMessage { message in connection?.send(message) }
/// }
/// let address = try await server.listen(host: "127.0.0.1", port: 8080)
/// ```
public final class WebSocketServer: Sendable {
    /// The server's options.
    public let configuration: Configuration
    /// The event loop group listeners and connections run on.
    public let eventLoopGroup: any EventLoopGroup
    /// Where the server logs.
    public let logger: Logger
    /// The listeners ``run()`` starts (``listen(host:port:tlsConfiguration:)`` adds more).
    public let listeners: [Listener]

    struct State {
        var listeners: [Channel] = []
        var connections: [ObjectIdentifier: WebSocketConnection] = [:]
        /// Requests admitted under `maxConnections` and not yet decided.
        var requestsInProgress = 0
        /// Open HTTP/2 connections (each may carry many WebSockets), for shutDown's GOAWAY.
        var http2Connections: [ObjectIdentifier: Channel] = [:]
        var httpHandler: PlainHTTPHandler?
        var requestsContinuation: AsyncStream<WebSocketRequest>.Continuation?
        var requests: AsyncStream<WebSocketRequest>?
    }
    let state = NIOLockedValueBox(State())

    let requestHandlers = WebSocketEventHandlers<WebSocketRequest>()
    let connectHandlers = WebSocketEventHandlers<WebSocketConnection>()
    let closeHandlers = WebSocketEventHandlers<(WebSocketConnection, Int, String)>()
    let upgradeErrorHandlers = WebSocketEventHandlers<any Error>()
    /// The tasks of scoped connection handlers (WebSocketServer+Scoped.swift).
    let scopedHandlers = WebSocketScopedHandlers()
    /// Topics: subscriptions and the delivery of published messages (WebSocketServer+Topics.swift).
    let topicRegistry: WebSocketTopicRegistry
    /// The server's swift-metrics objects; nil without a metrics backend (Metrics/).
    let metrics = WebSocketServerMetrics.resolve()

    /// A plain (non-upgrade) HTTP request handler: gets the request head and answers with a
    /// status, extra headers and a body.
    ///
    /// The body goes out as `text/plain; charset=utf-8` unless the headers name a `Content-Type`.
    /// The server sets `Content-Length` and closes the connection after the answer, so a
    /// `Content-Length`, `Transfer-Encoding` or `Connection` header given here is ignored, as is a
    /// header whose name is not an HTTP token.
    public typealias PlainHTTPHandler = @Sendable (HTTPRequestHead) -> (status: HTTPResponseStatus, headers: [String: String], body: String)

    /// The headers of a plain answer (a rejection, or the plain HTTP handler's) after its
    /// length, for HTTP/1.1 and HTTP/2 alike: the default Content-Type unless `extra` names one,
    /// then `extra` in name order without the headers that frame the response (Content-Length,
    /// Transfer-Encoding, Connection: the server's alone). Each protocol still drops the names
    /// it cannot carry.
    static func plainAnswerHeaders(_ extra: [String: String]) -> [(name: String, value: String)] {
        var headers: [(name: String, value: String)] = []
        if !extra.keys.contains(where: { $0.lowercased() == "content-type" }) {
            headers.append(("Content-Type", "text/plain; charset=utf-8"))
        }
        for (name, value) in extra.sorted(by: { $0.key < $1.key }) {
            switch name.lowercased() {
            case "content-length", "transfer-encoding", "connection": continue
            default: headers.append((name, value))
            }
        }
        return headers
    }

    /// Creates a server. It listens once ``listen(host:port:tlsConfiguration:)`` is called
    /// (or, as a `Service`, when ``run()`` starts its `listeners`).
    ///
    /// - Parameters:
    ///   - configuration: the options; WebSocket-Node's defaults unless changed.
    ///   - eventLoopGroup: where to run; by default NIO's shared group with a thread per core.
    ///   - logger: where to log connection events.
    ///   - listeners: addresses for ``run()`` to listen on (as a ServiceLifecycle `Service`).
    public init(
        configuration: Configuration = Configuration(),
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "websocket.server"),
        listeners: [Listener] = []
    ) {
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        self.listeners = listeners
        self.topicRegistry = WebSocketTopicRegistry(configuration: configuration)
    }

    // MARK: Events

    /// Registers a handler for `request`: a valid upgrade request to accept or reject. Not
    /// emitted with `autoAcceptConnections`.
    @discardableResult
    public func onRequest(_ handler: @escaping @Sendable (WebSocketRequest) -> Void) -> WebSocketHandlerToken {
        requestHandlers.add(handler)
    }

    /// Registers a handler for `connect`: a connection was accepted.
    @discardableResult
    public func onConnect(_ handler: @escaping @Sendable (WebSocketConnection) -> Void) -> WebSocketHandlerToken {
        connectHandlers.add(handler)
    }

    /// Registers a handler for `close(connection, reasonCode, description)`.
    @discardableResult
    public func onClose(_ handler: @escaping @Sendable (WebSocketConnection, Int, String) -> Void) -> WebSocketHandlerToken {
        closeHandlers.add { handler($0.0, $0.1, $0.2) }
    }

    /// Registers a handler for `upgradeError`: a malformed upgrade request was refused.
    @discardableResult
    public func onUpgradeError(_ handler: @escaping @Sendable (any Error) -> Void) -> WebSocketHandlerToken {
        upgradeErrorHandlers.add(handler)
    }

    /// Sets the handler for plain HTTP requests (not upgrades). Default: 404.
    public func setHTTPHandler(_ handler: PlainHTTPHandler?) {
        state.withLockedValue { $0.httpHandler = handler }
    }

    /// The `request` events as an async sequence: `for await request in server.requests`.
    /// Requests are buffered (up to 64) until taken; each must be accepted or rejected within
    /// `requestTimeout`, like any other. ``shutDown()`` ends the sequence.
    ///
    /// With ServiceLifecycle, use ``run(handlingRequests:)`` instead: a second service iterating
    /// `requests` beside the server in one `ServiceGroup` returns when the server's shutdown
    /// ends the sequence, before the group asked that service to stop, and the group throws
    /// `ServiceGroupError.serviceFinishedUnexpectedly`.
    public var requests: AsyncStream<WebSocketRequest> {
        state.withLockedValue { state in
            if let existing = state.requests { return existing }
            let (stream, continuation) = AsyncStream.makeStream(of: WebSocketRequest.self, bufferingPolicy: .bufferingOldest(64))
            state.requests = stream
            state.requestsContinuation = continuation
            return stream
        }
    }

    // MARK: Listening (listen itself and the connections' pipelines: WebSocketServer+Listen.swift)

    /// Adds the server's HTTP/1.1 and handshake handlers to `channel`, for users who run their own
    /// NIO server: call it from a `childChannelInitializer`, on the channel's event loop. Upgrade
    /// requests then become `request` events of this server like those of its own listeners.
    public func configurePipeline(for channel: Channel) throws {
        try WebSocketServerHandshakeHandler.install(on: channel, server: self)
    }

    /// The addresses the server listens on.
    public var localAddresses: [SocketAddress] {
        state.withLockedValue { $0.listeners.compactMap(\.localAddress) }
    }

    /// Starts the configured ``Configuration/broker`` (a cluster's link to the other servers):
    /// ``listen(host:port:tlsConfiguration:)`` calls it, so call it yourself only when the
    /// server never listens (its pipeline runs in your own NIO server, through
    /// ``configurePipeline(for:)``). It runs once; later calls return when that start has. Throws
    /// ``WebSocketError/Code-swift.struct/brokerUnavailable`` (or the broker's own error) when the
    /// broker cannot start; then it may be called again. Nothing to do with the default broker.
    public func startBroker() async throws {
        try await topicRegistry.startBroker()
    }

    /// Stops listening (Node's `unmount`); open connections stay open.
    public func unmount() async {
        let listeners = state.withLockedValue { state -> [Channel] in
            defer { state.listeners.removeAll() }
            return state.listeners
        }
        for listener in listeners {
            try? await listener.close()
        }
    }

    /// The number of open connections.
    public var connectionCount: Int { state.withLockedValue { $0.connections.count } }

    /// The open connections.
    public var connections: [WebSocketConnection] {
        state.withLockedValue { Array($0.connections.values) }
    }

    /// Closes every open connection gracefully (close code 1000).
    public func closeAllConnections() {
        for connection in connections {
            try? connection.close()
        }
    }

    /// Stops listening, closes every connection with 1001 (going away), and waits until they
    /// are closed (each takes at most `closeTimeout`). HTTP/2 connections get a GOAWAY and close
    /// once their streams have. Scoped connection handlers
    /// (``WebSocketRequest/accept(protocol:origin:cookies:handler:)``) are waited for too: the
    /// 1001 ends their `messages` loops (they return `nil`, as when a client closes, so the code
    /// after the loop runs), and each handler's task is cancelled once its connection has
    /// closed, to wake whatever else it waits for; a handler that ignores cancellation holds up
    /// the shutdown. The ``Configuration/broker`` stops last.
    public func shutDown() async {
        await unmount()
        let http2Connections = state.withLockedValue { state -> [Channel] in
            state.requestsContinuation?.finish()
            return Array(state.http2Connections.values)
        }
        for channel in http2Connections {
            channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
        scopedHandlers.cancelAll()
        let open = connections
        for connection in open {
            try? connection.close(reasonCode: WebSocketCloseReason.goingAway)
        }
        for connection in open {
            try? await connection.socket.closeFuture.get()
        }
        await scopedHandlers.waitForAll()
        // Last: what the closing connections' handlers published still goes out.
        await topicRegistry.shutDownBroker()
    }

    /// The number of open HTTP/2 connections (each may carry several WebSockets).
    public var http2ConnectionCount: Int { state.withLockedValue { $0.http2Connections.count } }

    // MARK: Internals

    func handleRequest(_ request: WebSocketRequest) {
        if configuration.autoAcceptConnections {
            _ = try? request.accept(protocol: request.requestedProtocols.first, origin: request.origin)
            return
        }
        let continuation = state.withLockedValue { $0.requestsContinuation }
        var taken = requestHandlers.emit(request)
        if let continuation, case .enqueued = continuation.yield(request) { taken = true }
        if !taken {
            request.reject(status: 503, reason: "No WebSocket request handler is registered")
        }
    }

    /// Whether `maxConnections` is reached, counting open connections and the requests still
    /// being decided: `.refused` (reported as `upgradeError`), or `.admitted` with the request's
    /// place under the cap (nil when there is no cap), released when the request is decided or
    /// goes away. An accepted request's place is released at `accept`, a moment before its
    /// connection is counted on the event loop: in that window one more request may pass.
    func reserveConnection() -> WebSocketConnectionSlot.Reservation {
        guard let max = configuration.maxConnections else { return .admitted(nil) }
        let admitted = state.withLockedValue { state -> Bool in
            guard state.connections.count + state.requestsInProgress < max else { return false }
            state.requestsInProgress += 1
            return true
        }
        guard admitted else {
            upgradeErrorHandlers.emit(
                WebSocketError(
                    .handshakeFailed, "Refused a connection: the server has its maximum of \(max) connections (handshakes in progress included)"))
            return .refused
        }
        return .admitted(WebSocketConnectionSlot(server: self))
    }

    /// A request that held a place under `maxConnections` was decided or went away.
    func releaseConnectionSlot() {
        state.withLockedValue { $0.requestsInProgress -= 1 }
    }

    /// The timer that refuses `request` with 503 if it is still undecided after
    /// `requestTimeout` (HTTP/1.1 and HTTP/2 alike). The caller keeps it, to cancel it on the
    /// decision, *before* handing the request on with ``handleRequest(_:)``: an application may
    /// decide at once, and a timer left running would keep the request, its handler and the new
    /// connection alive for `requestTimeout`.
    func requestTimeout(for request: WebSocketRequest, on eventLoop: any EventLoop) -> Scheduled<Void> {
        let timeout = configuration.requestTimeout
        return eventLoop.scheduleTask(in: TimeAmount(scheduling: timeout)) {
            guard !request.isDecided else { return }
            self.upgradeErrorHandlers.emit(
                WebSocketError(.timeout, "The request for \(request.resource) was not accepted or rejected within \(timeout)"))
            request.reject(status: 503, reason: "The request was not accepted or rejected in time")
        }
    }

    func handlePlainRequest(
        _ head: HTTPRequestHead, channel: Channel,
        respond: (HTTPResponseStatus, [String: String], String) -> Void
    ) {
        if let handler = state.withLockedValue({ $0.httpHandler }) {
            let answer = handler(head)
            respond(answer.status, answer.headers, answer.body)
        } else {
            respond(.notFound, [:], "Not Found")
        }
    }

    func connectionOpened(_ connection: WebSocketConnection) {
        state.withLockedValue { $0.connections[ObjectIdentifier(connection)] = connection }
        metrics?.connectionOpened()
        let open = connection.attach(to: self)
        connectHandlers.emit(connection)
        if !open {
            // It closed before it was counted: count it out again, with its close event.
            connection.reportClosedBeforeAttach(to: self)
        }
    }

    /// A counted connection closed (called by the connection, before its own close handlers).
    func connectionClosed(_ connection: WebSocketConnection, code: Int, description: String) {
        state.withLockedValue { _ = $0.connections.removeValue(forKey: ObjectIdentifier(connection)) }
        metrics?.connectionClosed(code: code)
        closeHandlers.emit((connection, code, description))
    }
}
