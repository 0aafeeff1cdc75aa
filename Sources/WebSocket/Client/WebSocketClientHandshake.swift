import NIOCore
import NIOHTTP1

/// What a client offered in its opening handshake, and the check of the server's answer against
/// it (RFC 6455 §4.1 over HTTP/1.1, RFC 8441 §4 over HTTP/2), as a pure function: the response
/// head in, a ``Verdict`` out. No channel.
///
/// Both ``WebSocketClientHandshakeHandler`` (HTTP/1.1) and ``WebSocketHTTP2ClientStreamHandler``
/// ask it, then carry out the verdict: set up the connection, or fail the attempt.
struct WebSocketClientHandshake {
    /// The `Sec-WebSocket-Key` sent; its `Sec-WebSocket-Accept` is expected in a 101. Unused
    /// over HTTP/2, which has no key.
    var key: String
    /// The subprotocols offered.
    var protocols: [String]
    /// The extensions offered; each checks the server's answer for its extension.
    var negotiators: [any WebSocketExtensionNegotiator]
    /// Where the connection goes (`host:port`, and the proxy), for error messages.
    var peerDescription: String

    /// The outcome of the check.
    enum Verdict {
        /// The server accepted: the subprotocol it chose (lower-cased; `nil` for none) and the
        /// codecs of the extensions it accepted, in its order.
        case accepted(protocol: String?, extensions: [any WebSocketExtensionCodec])
        /// The answer is not an acceptance; `response` is the server's answer when it refused
        /// with another status (for the `httpResponse` event).
        case failed(WebSocketError, response: WebSocketClient.HTTPResponse?)

        /// The error, if the answer was not an acceptance.
        var error: WebSocketError? {
            if case .failed(let error, _) = self { return error }
            return nil
        }
    }

    /// Checks an HTTP/1.1 answer: 101 with `Upgrade: websocket`, `Connection: Upgrade`, the
    /// right `Sec-WebSocket-Accept`, and a subprotocol and extensions that were offered.
    ///
    /// - Parameters:
    ///   - head: the response head.
    ///   - body: the body read so far (only kept for a refusal's `httpResponse`).
    func validate(_ head: HTTPResponseHead, body: ByteBuffer? = nil) -> Verdict {
        let headers = head.headers
        func fail(_ code: WebSocketError.Code, _ message: String) -> Verdict {
            .failed(WebSocketError(code, message), response: nil)
        }
        guard head.status == .switchingProtocols else {
            let statusLine = "\(head.version) \(head.status.code) \(head.status.reasonPhrase)"
            return refused(head, body: body, "The server \(peerDescription) answered with \(statusLine) instead of 101 Switching Protocols")
        }
        guard WebSocketHandshake.headerContainsToken(headers, "upgrade", "websocket") else {
            return fail(.handshakeFailed, "Expected an Upgrade: websocket header from the server, got \(headers["upgrade"].first.map { "\"\($0)\"" } ?? "none")")
        }
        guard WebSocketHandshake.headerContainsToken(headers, "connection", "upgrade") else {
            return fail(.handshakeFailed, "Expected a Connection: Upgrade header from the server, got \(headers["connection"].first.map { "\"\($0)\"" } ?? "none")")
        }
        let expected = WebSocketHandshake.acceptValue(forKey: key)
        guard let accept = headers.first(name: "sec-websocket-accept") else {
            return fail(.invalidAcceptKey, "The server sent no Sec-WebSocket-Accept header")
        }
        guard accept == expected else {
            return fail(.invalidAcceptKey, "Sec-WebSocket-Accept header from server didn't match expected value of \(expected) (got \(accept))")
        }
        return negotiate(headers)
    }

    /// Checks the final answer on an HTTP/2 stream: any 2xx that leaves the stream open accepts
    /// (RFC 9110 §9.3.6), with a subprotocol and extensions that were offered; another status
    /// refuses. (Interim 1xx answers are the caller's to skip.)
    ///
    /// - Parameters:
    ///   - head: the response head, built from the HEADERS frame (`:status`, the other fields).
    ///   - body: the body read so far (only kept for a refusal's `httpResponse`).
    ///   - endStream: whether the server ended the stream with that frame.
    func validateHTTP2(_ head: HTTPResponseHead, body: ByteBuffer? = nil, endStream: Bool) -> Verdict {
        let status = Int(head.status.code)
        guard (200..<300).contains(status) else {
            return refused(head, body: body, "The server \(peerDescription) answered the HTTP/2 WebSocket request with status \(status) instead of 200")
        }
        guard !endStream else {
            return .failed(
                WebSocketError(.handshakeFailed, "The server \(peerDescription) accepted the WebSocket but ended the stream at once"),
                response: nil)
        }
        return negotiate(head.headers)
    }

    /// Checks the server's choice of subprotocol and extensions (the same over HTTP/1.1 and
    /// HTTP/2): the subprotocol must be one offered; each extension one offered, once, with
    /// parameters its negotiator accepts.
    func negotiate(_ headers: HTTPHeaders) -> Verdict {
        func fail(_ code: WebSocketError.Code, _ message: String) -> Verdict {
            .failed(WebSocketError(code, message), response: nil)
        }
        var chosen: String?
        if let answered = headers.first(name: "sec-websocket-protocol") {
            let lower = answered.trimmingSpaces().lowercased()
            guard protocols.contains(where: { $0.lowercased() == lower }) else {
                let offered = protocols.isEmpty ? "none" : protocols.joined(separator: ", ")
                return fail(.protocolNotOffered, "The server chose the subprotocol \"\(answered)\", which the client did not offer (offered: \(offered))")
            }
            chosen = lower
        }
        // Each accepted extension must be one offered, once; its negotiator checks the answer.
        var codecs: [any WebSocketExtensionCodec] = []
        var seen = Set<String>()
        for accepted in WebSocketExtension.parse(headers["sec-websocket-extensions"]) {
            let name = accepted.name.lowercased()
            guard let negotiator = negotiators.first(where: { $0.name.lowercased() == name }) else {
                return fail(.extensionNotOffered, "The server accepted the extension \"\(accepted)\", which the client did not offer")
            }
            guard seen.insert(name).inserted else {
                return fail(.handshakeFailed, "The server accepted the extension \(accepted.name) twice")
            }
            do {
                codecs.append(try negotiator.accepted(response: accepted))
            } catch {
                let message = (error as? WebSocketError)?.message ?? "\(error)"
                return fail(.handshakeFailed, "The server's answer for \(accepted.name) is not acceptable: \(message)")
            }
        }
        return .accepted(protocol: chosen, extensions: codecs)
    }

    /// A refusal: `.unexpectedStatus`, carrying the status, the headers and the reject reason
    /// as fields, and the whole response for `httpResponse`.
    private func refused(_ head: HTTPResponseHead, body: ByteBuffer?, _ message: String) -> Verdict {
        .failed(
            WebSocketError(.unexpectedStatus, message, response: WebSocketError.HTTPResponseInfo(head)),
            response: WebSocketClient.HTTPResponse(head: head, body: body ?? ByteBuffer()))
    }
}
