import NIOConcurrencyHelpers
import NIOCore

/// The browser's `WebSocket` API on top of ``WebSocketClient``: the Swift counterpart of
/// WebSocket-Node's `W3CWebSocket`.
///
/// ```swift
/// let socket = try W3CWebSocket(url: "ws://127.0.0.1:8080/", protocols: ["echo"])
/// socket.onopen = { try? socket.send("hello") }
/// socket.onmessage = { event in print(event.data) }
/// socket.onclose = { event in print("closed", event.code, event.reason) }
/// ```
///
/// It starts connecting as soon as it is created, so set the `on…` handlers right away (or in
/// `onopen`, which runs before any message is delivered). Handlers run on the connection's
/// event loop, one at a time. Every member may be used from any thread.
///
/// Differences from WebSocket-Node's `W3CWebSocket`: ``bufferedAmount`` really counts the bytes
/// not yet written; ``close(code:reason:)`` checks its arguments as browsers do; messages
/// arriving after `close()` was called are dropped, and a connection that ends abnormally
/// (code 1006) fires `onerror` before `onclose`, as in browsers.
public final class W3CWebSocket: Sendable {
    // MARK: Ready states

    /// `readyState` while the connection is being established.
    public static let CONNECTING = 0
    /// `readyState` while the connection is open and messages can be sent.
    public static let OPEN = 1
    /// `readyState` while the closing handshake runs.
    public static let CLOSING = 2
    /// `readyState` once the connection is closed or could not be opened.
    public static let CLOSED = 3

    // MARK: Event types

    /// How binary messages are handed to ``onmessage``.
    public enum BinaryType: String, Sendable, Hashable {
        /// As an array of bytes, ``MessageData/arrayBuffer(_:)`` (the default, as in the original).
        case arraybuffer
        /// As the NIO buffer received, ``MessageData/byteBuffer(_:)``, without a copy.
        case bytebuffer
    }

    /// The payload of a message event.
    public enum MessageData: Sendable, Equatable {
        /// A text message.
        case text(String)
        /// A binary message, with ``BinaryType/arraybuffer``.
        case arrayBuffer([UInt8])
        /// A binary message, with ``BinaryType/bytebuffer``.
        case byteBuffer(ByteBuffer)

        /// The text of a text message; `nil` for a binary one.
        public var text: String? {
            if case .text(let text) = self { return text }
            return nil
        }

        /// The bytes of a binary message (either binary type); `nil` for a text one.
        public var bytes: [UInt8]? {
            switch self {
            case .text: return nil
            case .arrayBuffer(let bytes): return bytes
            case .byteBuffer(let buffer): return Array(buffer.readableBytesView)
            }
        }
    }

    /// The `message` event.
    public struct MessageEvent: Sendable {
        /// The message.
        public var data: MessageData
        /// The origin of the message: the URL's scheme, host and port, as browsers give it.
        public var origin: String
    }

    /// The `close` event.
    public struct CloseEvent: Sendable, Equatable {
        /// The close code; 1006 when the connection failed or ended without a close frame.
        public var code: Int
        /// The close reason.
        public var reason: String
        /// Whether the connection ended with a closing handshake (false for code 1006).
        public var wasClean: Bool
    }

    /// The `error` event.
    public struct ErrorEvent: Sendable {
        /// What went wrong, when known.
        public var error: (any Error)?
        /// The error in words.
        public var message: String
    }

    // MARK: Properties

    /// The URL given to the initializer.
    public let url: String

    private let client: WebSocketClient
    private let origin: String
    private let state = NIOLockedValueBox(State())

    private struct State {
        var readyState = W3CWebSocket.CONNECTING
        var connection: WebSocketConnection?
        var `protocol` = ""
        var extensions = ""
        var binaryType = BinaryType.arraybuffer
        var bufferedAmount = 0
        var onopen: (@Sendable () -> Void)?
        var onmessage: (@Sendable (MessageEvent) -> Void)?
        var onerror: (@Sendable (ErrorEvent) -> Void)?
        var onclose: (@Sendable (CloseEvent) -> Void)?
        var errorSent = false
        var closeSent = false
        /// close() was called while connecting: the code and reason to close with if the
        /// connection opens anyway.
        var closeWhileConnecting: (code: Int?, reason: String?)?
        var clientTokens: [WebSocketHandlerToken] = []
        /// The connection opened before `onopen` was set: the event waits for the handler (as a
        /// browser dispatches it after the script that made the socket), and messages wait too.
        var openUndelivered = false
        /// Messages flow to `onmessage` (the connection keeps them until then, in order).
        var messagesAttached = false
    }

