import Logging
import NIOConcurrencyHelpers
import NIOCore

/// One open WebSocket connection, in either role: the Swift counterpart of WebSocket-Node's
/// `WebSocketConnection`.
///
/// Every method may be called from any thread or task; the work hops to the connection's event
/// loop. Events are delivered on that event loop, in registration order, never concurrently
/// with each other for one connection.
///
/// No message is lost to a late listener: messages that arrive while nobody listens (no
/// `onMessage`/`onFrame` handler, ``messages`` not yet made) wait, in order, for the first
/// listener; past `maxReceivedMessageSize` bytes of them the connection stops reading until
/// one comes. So a connection handed to `async` code can be subscribed to at leisure.
public final class WebSocketConnection: Sendable {
    // MARK: Close reason constants, as WebSocket-Node names them

    /// 1000, see ``WebSocketCloseReason/normal``.
    public static let CLOSE_REASON_NORMAL = WebSocketCloseReason.normal
    /// 1001, see ``WebSocketCloseReason/goingAway``.
    public static let CLOSE_REASON_GOING_AWAY = WebSocketCloseReason.goingAway
    /// 1002, see ``WebSocketCloseReason/protocolError``.
    public static let CLOSE_REASON_PROTOCOL_ERROR = WebSocketCloseReason.protocolError
    /// 1003, see ``WebSocketCloseReason/unprocessableInput``.
    public static let CLOSE_REASON_UNPROCESSABLE_INPUT = WebSocketCloseReason.unprocessableInput
    /// 1004, reserved, undefined meaning.
    public static let CLOSE_REASON_RESERVED = WebSocketCloseReason.reserved
    /// 1005, not to be used on the wire.
    public static let CLOSE_REASON_NOT_PROVIDED = WebSocketCloseReason.notProvided
    /// 1006, not to be used on the wire.
    public static let CLOSE_REASON_ABNORMAL = WebSocketCloseReason.abnormal
    /// 1007, see ``WebSocketCloseReason/invalidData``.
    public static let CLOSE_REASON_INVALID_DATA = WebSocketCloseReason.invalidData
    /// 1008, see ``WebSocketCloseReason/policyViolation``.
    public static let CLOSE_REASON_POLICY_VIOLATION = WebSocketCloseReason.policyViolation
    /// 1009, see ``WebSocketCloseReason/messageTooBig``.
    public static let CLOSE_REASON_MESSAGE_TOO_BIG = WebSocketCloseReason.messageTooBig
    /// 1010, see ``WebSocketCloseReason/extensionRequired``.
    public static let CLOSE_REASON_EXTENSION_REQUIRED = WebSocketCloseReason.extensionRequired
    /// 1011, see ``WebSocketCloseReason/internalServerError``.
    public static let CLOSE_REASON_INTERNAL_SERVER_ERROR = WebSocketCloseReason.internalServerError

    // MARK: Properties

    /// The underlying NIO channel (Node's `net.Socket`); `socket.remoteAddress` is the TCP peer.
    public let socket: Channel
    /// The subprotocol chosen for this connection, lower-cased; `nil` when none was.
    public let `protocol`: String?
    /// The extensions negotiated for this connection.
    public let extensions: [WebSocketExtension]
    /// The peer's IP address. On a server behind a trusted proxy, the rightmost `X-Forwarded-For`
    /// address that is not a trusted proxy (unless `ignoreXForwardedFor`; see
    /// ``WebSocketRequest/remoteAddress``); `socket.remoteAddress` always has the TCP peer.
    public let remoteAddress: String
    /// The protocol version spoken (13, or 8 for old drafts).
    public let webSocketVersion: Int
    /// Whether this is the server or the client end.
    public let role: WebSocketRole
    /// The logger this connection reports to: the server's or client's, with the metadata keys
    /// of ``WebSocketLogMetadata`` set (connection id, remote address, path, subprotocol), so
    /// every line logged through it names the connection.
    ///
    /// Made when asked for, from the server's or client's logger and the four values: a logger
    /// with its metadata stored in every idle connection measured 1.1 KiB more per connection
    /// (IdleMemoryTests: 5.3 KiB instead of 4.2).
    public var logger: Logger {
        WebSocketLogMetadata.logger(baseLogger, id: id, remoteAddress: remoteAddress, path: path, protocol: `protocol`)
    }
    private let baseLogger: Logger
    /// The request's path without its query (`websocket.path` of log lines).
    private let path: String
    /// The connection's number in this process (`websocket.connection_id` in log lines): on a
    /// server, the ``WebSocketRequest/id`` of the request it was accepted from.
    public let id: UInt64

