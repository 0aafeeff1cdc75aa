import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// A client's opening handshake, waiting to be accepted or rejected: the Swift counterpart of
/// WebSocket-Node's `WebSocketRequest`.
///
/// The decision may be taken later, from any thread or task.
public final class WebSocketRequest: Sendable {
    /// The request head as received.
    public let httpRequest: HTTPRequestHead
    /// The `Host` header.
    public let host: String
    /// The request target, e.g. `/chat?room=1`.
    public let resource: String
    /// `resource` split into path and query.
    public let resourceURL: WebSocketResourceURL
    /// The peer's address: when the TCP peer is a trusted proxy (unless `ignoreXForwardedFor`),
    /// the rightmost `X-Forwarded-For` address that is not a trusted proxy (proxies append, so
    /// the leftmost ones are whatever the client wrote); else the TCP peer's.
    public let remoteAddress: String
    /// Every address of `X-Forwarded-For` followed by the TCP peer's.
    public let remoteAddresses: [String]
    /// The handshake's protocol version: 13, or 8.
    public let webSocketVersion: Int
    /// `Origin` (version 13) or `Sec-WebSocket-Origin` (version 8), if sent.
    public let origin: String?
    /// The subprotocols the client asked for, lower-cased, in its order of preference.
    public let requestedProtocols: [String]
    /// The extensions the client offered (when `parseExtensions`).
    public let requestedExtensions: [WebSocketExtension]
    /// The cookies the client sent (when `parseCookies`).
    public let cookies: [WebSocketCookie]
    /// The `Sec-WebSocket-Key` (empty over HTTP/2, which has none).
    public let key: String
    /// The underlying channel: the TCP connection, or over HTTP/2 the request's stream (whose
    /// `parent` is the TCP connection it shares with other streams).
    public let socket: Channel
    /// Whether the request came as an extended CONNECT over HTTP/2 (RFC 8441) rather than an
    /// HTTP/1.1 upgrade. Such a request has no `key` (it is empty).
    public var isHTTP2: Bool { httpRequest.version.major == 2 }
    /// The request's number in this process, `websocket.connection_id` in log lines (see
    /// ``WebSocketLogMetadata``); the connection it is accepted as keeps it.
    public let id = WebSocketLogMetadata.nextID()

    let server: WebSocketServer
    /// When the request arrived (the handshake duration metric).
    let receivedAt = NIODeadline.now()
    private let handshake: NIOLoopBound<any WebSocketHandshakeResponder>
    private let decided = NIOLockedValueBox(false)
    /// The request's place under `maxConnections` while it is being decided.
    let slot: WebSocketConnectionSlot?
    let acceptedHandlers = WebSocketEventHandlers<WebSocketConnection>()
    let rejectedHandlers = WebSocketEventHandlers<Void>()

    /// A request ``WebSocketServerHandshake`` found valid, to be decided through `handshake`.
    init(
        _ upgrade: WebSocketServerHandshake.Upgrade, channel: Channel, server: WebSocketServer,
        handshake: any WebSocketHandshakeResponder, slot: WebSocketConnectionSlot? = nil
    ) {
        self.slot = slot
        let head = upgrade.head
        self.httpRequest = head
        self.host = head.headers.first(name: "host") ?? ""
        self.resource = head.uri
        self.resourceURL = WebSocketResourceURL(head.uri)
        self.webSocketVersion = upgrade.version
        self.key = upgrade.key
        self.socket = channel
        self.server = server
        self.handshake = NIOLoopBound(handshake, eventLoop: channel.eventLoop)
        self.origin = upgrade.origin
        self.requestedProtocols = upgrade.requestedProtocols
        self.requestedExtensions = upgrade.requestedExtensions
        self.cookies = upgrade.cookies
        self.remoteAddress = upgrade.remoteAddress
        self.remoteAddresses = upgrade.remoteAddresses
    }

    /// The metadata of a log line about this request (``WebSocketLogMetadata``; no subprotocol
    /// chosen yet).
    var logMetadata: Logger.Metadata {
        WebSocketLogMetadata.metadata(id: id, remoteAddress: remoteAddress, path: resourceURL.path, protocol: nil)
    }

    /// Registers a handler for `requestAccepted`, with the new connection.
    @discardableResult
    public func onRequestAccepted(_ handler: @escaping @Sendable (WebSocketConnection) -> Void) -> WebSocketHandlerToken {
        acceptedHandlers.add(handler)
    }

    /// Registers a handler for `requestRejected`.
    @discardableResult
    public func onRequestRejected(_ handler: @escaping @Sendable () -> Void) -> WebSocketHandlerToken {
        rejectedHandlers.add { _ in handler() }
    }

