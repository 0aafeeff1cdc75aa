import NIOHTTP1

/// The server's rules for an opening handshake, as a pure function of the request: the request
/// (an HTTP/1.1 head, or the header fields of an HTTP/2 stream), the TCP peer's address and the
/// configuration in, a ``Verdict`` out. No channel, no clock, no server state.
///
/// Both the HTTP/1.1 handler (``WebSocketServerHandshakeHandler``, RFC 6455 §4.2.1) and the
/// HTTP/2 stream handler (``WebSocketHTTP2ServerStreamHandler``, RFC 8441 §5) ask it, then carry
/// out the verdict: hand an ``Upgrade`` to the application as a ``WebSocketRequest``, pass a
/// plain request to the server's HTTP handler, or answer a ``Refusal`` and report its error as
/// `upgradeError`. What needs the server's state (`maxConnections`, answered 503) they check
/// themselves, after a verdict of `.upgrade`.
enum WebSocketServerHandshake {
    /// What to do with a request.
    enum Verdict: Sendable, Equatable {
        /// A valid WebSocket request, parsed: for the application to accept or reject.
        case upgrade(Upgrade)
        /// Not a WebSocket request (no `Upgrade: websocket` over HTTP/1.1, not a CONNECT over
        /// HTTP/2): the server's plain HTTP handler answers it. Over HTTP/2 the head is made
        /// from the stream's fields (version 2.0, `:method`, `:path`, `:authority` as `Host`).
        case plainRequest(HTTPRequestHead)
        /// An invalid WebSocket request: answer it, close, and report the error as `upgradeError`.
        case refuse(Refusal)
    }

    /// A refused request: the answer to send and the error to report.
    struct Refusal: Sendable, Equatable {
        /// The answer's status: 400 for a malformed upgrade, 426 for an unsupported version
        /// (HTTP/1.1), 431 for too many headers, 501 for a CONNECT other than `websocket`.
        var status: HTTPResponseStatus
        /// Extra headers of the answer, e.g. `Sec-WebSocket-Version: 13, 8` with a 426.
        var headers: [String: String]
        /// The answer's body.
        var body: String
        /// What the server reports as `upgradeError` (code `.handshakeFailed`).
        var error: WebSocketError
    }

    /// A valid request, with the fields a ``WebSocketRequest`` exposes.
    struct Upgrade: Sendable, Equatable {
        /// The request head (over HTTP/2: built from the stream's fields, `Host` from `:authority`).
        var head: HTTPRequestHead
        /// The protocol version: 13, or 8 (HTTP/1.1 only).
        var version: Int
        /// `Sec-WebSocket-Key`, trimmed; empty over HTTP/2.
        var key: String
        /// `Origin` (version 13) or `Sec-WebSocket-Origin` (version 8).
        var origin: String?
        /// The subprotocols asked for, lower-cased, in the client's order.
        var requestedProtocols: [String]
        /// The extensions offered (empty unless `parseExtensions`).
        var requestedExtensions: [WebSocketExtension]
        /// The cookies sent (empty unless `parseCookies`).
        var cookies: [WebSocketCookie]
        /// When the TCP peer is one of `trustedProxies` (unless `ignoreXForwardedFor`): the
        /// rightmost `X-Forwarded-For` address that is not a trusted proxy (see
        /// ``WebSocketServerHandshake/clientAddress(forwarded:peerAddress:trustedProxies:)``); else the TCP peer's.
        var remoteAddress: String
        /// Every `X-Forwarded-For` address, then the TCP peer's.
        var remoteAddresses: [String]
    }

    /// Evaluates an HTTP/1.1 request head (RFC 6455 §4.2.1).
    ///
    /// - Parameters:
    ///   - head: the request head as parsed.
    ///   - peerAddress: the TCP peer's IP address (empty if unknown), for `remoteAddress`.
    ///   - configuration: the server's options (header limit, `trustedProxies`, parsing).
    static func evaluate(
        _ head: HTTPRequestHead, peerAddress: String, configuration: WebSocketServer.Configuration
    ) -> Verdict {
        let headers = head.headers
        guard headers.count <= configuration.maxHeaderCount else {
            return .refuse(tooManyHeaders(headers.count, configuration))
        }
        guard WebSocketHandshake.headerContainsToken(headers, "upgrade", "websocket") else {
            return .plainRequest(head)
        }
        func fail(_ message: String) -> Verdict {
            .refuse(Refusal(status: .badRequest, headers: [:], body: message, error: WebSocketError(.handshakeFailed, message)))
        }
        guard head.method == .GET else { return fail("WebSocket upgrade must use GET, not \(head.method)") }
        guard head.version.major > 1 || (head.version.major == 1 && head.version.minor >= 1) else {
            return fail("WebSocket upgrade needs HTTP/1.1 or later")
        }
        guard headers.first(name: "host") != nil else { return fail("Missing Host header") }
        guard WebSocketHandshake.headerContainsToken(headers, "connection", "upgrade") else {
            return fail("Connection header does not contain \"upgrade\"")
        }
        guard let versionValue = headers.first(name: "sec-websocket-version") else {
            return fail("Missing Sec-WebSocket-Version header")
        }
        guard let version = Int(versionValue.trimmingSpaces()), version == 13 || version == 8 else {
            return .refuse(
                Refusal(
                    status: .upgradeRequired, headers: ["Sec-WebSocket-Version": "13, 8"], body: "Unsupported WebSocket version",
                    error: WebSocketError(.handshakeFailed, "Unsupported WebSocket version \(versionValue); 13 and 8 are supported")))
        }
        guard let key = headers.first(name: "sec-websocket-key")?.trimmingSpaces(), WebSocketHandshake.isValidKey(String(key)) else {
            return fail("Missing or malformed Sec-WebSocket-Key header")
        }
        return .upgrade(upgrade(head, version: version, key: String(key), peerAddress: peerAddress, configuration: configuration))
    }