    /// Whether the connection runs on an HTTP/2 stream (the rest of its options are the handler's).
    private let isHTTP2Stream: Bool
    /// The most bytes of inbound messages that wait for a first listener before reading pauses.
    let maxPendingBytes: Int
    /// Everything any thread may touch, behind one lock.
    let state = NIOLockedValueBox(PublicState())
    /// Touched on the event loop only (checked in debug builds). Not an `NIOLoopBoundBox`: that
    /// is one more object per connection, and a second event loop check on every send.
    nonisolated(unsafe) let handler: WebSocketConnectionHandler
    /// The write buffer's high watermark: async writes wait while more is queued.
    let highWaterMark: Int
    /// The socket's event loop, kept: asking the channel for it on every message (is this its
    /// thread?) costs a retain and a release each time.
    let eventLoop: any EventLoop
    /// The topics of the server that accepted this connection (nil for a client's).
    let topicRegistry: WebSocketTopicRegistry?
    /// How published messages are framed for this connection (from its extensions).
    let topicFraming: WebSocketTopicFraming

    struct PublicState {
        /// The handler lists of the connection's events.
        var handlers = WebSocketConnectionHandlers()
        var connected = true
        var closeReasonCode = -1
        var closeDescription: String?
        /// The buffer of ``messages`` once it was asked for; cleared when the sequence ends.
        var messageSource: WebSocketMessageBuffer?
        var messageSequence: WebSocketMessageSequence?
        /// Whether an iterator of ``messages`` was made (only one may be).
        var messageIteratorClaimed = false
        /// Inbound events that arrived while nobody listened, or before those did were handed over.
        var pending: [WebSocketReceiver.Event] = []
        var pendingBytes = 0
        var closed = false
        /// Whether the close was the application's (`close()`, `drop()`), not the peer's, the
        /// socket's or the library's: a reconnecting client does not reconnect after it.
        var closedByApplication = false
        /// The socket error the connection failed with, if any: the messages sequence throws it.
        var failure: (any Error)?
        /// The server that counts this connection, told first when it closes (a plain reference
        /// rather than a close handler: no closure and token per connection). Cleared on close.
        var server: WebSocketServer?
        /// Whether both close frames were exchanged (set when the socket closed).
        var handshakeCompleted = false
        /// Bytes of async writes made off the event loop and not yet handed to the handler.
        var bytesInTransit = 0
        /// Async writes waiting for the write buffer to drain below the high watermark.
        var writeWaiters: [CheckedContinuation<Void, any Error>] = []
        /// Async `close` calls waiting for the socket to close.
        var closeWaiters: [CheckedContinuation<CloseResult, Never>] = []
        /// Pings of ``roundTrip(_:)`` waiting for their pong, oldest first.
        var pingWaiters: [PingWaiter] = []
        var nextPingNumber: UInt64 = 0
        /// Published messages skipped because this connection read too slowly.
        var skippedPublications = 0
        /// Node-style sends refused by the send cap.
        var refusedSends = 0
    }

    /// For a connection that closed before `server` counted it: tells the server, as a close
    /// would have, on the event loop.
    func reportClosedBeforeAttach(to server: WebSocketServer) {
        let (code, description) = state.withLockedValue { ($0.closeReasonCode, $0.closeDescription ?? "") }
        eventLoop.execute { server.connectionClosed(self, code: code, description: description) }
    }

    /// Lets `server` count this connection; false if it has already closed.
    func attach(to server: WebSocketServer) -> Bool {
        state.withLockedValue { state in
            guard !state.closed else { return false }
            state.server = server
            return true
        }
    }

