import NIOCore
import NIOHTTP1
import Testing

@testable import WebSocket

/// ``WebSocketClientHandshake`` driven with values only: what was offered and the server's
/// answer in, a verdict out; no channel, no socket.
@Suite("Client handshake validation")
struct ClientHandshakeValidationTests {
    static let key = "dGhlIHNhbXBsZSBub25jZQ=="
    static let accept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

    static func offer(protocols: [String] = ["chat", "Echo"], deflate: Bool = false) -> WebSocketClientHandshake {
        WebSocketClientHandshake(
            key: key, protocols: protocols, negotiators: deflate ? [PerMessageDeflate(PerMessageDeflate.Options())] : [],
            peerDescription: "example.com:80")
    }

    /// A valid 101 answer, with `extra` headers replacing or adding to it and `without` removed.
    static func switching(_ extra: [(String, String)] = [], without: [String] = []) -> HTTPResponseHead {
        var headers = HTTPHeaders([("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", accept)])
        for name in without { headers.remove(name: name) }
        for (name, value) in extra { headers.replaceOrAdd(name: name, value: value) }
        return HTTPResponseHead(version: .http1_1, status: .switchingProtocols, headers: headers)
    }

    static func accepted(_ verdict: WebSocketClientHandshake.Verdict) -> (String?, [any WebSocketExtensionCodec])? {
        if case .accepted(let chosen, let codecs) = verdict { return (chosen, codecs) }
        Issue.record("expected acceptance, got \(verdict)")
        return nil
    }

    @Test("a good 101: accepted, with the chosen subprotocol (lower-cased) and no extension")
    func good() throws {
        let plain = try #require(Self.accepted(Self.offer().validate(Self.switching())))
        #expect(plain.0 == nil)
        #expect(plain.1.isEmpty)
        let chosen = try #require(Self.accepted(Self.offer().validate(Self.switching([("Sec-WebSocket-Protocol", "ECHO")]))))
        #expect(chosen.0 == "echo")
        // Tokens in lists, any case.
        let lists = Self.switching([("Upgrade", "WebSocket"), ("Connection", "keep-alive, upgrade")])
        #expect(Self.accepted(Self.offer().validate(lists)) != nil)
    }

    @Test("an extension that was offered is accepted with its codec")
    func offeredExtension() throws {
        let head = Self.switching([("Sec-WebSocket-Extensions", "permessage-deflate; server_no_context_takeover")])
        let result = try #require(Self.accepted(Self.offer(deflate: true).validate(head)))
        #expect(result.1.map(\.negotiated.name) == ["permessage-deflate"])
    }

    @Test("a wrong or missing Sec-WebSocket-Accept: invalidAcceptKey")
    func wrongAccept() {
        let wrong = Self.offer().validate(Self.switching([("Sec-WebSocket-Accept", "AAAAAAAAAAAAAAAAAAAAAAAAAAA=")])).error
        #expect(wrong?.code == .invalidAcceptKey)
        #expect(wrong?.message == "Sec-WebSocket-Accept header from server didn't match expected value of \(Self.accept) (got AAAAAAAAAAAAAAAAAAAAAAAAAAA=)")
        #expect(wrong?.response == nil)
        let missing = Self.offer().validate(Self.switching(without: ["Sec-WebSocket-Accept"])).error
        #expect(missing == WebSocketError(.invalidAcceptKey, "The server sent no Sec-WebSocket-Accept header"))
    }

    @Test("missing Upgrade or Connection tokens: handshakeFailed")
    func missingTokens() {
        let upgrade = Self.offer().validate(Self.switching(without: ["Upgrade"])).error
        #expect(upgrade == WebSocketError(.handshakeFailed, "Expected an Upgrade: websocket header from the server, got none"))
        let connection = Self.offer().validate(Self.switching([("Connection", "close")])).error
        #expect(connection == WebSocketError(.handshakeFailed, "Expected a Connection: Upgrade header from the server, got \"close\""))
    }

