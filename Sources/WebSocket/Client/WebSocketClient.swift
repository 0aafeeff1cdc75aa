import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL


/// Connects to WebSocket servers: the Swift counterpart of WebSocket-Node's `WebSocketClient`.
///
/// ```swift
/// let client = WebSocketClient()
/// let connection = try await client.connect(url: "wss://example.com/chat", protocols: ["echo"])
/// try await connection.write("hello")
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
///
/// With ``Configuration/reconnect`` set, the client reconnects by itself when a connection
/// ends (a node of a cluster died, the server restarted), to the next of a list of URLs, with
/// backoff: ``onReconnecting(_:)`` announces each attempt, `connect` handlers run again with
/// each new connection, then ``onReconnected(_:)``; ``stopReconnecting()`` ends it.
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
    let reconnectingHandlers = WebSocketEventHandlers<ReconnectAttempt>()
    let reconnectedHandlers = WebSocketEventHandlers<WebSocketConnection>()
    /// The reconnecting connections (``Configuration/reconnect``), until each ends.
    let reconnections = NIOLockedValueBox<[UInt64: WebSocketReconnection]>([:])
    let attempts = NIOLockedValueBox<(next: UInt64, live: [UInt64: EventLoopPromise<WebSocketConnection>])>((0, [:]))
    let cachedTLSContext = NIOLockedValueBox<NIOSSLContext?>(nil)
    let cachedHTTP2TLSContext = NIOLockedValueBox<NIOSSLContext?>(nil)
    /// With `configuration.http2`: the HTTP/2 connection (or the finding that there is none to
    /// have) per `host:port`, shared by this client's WebSockets.
    let http2Pool = NIOLockedValueBox<[String: HTTP2PoolEntry]>([:])

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
    /// With ``Configuration/reconnect``, it runs again for every connection a reconnection
    /// opens: the place to register the connection's handlers and to subscribe.
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
    ///
    /// With ``Configuration/reconnect`` set, a first attempt that fails is retried as a
    /// reconnection is (`reconnecting` events, backoff, the next URL) unless
    /// ``ReconnectPolicy/retriesFirstConnection`` is off; `connectFailed` then comes only when
    /// the policy gives up.
    public func connect(
        _ url: String, protocols: [String] = [], origin: String? = nil, headers: [String: String] = [:],
        requestOptions: RequestOptions? = nil
    ) {
        if let policy = configuration.reconnect, policy.retriesFirstConnection {
            connectReconnecting(policy: policy, url: url, protocols: protocols, origin: origin, headers: headers, requestOptions: requestOptions)
            return
        }
        _ = start(url: url, protocols: protocols, origin: origin, headers: headers, requestOptions: requestOptions)
    }

    /// Connects to `url` and returns the open connection, or throws a ``WebSocketError`` that
    /// says what went wrong (see ``onConnectFailed(_:)`` for the codes). Cancelling the task
    /// aborts the attempt. It is one attempt, also with ``Configuration/reconnect`` set (which
    /// then follows the connection once it is open): to wait for a server that is not up yet,
    /// iterate ``connections(to:protocols:origin:headers:requestOptions:)``. The parameters are those of
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
    /// with `.aborted`. That includes reconnections (``Configuration/reconnect``) waiting for
    /// their next attempt: each ends with `connectFailed` (`.aborted`). Connections already
    /// open are not affected, nor is their reconnection when they close (see
    /// ``stopReconnecting()``).
    public func abort() {
        let live = attempts.withLockedValue { Array($0.live.values) }
        for promise in live {
            promise.fail(WebSocketError(.aborted, "The connection attempt was aborted"))
        }
        for reconnection in reconnections.withLockedValue({ Array($0.values) }) {
            reconnection.abortPending()
        }
    }
}