    /// Creates the connection on `channel`'s event loop and installs its handler as the last one
    /// of the pipeline. Internal: connections are made by `WebSocketRequest.accept` and
    /// `WebSocketClient.connect`.
    init(
        channel: Channel,
        role: WebSocketRole,
        options: WebSocketConnectionOptions,
        protocol: String?,
        extensions: [WebSocketExtension],
        remoteAddress: String,
        webSocketVersion: Int,
        logger: Logger,
        id: UInt64? = nil,
        path: String,
        topicRegistry: WebSocketTopicRegistry? = nil,
        codecs: sending [any WebSocketExtensionCodec] = [],
        metrics: WebSocketConnectionMetrics? = nil
    ) {
        self.socket = channel
        self.eventLoop = channel.eventLoop
        self.role = role
        self.isHTTP2Stream = options.isHTTP2Stream
        self.maxPendingBytes = options.maxReceivedMessageSize
        self.highWaterMark = options.writeBufferWaterMark.high
        self.protocol = `protocol`
        self.extensions = extensions
        self.remoteAddress = remoteAddress
        self.webSocketVersion = webSocketVersion
        let id = id ?? WebSocketLogMetadata.nextID()
        self.id = id
        self.baseLogger = logger
        self.path = path
        self.topicRegistry = topicRegistry
        self.topicFraming = WebSocketTopicFraming(codecs: codecs)
        let handler = WebSocketConnectionHandler(role: role, options: options, codecs: codecs, metrics: metrics)
        self.handler = handler
        // Everything the handler needs is set here, on whatever thread `accept` runs: the handler
        // is in no pipeline yet, so nothing else can see it. From then on only the event loop
        // touches it (an `accept` off the loop once set the metrics through `channelHandler`
        // from the caller's thread: a data race, and a trap in debug builds).
        handler.connection = self
    }

    /// The channel handler to add to the pipeline (on the event loop only: reading it is free,
    /// everything it holds was set by the initializer).
    var channelHandler: WebSocketConnectionHandler {
        eventLoop.assertInEventLoop()
        return handler
    }

    /// Whether the connection runs on a stream of an HTTP/2 connection (RFC 8441) rather than
    /// on a TCP connection of its own; `socket.parent` is then the shared TCP connection.
    public var isHTTP2: Bool { isHTTP2Stream }

    /// Whether the connection is open: false from the moment a close starts. Read-only.
    public var connected: Bool { state.withLockedValue { $0.connected } }

    /// The close status code once the connection is closing or closed; -1 while open.
    public var closeReasonCode: Int { state.withLockedValue { $0.closeReasonCode } }

    /// A description of why the connection closed; `nil` while open.
    public var closeDescription: String? { state.withLockedValue { $0.closeDescription } }

    /// Whether the application closed the connection (`close()` or `drop()` called first).
    var closedByApplication: Bool { state.withLockedValue { $0.closedByApplication } }

    // MARK: Events

    /// Registers a handler for `message`: a complete message (single-frame, or assembled from
    /// fragments when `assembleFragments` is on). Starts inbound delivery.
    @discardableResult
    public func onMessage(_ handler: @escaping @Sendable (WebSocketMessage) -> Void) -> WebSocketHandlerToken {
        let token = addHandler(\.message, handler)
        consumerAttached()
        return token
    }

    /// Registers a handler for `frame`: each data frame as received, when `assembleFragments` is
    /// off. Starts inbound delivery.
    @discardableResult
    public func onFrame(_ handler: @escaping @Sendable (WebSocketFrame) -> Void) -> WebSocketHandlerToken {
        let token = addHandler(\.frame, handler)
        consumerAttached()
        return token
    }

    /// Registers a handler for `close(reasonCode, description)`: the connection is fully closed
    /// and the socket disconnected. Fires exactly once per connection; a handler registered
    /// after the close (as async code may) is called at once, on the event loop.
    @discardableResult
    public func onClose(_ handler: @escaping @Sendable (_ reasonCode: Int, _ description: String) -> Void) -> WebSocketHandlerToken {
        // Under the state lock, so that a close cannot slip between the check and the add.
        let registered = state.withLockedValue { state -> Result<WebSocketHandlerToken, CloseInfo> in
            if state.closed { return .failure(CloseInfo(code: state.closeReasonCode, description: state.closeDescription ?? "")) }
            let id = state.handlers.add(\.close) { handler($0.0, $0.1) }
            return .success(token(for: id))
        }
        switch registered {
        case .success(let token):
            return token
        case .failure(let info):
            eventLoop.execute { handler(info.code, info.description) }
            return WebSocketHandlerToken.inert()
        }
    }

