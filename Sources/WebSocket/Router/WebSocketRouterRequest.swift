import NIOHTTP1

/// A request as a router hands it to a mounted handler: the Swift counterpart of
/// WebSocket-Node's `WebSocketRouterRequest`. It carries the subprotocol the route matched, so
/// `accept` needs only the origin and cookies.
public struct WebSocketRouterRequest: Sendable {
    /// The underlying request.
    public let webSocketRequest: WebSocketRequest
    /// The subprotocol this route was matched for; `nil` when the client asked for none.
    public let `protocol`: String?

    init(request: WebSocketRequest, protocol: String?) {
        self.webSocketRequest = request
        self.protocol = `protocol`
    }

    /// The request's `Origin`.
    public var origin: String? { webSocketRequest.origin }
    /// The request target.
    public var resource: String { webSocketRequest.resource }
    /// The request target split into path and query.
    public var resourceURL: WebSocketResourceURL { webSocketRequest.resourceURL }
    /// The request head.
    public var httpRequest: HTTPRequestHead { webSocketRequest.httpRequest }
    /// The peer's address (see ``WebSocketRequest/remoteAddress``).
    public var remoteAddress: String { webSocketRequest.remoteAddress }
    /// The handshake's protocol version.
    public var webSocketVersion: Int { webSocketRequest.webSocketVersion }
    /// The extensions the client offered.
    public var requestedExtensions: [WebSocketExtension] { webSocketRequest.requestedExtensions }
    /// The cookies the client sent.
    public var cookies: [WebSocketCookie] { webSocketRequest.cookies }

    /// Accepts with the route's protocol. See ``WebSocketRequest/accept(protocol:origin:cookies:)``.
    @discardableResult
    public func accept(origin: String? = nil, cookies: [WebSocketCookie] = []) throws -> WebSocketConnection {
        try webSocketRequest.accept(protocol: `protocol`, origin: origin, cookies: cookies)
    }

    /// Accepts with the route's protocol and runs `handler` with the connection in a task the
    /// server tracks: the connection closes with 1000 when `handler` returns, with 1011 when it
    /// throws, and with 1001 when the server shuts down (the `messages` loop then ends, and
    /// the handler's task is cancelled once the connection has closed). See
    /// ``WebSocketRequest/accept(protocol:origin:cookies:handler:)``.
    @discardableResult
    public func accept(
        origin: String? = nil, cookies: [WebSocketCookie] = [],
        handler: nonisolated(nonsending) @escaping @Sendable (WebSocketConnection) async throws -> Void
    ) throws -> WebSocketConnection {
        try webSocketRequest.accept(protocol: `protocol`, origin: origin, cookies: cookies, handler: handler)
    }

    /// Rejects. See ``WebSocketRequest/reject(status:reason:extraHeaders:)``.
    public func reject(status: Int = 403, reason: String? = nil, extraHeaders: [String: String] = [:]) {
        webSocketRequest.reject(status: status, reason: reason, extraHeaders: extraHeaders)
    }

    /// Registers a handler for `requestAccepted`.
    @discardableResult
    public func onRequestAccepted(_ handler: @escaping @Sendable (WebSocketConnection) -> Void) -> WebSocketHandlerToken {
        webSocketRequest.onRequestAccepted(handler)
    }

    /// Registers a handler for `requestRejected`.
    @discardableResult
    public func onRequestRejected(_ handler: @escaping @Sendable () -> Void) -> WebSocketHandlerToken {
        webSocketRequest.onRequestRejected(handler)
    }
}