    /// Accepts the handshake: answers 101 with `Sec-WebSocket-Accept`, the chosen `protocol`
    /// (which must be one the client requested, compared case-insensitively; `nil` for none),
    /// `origin` echoed back, and a `Set-Cookie` line per cookie. Returns the connection.
    ///
    /// Throws for a protocol the client did not request, an invalid or duplicate cookie, or a
    /// request already decided; the request stays undecided in the first two cases.
    @discardableResult
    public func accept(protocol: String? = nil, origin: String? = nil, cookies: [WebSocketCookie] = []) throws -> WebSocketConnection {
        let chosen = `protocol`?.lowercased()
        if let chosen, !requestedProtocols.contains(chosen) {
            throw WebSocketError(.invalidArgument, "Specified protocol \"\(chosen)\" was not requested by the client (it asked for \(requestedProtocols))")
        }
        var seen = Set<String>()
        for cookie in cookies {
            try cookie.validate()
            guard seen.insert(cookie.name).inserted else {
                throw WebSocketError(.invalidArgument, "Duplicate cookie name \"\(cookie.name)\"")
            }
        }
        try markDecided()
        // The headers both HTTP versions answer with; HTTP/1.1 adds its Upgrade lines and
        // Sec-WebSocket-Accept, HTTP/2 its :status 200.
        var headers: [(String, String)] = []
        if let chosen { headers.append(("Sec-WebSocket-Protocol", chosen)) }
        if let origin {
            let clean = origin.filter { !$0.isNewline }  // "\r\n" is one Character
            headers.append((webSocketVersion == 8 ? "Sec-WebSocket-Origin" : "Origin", clean))
        }
        for cookie in cookies { headers.append(("Set-Cookie", cookie.setCookieValue)) }
        let offers = WebSocketExtension.parse(httpRequest.headers["sec-websocket-extensions"])
        let (extensionsHeader, codecs) = server.configuration.negotiators.negotiate(offers: offers)
        if let extensionsHeader { headers.append(("Sec-WebSocket-Extensions", extensionsHeader)) }

        var options = server.configuration.connectionOptions
        options.isHTTP2Stream = isHTTP2
        let metrics = server.metrics.map(WebSocketConnectionMetrics.init(server:))
        for codec in codecs { (codec as? PerMessageDeflateCodec)?.metrics = metrics }
        let connection = WebSocketConnection(
            channel: socket, role: .server, options: options, protocol: chosen,
            extensions: codecs.map(\.negotiated), remoteAddress: remoteAddress, webSocketVersion: webSocketVersion,
            logger: server.logger, id: id, path: resourceURL.path, topicRegistry: server.topicRegistry, codecs: codecs,
            metrics: metrics)
        metrics?.server.handshakeAccepted(since: receivedAt)
        let answer = headers
        let execute: @Sendable () -> Void = {
            self.handshake.value.switchToWebSocket(connection: connection, headers: answer)
            self.acceptedHandlers.emit(connection)
        }
        if socket.eventLoop.inEventLoop { execute() } else { socket.eventLoop.execute(execute) }
        return connection
    }

    /// Accepts the handshake as ``accept(protocol:origin:cookies:)`` does, then runs `handler`
    /// with the connection in a task the server tracks: the connection lives as long as the
    /// handler runs.
    ///
    /// ```swift
    /// try request.accept(protocol: "echo") { connection in
    ///     for try await message in connection.messages {
    ///         try await connection.write(message)
    ///     }
    /// }
    /// ```
    ///
    /// - When `handler` returns and the connection is still open, it closes with 1000.
    /// - When `handler` throws, the connection closes with 1011 (internal error) and the error's
    ///   text, cut to the 123 bytes a close frame holds. Throw only errors whose text a client
    ///   may read.
    /// - ``WebSocketServer/shutDown()`` (and the graceful shutdown of ``WebSocketServer/run()``
    ///   and ``WebSocketServer/run(handlingRequests:)``) closes the connection with 1001: the
    ///   `messages` loop then ends without an error (it returns `nil`, as when the peer closes),
    ///   so the code after it runs; once the connection has closed, `handler`'s task is
    ///   cancelled (to wake anything else it waits for), and the shutdown waits for `handler` to
    ///   return.
    /// - When the peer closes first, the `messages` loop ends and nothing more is sent.
    ///
    /// Throws, before `handler` starts, what ``accept(protocol:origin:cookies:)`` throws. Returns
    /// the connection, for callbacks such as ``WebSocketConnection/onClose(_:)``.
    @discardableResult
    public func accept(
        protocol: String? = nil, origin: String? = nil, cookies: [WebSocketCookie] = [],
        handler: nonisolated(nonsending) @escaping @Sendable (WebSocketConnection) async throws -> Void
    ) throws -> WebSocketConnection {
        let connection = try accept(protocol: `protocol`, origin: origin, cookies: cookies)
        server.runScoped(connection, handler: handler)
        return connection
    }