    /// The close status code as a ``WebSocketCloseCode`` once the connection is closing or
    /// closed; nil while open.
    public var closeCode: WebSocketCloseCode? {
        let code = closeReasonCode
        return code == -1 ? nil : WebSocketCloseCode(code)
    }

    /// Registers a handler for `error`: a socket error. A `close` event follows.
    @discardableResult
    public func onError(_ handler: @escaping @Sendable (any Error) -> Void) -> WebSocketHandlerToken {
        addHandler(\.error, handler)
    }

    /// Registers a handler for `ping(cancel, data)`. Calling `cancel()` inside the handler stops
    /// the automatic pong reply.
    @discardableResult
    public func onPing(_ handler: @escaping @Sendable (_ cancel: WebSocketPingCancel, _ data: ByteBuffer) -> Void) -> WebSocketHandlerToken {
        addHandler(\.ping) { handler($0.0, $0.1) }
    }

    /// Registers a handler for `pong(data)`.
    @discardableResult
    public func onPong(_ handler: @escaping @Sendable (ByteBuffer) -> Void) -> WebSocketHandlerToken {
        addHandler(\.pong, handler)
    }

    /// Registers a handler for `drain`: the socket's write buffer has emptied below its low
    /// watermark after being full.
    @discardableResult
    public func onDrain(_ handler: @escaping @Sendable () -> Void) -> WebSocketHandlerToken {
        addHandler(\.drain) { _ in handler() }
    }

    /// Unregisters a handler.
    public func removeHandler(_ token: WebSocketHandlerToken) { token.cancel() }

    private func addHandler<Argument>(
        _ list: WritableKeyPath<WebSocketConnectionHandlers, WebSocketConnectionHandlers.List<Argument>>,
        _ handler: @escaping @Sendable (Argument) -> Void
    ) -> WebSocketHandlerToken {
        token(for: state.withLockedValue { $0.handlers.add(list, handler) })
    }

    /// The token that removes handler `id`. It holds the locked state, not the connection: no
    /// weak reference (a side table per connection) and no cycle.
    private func token(for id: UInt64) -> WebSocketHandlerToken {
        WebSocketHandlerToken(id: id) { [state] id in state.withLockedValue { $0.handlers.remove(id) } }
    }

    /// Calls every handler of `list` with `argument` (a copy of the list taken under the lock, so
    /// a handler may register or remove handlers); returns whether there was any.
    @discardableResult
    func emit<Argument>(_ list: KeyPath<WebSocketConnectionHandlers, WebSocketConnectionHandlers.List<Argument>>, _ argument: Argument) -> Bool {
        let handlers = state.withLockedValue { $0.handlers[keyPath: list] }
        for entry in handlers { entry.handler(argument) }
        return !handlers.isEmpty
    }

    /// Inbound messages as an async sequence: `for try await message in connection.messages`.
    ///
    /// It ends when the connection closes (check ``closeReasonCode``), and throws if the
    /// connection failed with a socket error. Only one iterator may be made. It applies
    /// backpressure: when the consumer falls behind, reading from the socket pauses.
    public var messages: WebSocketMessageSequence {
        state.withLockedValue { state -> WebSocketMessageSequence in
            if let existing = state.messageSequence { return existing }
            let sequence = WebSocketMessageSequence(connection: self)
            state.messageSequence = sequence
            state.messageSource = sequence.buffer
            return sequence
        }
    }

    /// Claims the one iterator ``messages`` may have; false if it was claimed already.
    func claimMessageIterator() -> Bool {
        state.withLockedValue { state in
            if state.messageIteratorClaimed { return false }
            state.messageIteratorClaimed = true
            return true
        }
    }

}