    /// Evaluates the header fields that opened an HTTP/2 stream (RFC 8441 §5): an extended
    /// CONNECT with `:protocol websocket` and version 13 is an upgrade; another method a plain
    /// request.
    ///
    /// - Parameters:
    ///   - fields: the HEADERS frame's fields in order, pseudo-headers (`:method`, `:path`,
    ///     `:authority`, `:protocol`) included.
    ///   - endStream: whether that frame ended the client's side of the stream.
    ///   - peerAddress: the TCP peer's IP address (empty if unknown), for `remoteAddress`.
    ///   - configuration: the server's options.
    static func evaluateHTTP2(
        _ fields: [(name: String, value: String)], endStream: Bool, peerAddress: String,
        configuration: WebSocketServer.Configuration
    ) -> Verdict {
        var methodField: String?, path: String?, authority: String?, proto: String?
        var plain = HTTPHeaders()
        var count = 0
        for (name, value) in fields {
            // The first of each pseudo-header counts (as HPACKHeaders.first(name:) finds it).
            switch name {
            case ":method": methodField = methodField ?? value
            case ":path": path = path ?? value
            case ":authority": authority = authority ?? value
            case ":protocol": proto = proto ?? value
            case _ where name.hasPrefix(":"): break
            default:
                plain.add(name: name, value: value)
                count += 1
            }
        }
        let method = methodField ?? ""
        if let authority {
            if let host = plain.first(name: "host"), host != authority {
                return .refuse(
                    Refusal(
                        status: .badRequest, headers: [:], body: "Host differs from :authority",
                        error: WebSocketError(.handshakeFailed, "Host \"\(host)\" differs from :authority \"\(authority)\"")))
            }
            plain.replaceOrAdd(name: "host", value: authority)
        }
        let head = HTTPRequestHead(
            version: .init(major: 2, minor: 0), method: HTTPMethod(rawValue: method), uri: path ?? "/", headers: plain)
        guard count <= configuration.maxHeaderCount else {
            return .refuse(tooManyHeaders(count, configuration))
        }
        guard method == "CONNECT" else { return .plainRequest(head) }
        func fail(_ status: Int, _ message: String, _ extra: [String: String] = [:]) -> Verdict {
            .refuse(
                Refusal(
                    status: HTTPResponseStatus(statusCode: status), headers: extra, body: message,
                    error: WebSocketError(.handshakeFailed, message)))
        }
        guard let proto else {
            return fail(501, "Plain CONNECT (a TCP tunnel) is not supported; only :protocol websocket")
        }
        guard proto.lowercased() == "websocket" else {
            return fail(501, "Extended CONNECT for :protocol \"\(proto)\" is not supported; only websocket")
        }
        guard !endStream else { return fail(400, "An extended CONNECT must leave its stream open") }
        guard let versionValue = plain.first(name: "sec-websocket-version") else {
            return fail(400, "Missing sec-websocket-version header")
        }
        guard Int(versionValue.trimmingSpaces()) == 13 else {
            return fail(400, "Unsupported WebSocket version \(versionValue); 13 is supported over HTTP/2", ["sec-websocket-version": "13"])
        }
        return .upgrade(upgrade(head, version: 13, key: "", peerAddress: peerAddress, configuration: configuration))
    }

    /// The parsed fields of a valid request, the same for both HTTP versions.
    static func upgrade(
        _ head: HTTPRequestHead, version: Int, key: String, peerAddress: String, configuration: WebSocketServer.Configuration
    ) -> Upgrade {
        let headers = head.headers
        let forwarded = WebSocketHandshake.tokens(headers, "x-forwarded-for").map(String.init)
        let believed = !configuration.ignoreXForwardedFor && configuration.trustedProxies.contains(peerAddress)
        return Upgrade(
            head: head, version: version, key: key,
            origin: version == 8 ? headers.first(name: "sec-websocket-origin") : headers.first(name: "origin"),
            requestedProtocols: WebSocketHandshake.tokens(headers, "sec-websocket-protocol").map { $0.lowercased() },
            requestedExtensions: configuration.parseExtensions ? WebSocketExtension.parse(headers["sec-websocket-extensions"]) : [],
            cookies: configuration.parseCookies ? headers["cookie"].flatMap(WebSocketCookie.parse) : [],
            remoteAddress: believed
                ? clientAddress(forwarded: forwarded, peerAddress: peerAddress, trustedProxies: configuration.trustedProxies)
                : peerAddress,
            remoteAddresses: forwarded + [peerAddress])
    }

    /// The client's address behind trusted proxies: `X-Forwarded-For` read from the right, past
    /// every trusted proxy, as nginx's realip module (`real_ip_recursive on`) and Vapor do.
    /// Proxies append the address they got the request from, so only the addresses a trusted
    /// proxy added can be believed: the leftmost ones are whatever the client wrote (a client
    /// behind nginx's `$proxy_add_x_forwarded_for` could otherwise name any address). When every
    /// address is a trusted proxy, the leftmost one.
    static func clientAddress(forwarded: [String], peerAddress: String, trustedProxies: Set<String>) -> String {
        var address = peerAddress
        for hop in forwarded.reversed() {
            guard trustedProxies.contains(address) else { break }
            address = hop
        }
        return address
    }

    private static func tooManyHeaders(_ count: Int, _ configuration: WebSocketServer.Configuration) -> Refusal {
        Refusal(
            status: .init(statusCode: 431), headers: [:], body: "Request Header Fields Too Large",
            error: WebSocketError(
                .handshakeFailed, "Request has \(count) headers; at most \(configuration.maxHeaderCount) are accepted"))
    }
}
