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
    /// The peer's IP address. On a server, the first `X-Forwarded-For` address is preferred
    /// (unless `ignoreXForwardedFor`); `socket.remoteAddress` always has the TCP peer.
    public let remoteAddress: String
    /// The protocol version spoken (13, or 8 for old drafts).
    public let webSocketVersion: Int
    /// Whether this is the server or the client end.
    public let role: WebSocketRole
    /// The logger this connection reports to.
    public let logger: Logger

    /// Whether the connection runs on an HTTP/2 stream (the rest of its options are the handler's).
    private let isHTTP2Stream: Bool
    /// The most bytes of inbound messages that wait for a first listener before reading pauses.
    private let maxPendingBytes: Int
    /// Everything any thread may touch, behind one lock.
    private let state = NIOLockedValueBox(PublicState())
    /// Touched on the event loop only (checked in debug builds). Not an `NIOLoopBoundBox`: that
    /// is one more object per connection, and a second event loop check on every send.
    private nonisolated(unsafe) let handler: WebSocketConnectionHandler

    private struct PublicState {
        /// The handler lists of the connection's events.
        var handlers = WebSocketConnectionHandlers()
        var connected = true
        var closeReasonCode = -1
        var closeDescription: String?
        var messageSource: WebSocketMessageSequence.Source?
        var messageSequence: WebSocketMessageSequence?
        /// Inbound events that arrived while nobody listened, or before those did were handed over.
        var pending: [WebSocketReceiver.Event] = []
        var pendingBytes = 0
        var closed = false
        /// The socket error the connection failed with, if any: the messages sequence throws it.
        var failure: (any Error)?
        /// The server that counts this connection, told first when it closes (a plain reference
        /// rather than a close handler: no closure and token per connection). Cleared on close.
        var server: WebSocketServer?
    }

    /// For a connection that closed before `server` counted it: tells the server, as a close
    /// would have, on the event loop.
    func reportClosedBeforeAttach(to server: WebSocketServer) {
        let (code, description) = state.withLockedValue { ($0.closeReasonCode, $0.closeDescription ?? "") }
        socket.eventLoop.execute { server.connectionClosed(self, code: code, description: description) }
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
        codecs: sending [any WebSocketExtensionCodec] = []
    ) {
        self.socket = channel
        self.role = role
        self.isHTTP2Stream = options.isHTTP2Stream
        self.maxPendingBytes = options.maxReceivedMessageSize
        self.protocol = `protocol`
        self.extensions = extensions
        self.remoteAddress = remoteAddress
        self.webSocketVersion = webSocketVersion
        self.logger = logger
        self.handler = WebSocketConnectionHandler(role: role, options: options, codecs: codecs)
    }

    /// The channel handler to add to the pipeline (on the event loop).
    var channelHandler: WebSocketConnectionHandler {
        socket.eventLoop.assertInEventLoop()
        handler.connection = self
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
            socket.eventLoop.execute { handler(info.code, info.description) }
            return WebSocketHandlerToken(id: 0) { _ in }
        }
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
            let (sequence, source) = WebSocketMessageSequence.make(connection: self)
            state.messageSequence = sequence
            state.messageSource = source
            return sequence
        }
    }

    // MARK: Sending

    /// Sends a text message. Over `fragmentationThreshold` it goes out in several frames when
    /// `fragmentOutgoingMessages` is on. `completion` reports when it was written, or why not.
    /// `compress: false` sends it uncompressed even when permessage-deflate was negotiated.
    public func sendUTF(_ string: String, compress: Bool = true, completion: (@Sendable ((any Error)?) -> Void)? = nil) {
        var buffer = socket.allocator.buffer(capacity: string.utf8.count)
        buffer.writeString(string)
        sendMessage(opcode: .text, payload: buffer, compress: compress, completion: completion)
    }

    /// Sends a binary message (fragmented and compressed like ``sendUTF(_:compress:completion:)``).
    public func sendBytes(_ buffer: ByteBuffer, compress: Bool = true, completion: (@Sendable ((any Error)?) -> Void)? = nil) {
        sendMessage(opcode: .binary, payload: buffer, compress: compress, completion: completion)
    }

    /// Sends a binary message from bytes.
    public func sendBytes(_ bytes: some Sequence<UInt8>, completion: (@Sendable ((any Error)?) -> Void)? = nil) {
        sendBytes(socket.allocator.buffer(bytes: bytes), completion: completion)
    }

    /// Sends a message of either kind (Node's `send(data)`).
    public func send(_ message: WebSocketMessage, completion: (@Sendable ((any Error)?) -> Void)? = nil) {
        switch message {
        case .utf8(let string): sendUTF(string, completion: completion)
        case .binary(let buffer): sendBytes(buffer, completion: completion)
        }
    }

    /// Sends a text message (Node's `send(string)`).
    public func send(_ string: String, completion: (@Sendable ((any Error)?) -> Void)? = nil) {
        sendUTF(string, completion: completion)
    }

    /// Sends a binary message (Node's `send(buffer)`).
    public func send(_ buffer: ByteBuffer, completion: (@Sendable ((any Error)?) -> Void)? = nil) {
        sendBytes(buffer, completion: completion)
    }

    /// Sends a text message and returns once it was written to the socket.
    public func sendUTF(_ string: String) async throws {
        try await withCompletion { self.sendUTF(string, completion: $0) }
    }

    /// Sends a binary message and returns once it was written to the socket.
    public func sendBytes(_ buffer: ByteBuffer) async throws {
        try await withCompletion { self.sendBytes(buffer, completion: $0) }
    }

    /// Sends a message of either kind and returns once it was written to the socket.
    public func send(_ message: WebSocketMessage) async throws {
        try await withCompletion { self.send(message, completion: $0) }
    }

    /// Sends a ping with `data` (at most 125 bytes).
    public func ping(_ data: ByteBuffer = ByteBuffer(), completion: (@Sendable ((any Error)?) -> Void)? = nil) throws {
        try sendControl(.ping, data, completion: completion)
    }

    /// Sends a ping with a string payload (at most 125 bytes of UTF-8).
    public func ping(_ string: String, completion: (@Sendable ((any Error)?) -> Void)? = nil) throws {
        try ping(ByteBuffer(string: string), completion: completion)
    }

    /// Sends a pong with `data` (at most 125 bytes). Pongs that answer pings are sent
    /// automatically unless a `ping` handler cancelled that.
    public func pong(_ data: ByteBuffer = ByteBuffer(), completion: (@Sendable ((any Error)?) -> Void)? = nil) throws {
        try sendControl(.pong, data, completion: completion)
    }

    /// Serializes `frame` and sends it as is, but for masking: a client masks it with a fresh
    /// key, a server sends it unmasked, whatever `mask` and `maskingKey` say. An
    /// advanced function: ``sendUTF(_:compress:completion:)`` and ``sendBytes(_:compress:completion:)`` are the
    /// usual way.
    public func sendFrame(_ frame: WebSocketFrame, completion: (@Sendable ((any Error)?) -> Void)? = nil) {
        onLoop { $0.sendFrame(frame, completion: completion) }
    }

    // MARK: Closing

    /// Closes the connection gracefully: sends a close frame with `reasonCode` and
    /// `description`, then waits up to `closeTimeout` for the peer's close frame before
    /// closing the socket.
    ///
    /// With no description, a standard code's default description is sent; pass `""` to send
    /// none. Throws for a code that may not be sent (see
    /// ``WebSocketCloseReason/isValidOnWire(_:)``) or a description over 123 bytes.
    ///
    /// Only the first close counts. Called again while the connection is closing (by either
    /// side) or once it has closed, it does nothing: no error, no second close frame, no second
    /// `close` event, and ``closeReasonCode`` and ``closeDescription`` keep the first close's
    /// values. The arguments are still checked first, so an invalid code throws even then.
    public func close(reasonCode: Int = WebSocketCloseReason.normal, description: String? = nil) throws {
        guard WebSocketCloseReason.isValidOnWire(reasonCode) else {
            throw WebSocketError(.invalidCloseCode, "Close code \(reasonCode) is not valid: use 1000-1003, 1007-1014 or 3000-4999")
        }
        let text = description ?? WebSocketCloseReason.description(for: reasonCode)
        guard text.utf8.count <= 123 else {
            throw WebSocketError(.controlFrameTooLarge, "Close description is \(text.utf8.count) bytes; at most 123 fit in a close frame")
        }
        // Like the original, the connection counts as closing from this call on.
        markClosing(code: reasonCode, description: text)
        onLoop { $0.close(code: reasonCode, description: text) }
    }

    /// Sends a close frame with `reasonCode` and closes the socket without waiting for the
    /// peer. For error conditions; the default code is 1002 (protocol error).
    /// `skipCloseFrame` closes the socket without sending a close frame.
    ///
    /// Never throws. On a connection that has closed it does nothing (no second `close` event,
    /// ``closeReasonCode`` and ``closeDescription`` unchanged). During a close handshake (after
    /// ``close(reasonCode:description:)``, or the peer's close frame) it closes the socket at
    /// once, without a second close frame; the `close` event then fires once, with the first
    /// close's code and description, not this call's.
    public func drop(reasonCode: Int = WebSocketCloseReason.protocolError, description: String? = nil, skipCloseFrame: Bool = false) {
        let text = description ?? WebSocketCloseReason.description(for: reasonCode)
        markClosing(code: reasonCode, description: text)
        onLoop { $0.drop(code: reasonCode, description: text, skipCloseFrame: skipCloseFrame) }
    }

    // MARK: Flow control

    /// Stops reading from the socket; no more events until ``resume()``.
    public func pause() {
        onLoop { $0.setUserPaused(true) }
    }

    /// Resumes reading after ``pause()``.
    public func resume() {
        onLoop { $0.setUserPaused(false) }
    }

    // MARK: Internals

    func onLoop(_ body: @escaping @Sendable (WebSocketConnectionHandler) -> Void) {
        if socket.eventLoop.inEventLoop {
            body(handler)
        } else {
            socket.eventLoop.execute { body(self.handler) }
        }
    }

    /// A listener registered: hand it what waited (on the event loop, in order).
    func consumerAttached() {
        if state.withLockedValue({ $0.closed }) {
            flushPending()
            return
        }
        onLoop { $0.consumerAttached() }
    }

    private func sendMessage(opcode: WebSocketOpcode, payload: ByteBuffer, compress: Bool = true, completion: (@Sendable ((any Error)?) -> Void)?) {
        // On the loop (an echo from onMessage, say), call straight through: no closure to allocate.
        if socket.eventLoop.inEventLoop {
            handler.sendMessage(opcode: opcode, payload: payload, compress: compress, completion: completion)
            return
        }
        onLoop { $0.sendMessage(opcode: opcode, payload: payload, compress: compress, completion: completion) }
    }

    private func sendControl(_ opcode: WebSocketOpcode, _ data: ByteBuffer, completion: (@Sendable ((any Error)?) -> Void)?) throws {
        guard data.readableBytes <= 125 else {
            throw WebSocketError(.controlFrameTooLarge, "\(opcode) payload is \(data.readableBytes) bytes; control frames carry at most 125")
        }
        sendFrame(WebSocketFrame(opcode: opcode, binaryPayload: data), completion: completion)
    }

    private func withCompletion(_ start: (@escaping @Sendable ((any Error)?) -> Void) -> Void) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            start { error in
                if let error { continuation.resume(throwing: error) } else { continuation.resume() }
            }
        }
    }

    /// Records that a close started (first caller wins); returns false if one had already.
    @discardableResult
    func markClosing(code: Int, description: String) -> Bool {
        state.withLockedValue { state in
            guard state.closeReasonCode == -1 else {
                state.connected = false
                return false
            }
            state.connected = false
            state.closeReasonCode = code
            state.closeDescription = description
            return true
        }
    }

    /// Called once by the handler when the socket has closed.
    func didClose() {
        let (code, description, hasPending, handlers, server) = state.withLockedValue {
            state -> (Int, String, Bool, [@Sendable ((Int, String)) -> Void], WebSocketServer?) in
            state.connected = false
            state.closed = true
            if state.closeReasonCode == -1 {
                state.closeReasonCode = WebSocketCloseReason.abnormal
                state.closeDescription = WebSocketCloseReason.description(for: WebSocketCloseReason.abnormal)
            }
            let server = state.server
            state.server = nil
            let handlers = state.handlers.close.map(\.handler)
            state.handlers.close.removeAll()
            return (state.closeReasonCode, state.closeDescription ?? "", !state.pending.isEmpty, handlers, server)
        }
        server?.connectionClosed(self, code: code, description: description)
        // Close handlers first, so code after a `for try await … in messages` loop sees them run.
        for handler in handlers { handler((code, description)) }
        // Messages still waiting for a listener stay for one that comes later (the sequence
        // then yields them and ends).
        if !hasPending { finishMessages() }
        state.withLockedValue { $0.handlers.removeAll() }
    }

    /// How a connection ended, for a close handler registered too late.
    private struct CloseInfo: Error {
        var code: Int
        var description: String
    }

    /// The outcome of handing an inbound message or frame to the listeners.
    enum Delivery {
        case delivered
        /// The async sequence's buffer is full: stop reading until it asks for more.
        case backpressure
        /// Nobody listens yet and enough waits: stop reading until someone does.
        case awaitingConsumer
    }

    /// Hands a `.message` or `.frame` event to the listeners, or keeps it for the first one.
    ///
    /// One lock per message: whether it must wait, and who gets it, are read together.
    func deliver(_ event: WebSocketReceiver.Event) -> Delivery {
        let target = state.withLockedValue { state -> Target in
            let noListener = state.messageSource == nil && state.handlers.hasNoDataListener
            if noListener || !state.pending.isEmpty {
                state.pending.append(event)
                state.pendingBytes += event.payloadSize
                return .waiting(overLimit: state.pendingBytes > maxPendingBytes)
            }
            return Self.target(of: event, in: &state)
        }
        return deliver(event, to: target)
    }

    /// Who gets an inbound event.
    private enum Target {
        case waiting(overLimit: Bool)
        case frame(WebSocketConnectionHandlers.List<WebSocketFrame>)
        case message(WebSocketConnectionHandlers.List<WebSocketMessage>, WebSocketMessageSequence.Source?)
        case nobody
    }

    private static func target(of event: WebSocketReceiver.Event, in state: inout PublicState) -> Target {
        switch event {
        case .frame: return .frame(state.handlers.frame)
        case .message: return .message(state.handlers.message, state.messageSource)
        default: return .nobody
        }
    }

    /// Calls the handlers outside the lock, in registration order, then the async sequence.
    private func deliver(_ event: WebSocketReceiver.Event, to target: Target) -> Delivery {
        switch (event, target) {
        case (_, .waiting(let overLimit)):
            return overLimit ? .awaitingConsumer : .delivered
        case (.frame(let frame), .frame(let handlers)):
            for entry in handlers { entry.handler(frame) }
            return .delivered
        case (.message(let message), .message(let handlers, let source)):
            for entry in handlers { entry.handler(message) }
            guard let source else { return .delivered }
            switch source.yield(message) {
            case .produceMore, .dropped: return .delivered
            case .stopProducing: return .backpressure
            }
        default:
            return .delivered
        }
    }

    /// Delivers, in order, what waited for a listener (on the event loop, or after close).
    func flushPending() {
        let waiting = state.withLockedValue { state -> [WebSocketReceiver.Event] in
            let noListener = state.messageSource == nil && state.handlers.hasNoDataListener
            if noListener { return [] }
            defer {
                state.pending.removeAll()
                state.pendingBytes = 0
            }
            return state.pending
        }
        for event in waiting {
            _ = deliver(event, to: state.withLockedValue { Self.target(of: event, in: &$0) })
        }
        if state.withLockedValue({ $0.closed }) { finishMessages() }
    }

    func emitError(_ error: any Error) {
        emit(\.error, error)
        // The close follows; the messages sequence ends with this error then, after any message
        // still waiting for a listener.
        state.withLockedValue { $0.failure = $0.failure ?? error }
    }

    /// Ends the messages sequence: normally, or with the socket error the connection failed with.
    private func finishMessages() {
        let (source, error) = state.withLockedValue { state -> (WebSocketMessageSequence.Source?, (any Error)?) in
            defer { state.messageSource = nil }
            return (state.messageSource, state.failure)
        }
        if let error { source?.finish(error) } else { source?.finish() }
    }
}

/// Passed to `ping` handlers: call it to stop the automatic pong reply to that ping.
public struct WebSocketPingCancel: Sendable {
    private let flag = NIOLockedValueBox(false)

    /// Suppresses the automatic pong for this ping.
    public func callAsFunction() { flag.withLockedValue { $0 = true } }

    /// Whether a handler cancelled the pong.
    var cancelled: Bool { flag.withLockedValue { $0 } }
}