    @Test("a subprotocol that was not offered: protocolNotOffered")
    func protocolNotOffered() {
        let error = Self.offer().validate(Self.switching([("Sec-WebSocket-Protocol", "mqtt")])).error
        #expect(error?.code == .protocolNotOffered)
        #expect(error?.message == "The server chose the subprotocol \"mqtt\", which the client did not offer (offered: chat, Echo)")
        let none = Self.offer(protocols: []).validate(Self.switching([("Sec-WebSocket-Protocol", "chat")])).error
        #expect(none?.message.hasSuffix("(offered: none)") == true)
    }

    @Test("an extension that was not offered, or accepted twice: extensionNotOffered, handshakeFailed")
    func extensionNotOffered() {
        let head = Self.switching([("Sec-WebSocket-Extensions", "permessage-deflate")])
        let error = Self.offer().validate(head).error
        #expect(error == WebSocketError(.extensionNotOffered, "The server accepted the extension \"permessage-deflate\", which the client did not offer"))
        let twice = Self.switching([("Sec-WebSocket-Extensions", "permessage-deflate, permessage-deflate")])
        #expect(Self.offer(deflate: true).validate(twice).error?.message == "The server accepted the extension permessage-deflate twice")
    }

    @Test("a status other than 101: unexpectedStatus with the status, headers and reject reason as fields")
    func non101() throws {
        let head = HTTPResponseHead(
            version: .http1_1, status: .forbidden,
            headers: HTTPHeaders([("X-WebSocket-Reject-Reason", "go away"), ("Content-Length", "9")]))
        let verdict = Self.offer().validate(head, body: ByteBuffer(string: "Forbidden"))
        guard case .failed(let error, let response) = verdict else {
            Issue.record("expected a failure, got \(verdict)")
            return
        }
        #expect(error.code == .unexpectedStatus)
        #expect(error.message == "The server example.com:80 answered with HTTP/1.1 403 Forbidden instead of 101 Switching Protocols")
        let info = try #require(error.response)
        #expect(info.statusCode == 403)
        #expect(info.statusMessage == "Forbidden")
        #expect(info.rejectReason == "go away")
        #expect(info.headers.first(name: "content-length") == "9")
        #expect(info == WebSocketError.HTTPResponseInfo(statusCode: 403, statusMessage: "Forbidden", headers: head.headers))
        // The whole answer, body included, for httpResponse.
        #expect(response?.statusCode == 403)
        #expect(response.map { String(buffer: $0.body) } == "Forbidden")
        // A 200 to an HTTP/1.1 upgrade is a refusal too.
        let ok = HTTPResponseHead(version: .http1_1, status: .ok)
        #expect(Self.offer().validate(ok).error?.code == .unexpectedStatus)
        #expect(Self.offer().validate(ok).error?.response?.rejectReason == nil)
    }

    @Test("HTTP/2: a 2xx that leaves the stream open accepts; one that ends it fails; another status refuses")
    func http2() throws {
        let h2 = HTTPVersion(major: 2, minor: 0)
        let ok = HTTPResponseHead(version: h2, status: .ok, headers: HTTPHeaders([("sec-websocket-protocol", "chat")]))
        let offer = Self.offer()
        #expect(try #require(Self.accepted(offer.validateHTTP2(ok, endStream: false))).0 == "chat")
        #expect(offer.validateHTTP2(ok, endStream: true).error
            == WebSocketError(.handshakeFailed, "The server example.com:80 accepted the WebSocket but ended the stream at once"))
        let notOffered = HTTPResponseHead(version: h2, status: .ok, headers: HTTPHeaders([("sec-websocket-protocol", "mqtt")]))
        #expect(offer.validateHTTP2(notOffered, endStream: false).error?.code == .protocolNotOffered)
        let refused = HTTPResponseHead(
            version: h2, status: .init(statusCode: 403), headers: HTTPHeaders([("x-websocket-reject-reason", "go away")]))
        let error = try #require(offer.validateHTTP2(refused, endStream: true).error)
        #expect(error.code == .unexpectedStatus)
        #expect(error.message == "The server example.com:80 answered the HTTP/2 WebSocket request with status 403 instead of 200")
        #expect(error.response?.statusCode == 403)
        #expect(error.response?.rejectReason == "go away")
    }
}