    /// The state of the connection: ``CONNECTING``, ``OPEN``, ``CLOSING`` or ``CLOSED``.
    public var readyState: Int {
        state.withLockedValue { state in
            if state.readyState == Self.OPEN, let connection = state.connection, !connection.connected {
                return Self.CLOSING  // a close frame was sent or received
            }
            return state.readyState
        }
    }

    /// The subprotocol the server chose; `""` before the connection opens or when none was.
    public var `protocol`: String { state.withLockedValue { $0.protocol } }

    /// The extensions the server accepted, as a `Sec-WebSocket-Extensions` value; `""` when none.
    public var extensions: String { state.withLockedValue { $0.extensions } }

    /// The payload bytes passed to `send` that have not been written to the socket yet. It
    /// grows while the peer does not read (or the network is slower than the sender) and falls
    /// back to 0 as the writes complete.
    public var bufferedAmount: Int { state.withLockedValue { $0.bufferedAmount } }

    /// How binary messages are delivered; default ``BinaryType/arraybuffer``.
    public var binaryType: BinaryType {
        get { state.withLockedValue { $0.binaryType } }
        set { state.withLockedValue { $0.binaryType = newValue } }
    }

    /// Called once when the connection opens.
    /// Set after the connection opened, it is called at once: the open event is never lost to
    /// a handler set just after `init`.
    public var onopen: (@Sendable () -> Void)? {
        get { state.withLockedValue { $0.onopen } }
        set {
            let connection = state.withLockedValue { state -> WebSocketConnection? in
                state.onopen = newValue
                guard newValue != nil, state.openUndelivered else { return nil }
                state.openUndelivered = false
                return state.connection
            }
            guard let connection else { return }
            connection.socket.eventLoop.execute {
                self.state.withLockedValue { $0.onopen }?()
                self.attachMessages(connection)
            }
        }
    }

    /// Called for each message received while the connection is open.
    /// Messages that arrive before it is set wait for it (after the open event).
    public var onmessage: (@Sendable (MessageEvent) -> Void)? {
        get { state.withLockedValue { $0.onmessage } }
        set {
            let connection = state.withLockedValue { state -> WebSocketConnection? in
                state.onmessage = newValue
                guard newValue != nil, !state.openUndelivered, state.readyState == Self.OPEN else { return nil }
                return state.connection
            }
            if let connection { attachMessages(connection) }
        }
    }

    /// Starts delivering the connection's messages to `onmessage`, once.
    private func attachMessages(_ connection: WebSocketConnection) {
        let attach = state.withLockedValue { state -> Bool in
            guard !state.messagesAttached, state.onmessage != nil else { return false }
            state.messagesAttached = true
            return true
        }
        if attach { connection.onMessage { [self] message in received(message) } }
    }

    /// Called when the connection could not be opened or failed; `onclose` follows.
    public var onerror: (@Sendable (ErrorEvent) -> Void)? {
        get { state.withLockedValue { $0.onerror } }
        set { state.withLockedValue { $0.onerror = newValue } }
    }

    /// Called once when the connection has closed (or could not be opened: code 1006).
    public var onclose: (@Sendable (CloseEvent) -> Void)? {
        get { state.withLockedValue { $0.onclose } }
        set { state.withLockedValue { $0.onclose = newValue } }
    }

    // MARK: Lifecycle