    /// Rejects the handshake: answers `status` (default 403) with `reason` in
    /// `X-WebSocket-Reject-Reason` and `extraHeaders`, then closes the socket.
    public func reject(status: Int = 403, reason: String? = nil, extraHeaders: [String: String] = [:]) {
        guard (try? markDecided()) != nil else { return }
        server.metrics?.handshakeRefused(status: status, since: receivedAt)
        let execute: @Sendable () -> Void = {
            self.handshake.value.reject(status: status, reason: reason, extraHeaders: extraHeaders)
            self.rejectedHandlers.emit(())
        }
        if socket.eventLoop.inEventLoop { execute() } else { socket.eventLoop.execute(execute) }
    }

    /// Whether `accept` or `reject` was called.
    var isDecided: Bool { decided.withLockedValue { $0 } }

    private func markDecided() throws {
        try decided.withLockedValue { decided in
            guard !decided else { throw WebSocketError(.alreadyDecided, "This request was already accepted or rejected") }
            decided = true
        }
        slot?.release()
    }
}

/// Where a ``WebSocketRequest``'s decision is carried out, on the channel's event loop: the
/// HTTP/1.1 handshake handler (101 Switching Protocols) or an HTTP/2 stream (:status 200).
protocol WebSocketHandshakeResponder: AnyObject {
    /// Answers with success and `headers` (subprotocol, origin, cookies, extensions), then
    /// hands the channel to `connection`.
    func switchToWebSocket(connection: WebSocketConnection, headers: [(String, String)])
    /// Answers with `status` and closes the request.
    func reject(status: Int, reason: String?, extraHeaders: [String: String])
}

/// A request target split into its path and query parameters.
public struct WebSocketResourceURL: Sendable, Hashable {
    /// The path, e.g. `/chat`.
    public var path: String
    /// The raw query after `?`, if any.
    public var query: String?
    /// The query parameters, percent-decoded (`+` is a space), in order: a name may repeat, and
    /// a parameter without `=` has the value `""`. To look one up by name use
    /// ``queryItem(named:)`` or ``queryItems(named:)``.
    public var queryItems: [(name: String, value: String)] {
        guard let query else { return [] }
        return query.split(separator: "&").map { item in
            let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            return (Self.decode(parts[0]), parts.count > 1 ? Self.decode(parts[1]) : "")
        }
    }

    /// The value of the first query parameter called `name`, percent-decoded (`+` is a space);
    /// `nil` when there is none. Names are compared after decoding, case-sensitively, as
    /// `URLSearchParams.get` does: for `/chat?room=a%20b&room=c`, `queryItem(named: "room")` is
    /// `"a b"`; for `?room` (no `=`) it is `""`.
    public func queryItem(named name: String) -> String? {
        queryItems.first { $0.name == name }?.value
    }

    /// Every value of the query parameters called `name`, in order (`URLSearchParams.getAll`):
    /// `["a b", "c"]` for `/chat?room=a%20b&room=c`; `[]` when there is none.
    public func queryItems(named name: String) -> [String] {
        queryItems.filter { $0.name == name }.map(\.value)
    }

    /// Splits a request target (`/path?query`).
    public init(_ resource: String) {
        if let q = resource.firstIndex(of: "?") {
            path = String(resource[..<q])
            query = String(resource[resource.index(after: q)...])
        } else {
            path = resource
            query = nil
        }
    }

    /// Equal when path and raw query are.
    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.path == rhs.path && lhs.query == rhs.query }
    /// Hashes path and raw query.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(path)
        hasher.combine(query)
    }

    /// Form decoding (WHATWG `application/x-www-form-urlencoded`): `+` is a space, `%` and two
    /// hex digits a byte; any other `%` stays as it is; invalid UTF-8 becomes U+FFFD.
    private static func decode(_ s: Substring) -> String {
        var bytes: [UInt8] = []
        var utf8 = Array(s.utf8)[...]
        while let c = utf8.popFirst() {
            if c == UInt8(ascii: "%"), utf8.count >= 2, let high = hexValue(utf8[utf8.startIndex]),
                let low = hexValue(utf8[utf8.startIndex + 1])
            {
                bytes.append(high << 4 | low)
                utf8 = utf8.dropFirst(2)
            } else {
                bytes.append(c == UInt8(ascii: "+") ? UInt8(ascii: " ") : c)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The value of one hex digit; `nil` for anything else (`UInt8(_:radix:)` would also take
    /// a sign, so that `%+1` decoded to a control byte).
    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
