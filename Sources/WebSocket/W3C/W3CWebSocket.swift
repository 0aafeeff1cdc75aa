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
/// It starts connecting as soon as it is created; set the `on…` handlers right after `init`, as
/// in a browser. An event that fires before any handler of its kind is set (`open`, `error`,
/// `close`, messages) is not lost: it is kept and delivered, in order, when the first handler of
/// its kind is set, much as a browser dispatches the socket's events in a later task than the
/// script that created it (so a refused connection's `error` and `close` reach handlers set just
/// after `init`). See <doc:W3CWebSocketReference#Event-timing>. Handlers run on the socket's
/// event loop, one at a time. Every member may be used from any thread.
///
/// Differences from WebSocket-Node's `W3CWebSocket`: ``bufferedAmount`` really counts the bytes
/// not yet written; ``close(code:reason:)-(Int?,_)`` checks its arguments as browsers do; messages
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

    // MARK: Properties

    /// The URL given to the initializer.
    public let url: String

    let client: WebSocketClient
    let origin: String
    /// The loop the connection runs on and every handler is called on.
    let eventLoop: any EventLoop
    let state = NIOLockedValueBox(State())

    /// An event that fired while no handler of its kind was set, waiting for one.
    enum HeldEvent {
        case open(WebSocketConnection)
        case error(ErrorEvent)
        case close(CloseEvent)
    }

    struct State {
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
        /// The events that fired while no handler of their kind was set, in the order they fired;
        /// each is delivered when a handler of its kind is set (see `deliverHeldEvents`).
        var held: [HeldEvent] = []
        /// `deliverHeldEvents` is running (a handler it called may fire or hold more events).
        var delivering = false
        /// Messages wait for the held open event: `onmessage` was not set yet when the
        /// connection opened, so `onopen` may still be coming and must see the open first.
        var messagesWaitForOpen = false
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
    /// Set after the connection opened, it is called at once (on the event loop): the open event
    /// is never lost to a handler set just after `init`.
    public var onopen: (@Sendable () -> Void)? {
        get { state.withLockedValue { $0.onopen } }
        set { setHandler { $0.onopen = newValue } }
    }

    /// Called for each message received while the connection is open.
    /// Messages that arrive before it is set wait for it. When the connection opened before any
    /// `onopen` and `onmessage` were set, the messages also wait for the open event, so that
    /// handlers set after the open, in any order, still get `open` first.
    public var onmessage: (@Sendable (MessageEvent) -> Void)? {
        get { state.withLockedValue { $0.onmessage } }
        set {
            let connection = state.withLockedValue { state -> WebSocketConnection? in
                state.onmessage = newValue
                guard newValue != nil, !state.messagesWaitForOpen, state.readyState == Self.OPEN else { return nil }
                return state.connection
            }
            if let connection { attachMessages(connection) }
        }
    }

    /// Starts delivering the connection's messages to `onmessage`, once.
    func attachMessages(_ connection: WebSocketConnection) {
        let attach = state.withLockedValue { state -> Bool in
            guard !state.messagesAttached, state.onmessage != nil else { return false }
            state.messagesAttached = true
            return true
        }
        if attach { connection.onMessage { [self] message in received(message) } }
    }

    /// Called when the connection could not be opened or failed; `onclose` follows.
    /// Set after the error occurred (a refused connection can fail before `init` returns), it
    /// is called at once (on the event loop) with that error: the event is never lost to a
    /// handler set just after `init`.
    public var onerror: (@Sendable (ErrorEvent) -> Void)? {
        get { state.withLockedValue { $0.onerror } }
        set { setHandler { $0.onerror = newValue } }
    }

    /// Called once when the connection has closed (or could not be opened: code 1006);
    /// ``readyState`` is ``CLOSED`` when it runs.
    /// Set after the socket closed, it is called at once (on the event loop) with that close
    /// event: the event is never lost to a handler set just after `init`.
    public var onclose: (@Sendable (CloseEvent) -> Void)? {
        get { state.withLockedValue { $0.onclose } }
        set { setHandler { $0.onclose = newValue } }
    }

    /// Sets a handler; when an event is held for it, delivers the held events on the event loop.
    private func setHandler(_ set: (inout State) -> Void) {
        let deliver = state.withLockedValue { state -> Bool in
            set(&state)
            return state.held.contains { state.handlerIsSet(for: $0) }
        }
        if deliver { eventLoop.execute { self.deliverHeldEvents() } }
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
    ///   - clientConfig: the underlying ``WebSocketClient``'s configuration; its `reconnect` is
    ///     ignored (a closed browser WebSocket stays closed).
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
        var clientConfig = clientConfig
        clientConfig.reconnect = nil  // a closed W3C WebSocket stays closed
        self.client = WebSocketClient(configuration: clientConfig)
        self.eventLoop = client.eventLoopGroup.next()
        let tokens = [
            client.onConnect { [self] connection in opened(connection) },
            client.onConnectFailed { [self] error in failedToOpen(error) },
        ]
        state.withLockedValue { $0.clientTokens = tokens }
        // On `eventLoop`: the connection's events, the failure's and the held ones run there.
        _ = client.start(url: url, protocols: protocols, origin: origin, headers: headers, requestOptions: requestOptions, on: eventLoop)
    }
}