    /// Creates the socket and starts connecting, like `new W3CWebSocket(url, protocols, origin,
    /// headers, requestOptions, clientConfig)`.
    ///
    /// - Parameters:
    ///   - url: a `ws://` or `wss://` URL.
    ///   - protocols: the subprotocols to offer.
    ///   - origin: the `Origin` header to send, if any.
    ///   - headers: extra request headers.
    ///   - requestOptions: a proxy and per-connection TLS settings.
    ///   - clientConfig: the underlying ``WebSocketClient``'s configuration.
    /// - Throws: a ``WebSocketError`` (`.invalidURL`, `.invalidArgument`) for a URL or
    ///   subprotocol list that cannot be used, as the browser's constructor throws a SyntaxError.
    public init(
        url: String, protocols: [String] = [], origin: String? = nil, headers: [String: String] = [:],
        requestOptions: WebSocketClient.RequestOptions? = nil,
        clientConfig: WebSocketClient.Configuration = WebSocketClient.Configuration()
    ) throws {
        let target = try WebSocketURL(url)
        try WebSocketClient.validate(protocols: protocols)
        self.url = url
        self.origin = (target.isSecure ? "https://" : "http://") + target.hostHeader
        self.client = WebSocketClient(configuration: clientConfig)
        let tokens = [
            client.onConnect { [self] connection in opened(connection) },
            client.onConnectFailed { [self] error in failedToOpen(error) },
        ]
        state.withLockedValue { $0.clientTokens = tokens }
        client.connect(url, protocols: protocols, origin: origin, headers: headers, requestOptions: requestOptions)
    }

    // MARK: Sending

    /// Sends a text message. Throws when the socket is not ``OPEN``.
    public func send(_ text: String) throws {
        let connection = try openConnection()
        let count = text.utf8.count
        queued(count)
        connection.sendUTF(text) { _ in self.written(count) }
    }

    /// Sends a binary message. Throws when the socket is not ``OPEN``.
    public func send(_ buffer: ByteBuffer) throws {
        let connection = try openConnection()
        let count = buffer.readableBytes
        queued(count)
        connection.sendBytes(buffer) { _ in self.written(count) }
    }

    /// Sends a binary message from bytes. Throws when the socket is not ``OPEN``.
    public func send(_ bytes: some Sequence<UInt8>) throws {
        let connection = try openConnection()
        try send(connection.socket.allocator.buffer(bytes: bytes))
    }

    // MARK: Closing

    /// Closes the connection, with the browser's checks.
    ///
    /// - Parameters:
    ///   - code: 1000 or 3000-4999; default: 1000.
    ///   - reason: at most 123 bytes of UTF-8; default: the standard description of the code.
    /// - Throws: a ``WebSocketError`` with code `.invalidCloseCode` for another code (the
    ///   browser's InvalidAccessError) or `.invalidArgument` for a longer reason (SyntaxError).
    ///   Nothing happens when the socket is already ``CLOSING`` or ``CLOSED``; while
    ///   ``CONNECTING``, the attempt is abandoned and `onerror` and `onclose` (1006) follow.
    public func close(code: Int? = nil, reason: String? = nil) throws {
        if let code, !(code == 1000 || (3000...4999).contains(code)) {
            throw WebSocketError(.invalidCloseCode, "InvalidAccessError: the close code must be 1000 or in 3000-4999, not \(code)")
        }
        if let reason, reason.utf8.count > 123 {
            throw WebSocketError(.invalidArgument, "SyntaxError: the close reason is \(reason.utf8.count) bytes of UTF-8; at most 123 are allowed")
        }
        enum Action { case none, abort, close(WebSocketConnection) }
        let action = state.withLockedValue { state -> Action in
            switch state.readyState {
            case Self.CONNECTING:
                state.readyState = Self.CLOSING
                state.closeWhileConnecting = (code, reason)
                return .abort
            case Self.OPEN:
                state.readyState = Self.CLOSING
                return state.connection.map { .close($0) } ?? .none
            default:
                return .none
            }
        }
        switch action {
        case .none:
            break
        case .abort:
            client.abort()
        case .close(let connection):
            try connection.close(reasonCode: code ?? WebSocketCloseReason.normal, description: reason)
        }
    }

    /// ``close(code:reason:)`` with a ``WebSocketCloseCode`` (`.normal`, or a 3000-4999 code).
    public func close(code: WebSocketCloseCode, reason: String? = nil) throws {
        try close(code: code.rawValue, reason: reason)
    }

    // MARK: Internals

    private func openConnection() throws -> WebSocketConnection {
        try state.withLockedValue { state in
            guard state.readyState == Self.OPEN, let connection = state.connection else {
                throw WebSocketError(.notConnected, "InvalidStateError: cannot call send() while not connected (readyState \(state.readyState))")
            }
            return connection
        }
    }

    private func queued(_ count: Int) {
        state.withLockedValue { $0.bufferedAmount += count }
    }

    private func written(_ count: Int) {
        state.withLockedValue { $0.bufferedAmount -= count }
    }

    /// The client's `connect` (on the connection's event loop, before any message).
    private func opened(_ connection: WebSocketConnection) {
        let (proceed, pendingClose, tokens) = state.withLockedValue { state -> (Bool, (code: Int?, reason: String?)?, [WebSocketHandlerToken]) in
            defer { state.clientTokens = [] }
            state.connection = connection
            guard state.readyState == Self.CONNECTING else { return (false, state.closeWhileConnecting, state.clientTokens) }
            state.readyState = Self.OPEN
            state.protocol = connection.protocol ?? ""
            state.extensions = connection.extensions.map(\.description).joined(separator: ", ")
            return (true, nil, state.clientTokens)
        }
        for token in tokens { token.cancel() }
        guard proceed else {
            // close() came first: as the original, close the connection that opened anyway.
            try? connection.close(reasonCode: pendingClose?.code ?? WebSocketCloseReason.normal, description: pendingClose?.reason)
            fail(WebSocketError(.aborted, "The connection was closed before it opened"))
            return
        }
        connection.onError { [self] error in dispatchError(error) }
        connection.onClose { [self] code, description in closed(code: code, reason: description) }
        let onopen = state.withLockedValue { state -> (@Sendable () -> Void)? in
            if state.onopen == nil { state.openUndelivered = true }
            return state.onopen
        }
        if let onopen {
            onopen()
            attachMessages(connection)
        }
    }

    private func failedToOpen(_ error: WebSocketError) {
        let tokens = state.withLockedValue { state -> [WebSocketHandlerToken] in
            defer { state.clientTokens = [] }
            return state.clientTokens
        }
        for token in tokens { token.cancel() }
        fail(error)
    }

    /// The connection could not be opened: `error`, then `close` with 1006.
    private func fail(_ error: WebSocketError) {
        dispatchError(error)
        dispatchClose(CloseEvent(code: WebSocketCloseReason.abnormal, reason: "connection failed", wasClean: false))
    }

    private func received(_ message: WebSocketMessage) {
        let (handler, binaryType) = state.withLockedValue { state in
            (state.readyState == Self.OPEN ? state.onmessage : nil, state.binaryType)
        }
        guard let handler else { return }
        let data: MessageData
        switch message {
        case .utf8(let text):
            data = .text(text)
        case .binary(let buffer):
            data = binaryType == .bytebuffer ? .byteBuffer(buffer) : .arrayBuffer(Array(buffer.readableBytesView))
        }
        handler(MessageEvent(data: data, origin: origin))
    }

    private func closed(code: Int, reason: String) {
        if code == WebSocketCloseReason.abnormal {
            dispatchError(WebSocketError(.notConnected, "The connection ended abnormally (1006): \(reason)"))
        }
        dispatchClose(CloseEvent(code: code, reason: reason, wasClean: code != WebSocketCloseReason.abnormal))
    }

    private func dispatchError(_ error: any Error) {
        let handler = state.withLockedValue { state -> (@Sendable (ErrorEvent) -> Void)? in
            guard !state.errorSent, !state.closeSent else { return nil }
            state.errorSent = true
            return state.onerror
        }
        handler?(ErrorEvent(error: error, message: "\(error)"))
    }

    private func dispatchClose(_ event: CloseEvent) {
        let handler = state.withLockedValue { state -> (@Sendable (CloseEvent) -> Void)? in
            state.readyState = Self.CLOSED
            guard !state.closeSent else { return nil }
            state.closeSent = true
            return state.onclose
        }
        handler?(event)
    }
}
