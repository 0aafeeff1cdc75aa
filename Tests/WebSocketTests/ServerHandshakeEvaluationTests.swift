import NIOCore
import NIOHTTP1
import Testing

@testable import WebSocket

/// ``WebSocketServerHandshake`` driven with values only: a request in, a verdict out; no channel,
/// no socket.
@Suite("Server handshake evaluation")
struct ServerHandshakeEvaluationTests {
    static let key = "dGhlIHNhbXBsZSBub25jZQ=="

    /// A valid version 13 upgrade head, with `extra` headers added and `without` removed.
    static func head(
        method: HTTPMethod = .GET, version: HTTPVersion = .http1_1, _ extra: [(String, String)] = [], without: [String] = []
    ) -> HTTPRequestHead {
        var headers = HTTPHeaders([
            ("Host", "example.com"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13"),
        ])
        for name in without { headers.remove(name: name) }
        for (name, value) in extra { headers.replaceOrAdd(name: name, value: value) }
        return HTTPRequestHead(version: version, method: method, uri: "/chat?room=1", headers: headers)
    }

    static func evaluate(
        _ head: HTTPRequestHead, peer: String = "192.0.2.1",
        _ configure: (inout WebSocketServer.Configuration) -> Void = { _ in }
    ) -> WebSocketServerHandshake.Verdict {
        var configuration = WebSocketServer.Configuration()
        configure(&configuration)
        return WebSocketServerHandshake.evaluate(head, peerAddress: peer, configuration: configuration)
    }

    static func upgrade(_ verdict: WebSocketServerHandshake.Verdict) -> WebSocketServerHandshake.Upgrade? {
        if case .upgrade(let upgrade) = verdict { return upgrade }
        Issue.record("expected an upgrade, got \(verdict)")
        return nil
    }

    static func refusal(_ verdict: WebSocketServerHandshake.Verdict) -> WebSocketServerHandshake.Refusal? {
        if case .refuse(let refusal) = verdict { return refusal }
        Issue.record("expected a refusal, got \(verdict)")
        return nil
    }

    // MARK: HTTP/1.1

    @Test("a good version 13 request is an upgrade with its fields parsed")
    func goodVersion13() throws {
        let head = Self.head([
            ("Origin", "https://example.com"), ("Sec-WebSocket-Protocol", "chat, echo"),
            ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"), ("Cookie", "a=1; b=2"),
        ])
        let upgrade = try #require(Self.upgrade(Self.evaluate(head)))
        #expect(upgrade.head == head)
        #expect(upgrade.version == 13)
        #expect(upgrade.key == Self.key)
        #expect(upgrade.origin == "https://example.com")
        #expect(upgrade.requestedProtocols == ["chat", "echo"])
        #expect(upgrade.requestedExtensions == [
            WebSocketExtension(name: "permessage-deflate", parameters: [.init(name: "client_max_window_bits")])
        ])
        #expect(upgrade.cookies.map(\.name) == ["a", "b"])
        #expect(upgrade.cookies.map(\.value) == ["1", "2"])
        #expect(upgrade.remoteAddress == "192.0.2.1")
        #expect(upgrade.remoteAddresses == ["192.0.2.1"])
    }

    @Test("parseExtensions and parseCookies off leave those fields empty")
    func parsingOff() throws {
        let head = Self.head([("Sec-WebSocket-Extensions", "permessage-deflate"), ("Cookie", "a=1")])
        let upgrade = try #require(Self.upgrade(Self.evaluate(head) {
            $0.parseExtensions = false
            $0.parseCookies = false
        }))
        #expect(upgrade.requestedExtensions.isEmpty)
        #expect(upgrade.cookies.isEmpty)
    }

    @Test("version 8 takes its origin from Sec-WebSocket-Origin, not Origin")
    func version8() throws {
        let head = Self.head([
            ("Sec-WebSocket-Version", "8"), ("Sec-WebSocket-Origin", "http://old.example"), ("Origin", "http://other.example"),
        ])
        let upgrade = try #require(Self.upgrade(Self.evaluate(head)))
        #expect(upgrade.version == 8)
        #expect(upgrade.origin == "http://old.example")
        // Version 13 ignores Sec-WebSocket-Origin.
        let v13 = try #require(Self.upgrade(Self.evaluate(Self.head([("Sec-WebSocket-Origin", "http://old.example")]))))
        #expect(v13.origin == nil)
    }

    @Test("another version: 426 with Sec-WebSocket-Version: 13, 8", arguments: ["12", "7", "14", "thirteen", ""])
    func wrongVersion(version: String) throws {
        let refusal = try #require(Self.refusal(Self.evaluate(Self.head([("Sec-WebSocket-Version", version)]))))
        #expect(refusal.status == .upgradeRequired)
        #expect(refusal.headers == ["Sec-WebSocket-Version": "13, 8"])
        #expect(refusal.body == "Unsupported WebSocket version")
        #expect(refusal.error == WebSocketError(.handshakeFailed, "Unsupported WebSocket version \(version); 13 and 8 are supported"))
    }

    @Test("a missing or malformed key: 400", arguments: [nil, "c2hvcnQ=", "not base64 at all!!!!!!=", "dGhlIHNhbXBsZSBub25jZQ"])
    func badKey(key: String?) throws {
        let head = key.map { Self.head([("Sec-WebSocket-Key", $0)]) } ?? Self.head(without: ["Sec-WebSocket-Key"])
        let refusal = try #require(Self.refusal(Self.evaluate(head)))
        #expect(refusal.status == .badRequest)
        #expect(refusal.headers.isEmpty)
        #expect(refusal.body == "Missing or malformed Sec-WebSocket-Key header")
        #expect(refusal.error == WebSocketError(.handshakeFailed, "Missing or malformed Sec-WebSocket-Key header"))
    }

    @Test("the other malformed upgrades: 400 with the reason as body and upgradeError")
    func malformed() throws {
        let cases: [(HTTPRequestHead, String)] = [
            (Self.head(method: .POST), "WebSocket upgrade must use GET, not POST"),
            (Self.head(version: .http1_0), "WebSocket upgrade needs HTTP/1.1 or later"),
            (Self.head(without: ["Host"]), "Missing Host header"),
            (Self.head(without: ["Connection"]), "Connection header does not contain \"upgrade\""),
            (Self.head([("Connection", "keep-alive")]), "Connection header does not contain \"upgrade\""),
            (Self.head(without: ["Sec-WebSocket-Version"]), "Missing Sec-WebSocket-Version header"),
        ]
        for (head, message) in cases {
            let refusal = try #require(Self.refusal(Self.evaluate(head)))
            #expect(refusal.status == .badRequest, "\(message)")
            #expect(refusal.body == message)
            #expect(refusal.error == WebSocketError(.handshakeFailed, message))
        }
    }

    @Test("tokens are matched case-insensitively within lists")
    func tokenLists() throws {
        let head = Self.head([("Upgrade", "h2c, WebSocket"), ("Connection", "keep-alive, UPGRADE")])
        #expect(Self.upgrade(Self.evaluate(head)) != nil)
    }

    @Test("no Upgrade: websocket is a plain request, for the HTTP handler")
    func missingUpgrade() {
        let head = Self.head(without: ["Upgrade"])
        #expect(Self.evaluate(head) == .plainRequest(head))
        let other = Self.head([("Upgrade", "h2c")])
        #expect(Self.evaluate(other) == .plainRequest(other))
    }

    @Test("more headers than maxHeaderCount: 431, checked before anything else")
    func tooManyHeaders() throws {
        let head = Self.head(method: .POST, (0..<5).map { ("X-Extra-\($0)", "v") })
        let refusal = try #require(Self.refusal(Self.evaluate(head) { $0.maxHeaderCount = 9 }))
        #expect(refusal.status == .requestHeaderFieldsTooLarge)
        #expect(refusal.body == "Request Header Fields Too Large")
        #expect(refusal.error == WebSocketError(.handshakeFailed, "Request has 10 headers; at most 9 are accepted"))
        #expect(Self.evaluate(head) { $0.maxHeaderCount = 10 } != .refuse(refusal))
    }

    @Test("requested subprotocols are lower-cased, trimmed, in order, empty items dropped")
    func subprotocols() throws {
        let head = HTTPRequestHead(
            version: .http1_1, method: .GET, uri: "/",
            headers: Self.head().headers.adding([("Sec-WebSocket-Protocol", " Chat ,SuperChat,, v2.JSON"), ("Sec-WebSocket-Protocol", "MQTT")]))
        let upgrade = try #require(Self.upgrade(Self.evaluate(head)))
        #expect(upgrade.requestedProtocols == ["chat", "superchat", "v2.json", "mqtt"])
    }

    @Test("X-Forwarded-For is believed only from a trusted proxy, and never with ignoreXForwardedFor")
    func forwardedFor() throws {
        let head = Self.head([("X-Forwarded-For", "203.0.113.7, 10.0.0.1")])
        // Loopback is trusted by default.
        // The proxy appended the address it got the request from (10.0.0.1): that is the client;
        // 203.0.113.7 is whatever that client wrote, and may be forged.
        let trusted = try #require(Self.upgrade(Self.evaluate(head, peer: "127.0.0.1")))
        #expect(trusted.remoteAddress == "10.0.0.1")
        #expect(trusted.remoteAddresses == ["203.0.113.7", "10.0.0.1", "127.0.0.1"])
        // A peer on the open internet cannot spoof its address.
        let untrusted = try #require(Self.upgrade(Self.evaluate(head, peer: "198.51.100.4")))
        #expect(untrusted.remoteAddress == "198.51.100.4")
        #expect(untrusted.remoteAddresses == ["203.0.113.7", "10.0.0.1", "198.51.100.4"])
        // A configured proxy is trusted, and loopback then no longer is.
        let configured = try #require(Self.upgrade(Self.evaluate(head, peer: "10.1.1.1") { $0.trustedProxies = ["10.1.1.1"] }))
        #expect(configured.remoteAddress == "10.0.0.1")
        // A chain of trusted proxies: read from the right past each of them.
        let chain = try #require(Self.upgrade(Self.evaluate(head, peer: "10.1.1.1") { $0.trustedProxies = ["10.1.1.1", "10.0.0.1"] }))
        #expect(chain.remoteAddress == "203.0.113.7")
        // Every address a trusted proxy: the leftmost.
        let allTrusted = try #require(Self.upgrade(Self.evaluate(head, peer: "10.1.1.1") { $0.trustedProxies = ["10.1.1.1", "10.0.0.1", "203.0.113.7"] }))
        #expect(allTrusted.remoteAddress == "203.0.113.7")
        let loopback = try #require(Self.upgrade(Self.evaluate(head, peer: "127.0.0.1") { $0.trustedProxies = ["10.1.1.1"] }))
        #expect(loopback.remoteAddress == "127.0.0.1")
        let ignored = try #require(Self.upgrade(Self.evaluate(head, peer: "127.0.0.1") { $0.ignoreXForwardedFor = true }))
        #expect(ignored.remoteAddress == "127.0.0.1")
        // A client behind a proxy that appends (nginx's $proxy_add_x_forwarded_for) cannot
        // choose its address by sending the header itself.
        let forged = try #require(Self.upgrade(Self.evaluate(Self.head([("X-Forwarded-For", "6.6.6.6, 198.51.100.9")]), peer: "127.0.0.1")))
        #expect(forged.remoteAddress == "198.51.100.9")
        // Without the header, the peer.
        let none = try #require(Self.upgrade(Self.evaluate(Self.head(), peer: "127.0.0.1")))
        #expect(none.remoteAddress == "127.0.0.1")
        #expect(none.remoteAddresses == ["127.0.0.1"])
    }

    // MARK: HTTP/2

    /// The fields of a valid extended CONNECT (RFC 8441), with `extra` fields replacing or
    /// adding to them and `without` removed.
    static func connect(_ extra: [(String, String)] = [], without: [String] = []) -> [(name: String, value: String)] {
        var fields: [(name: String, value: String)] = [
            (":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"), (":path", "/chat"),
            (":authority", "example.com"), ("sec-websocket-version", "13"), ("origin", "https://example.com"),
            ("sec-websocket-protocol", "Chat, Echo"),
        ]
        fields.removeAll { field in without.contains(field.name) || extra.contains { $0.0 == field.name } }
        fields += extra.map { (name: $0.0, value: $0.1) }
        return fields
    }

    static func evaluateHTTP2(
        _ fields: [(name: String, value: String)], endStream: Bool = false, peer: String = "192.0.2.1",
        _ configure: (inout WebSocketServer.Configuration) -> Void = { _ in }
    ) -> WebSocketServerHandshake.Verdict {
        var configuration = WebSocketServer.Configuration()
        configure(&configuration)
        return WebSocketServerHandshake.evaluateHTTP2(fields, endStream: endStream, peerAddress: peer, configuration: configuration)
    }

    @Test("HTTP/2: a good extended CONNECT is an upgrade, version 13, no key, Host from :authority")
    func http2Good() throws {
        let upgrade = try #require(Self.upgrade(Self.evaluateHTTP2(Self.connect())))
        #expect(upgrade.version == 13)
        #expect(upgrade.key == "")
        #expect(upgrade.head.version == HTTPVersion(major: 2, minor: 0))
        #expect(upgrade.head.method == .CONNECT)
        #expect(upgrade.head.uri == "/chat")
        #expect(upgrade.head.headers.first(name: "host") == "example.com")
        #expect(upgrade.head.headers.contains(name: ":path") == false)
        #expect(upgrade.origin == "https://example.com")
        #expect(upgrade.requestedProtocols == ["chat", "echo"])
    }

    @Test("HTTP/2: CONNECT without :protocol, or for another protocol: 501")
    func http2NoProtocol() throws {
        let plain = try #require(Self.refusal(Self.evaluateHTTP2(Self.connect(without: [":protocol"]))))
        #expect(plain.status == .notImplemented)
        let message = "Plain CONNECT (a TCP tunnel) is not supported; only :protocol websocket"
        #expect(plain.body == message)
        #expect(plain.error == WebSocketError(.handshakeFailed, message))
        let other = try #require(Self.refusal(Self.evaluateHTTP2(Self.connect([(":protocol", "webtransport")]))))
        #expect(other.status == .notImplemented)
        #expect(other.error.message == "Extended CONNECT for :protocol \"webtransport\" is not supported; only websocket")
        // The token is compared case-insensitively.
        #expect(Self.upgrade(Self.evaluateHTTP2(Self.connect([(":protocol", "WebSocket")]))) != nil)
    }

    @Test("HTTP/2: the other refusals")
    func http2Refusals() throws {
        let ended = try #require(Self.refusal(Self.evaluateHTTP2(Self.connect(), endStream: true)))
        #expect(ended.status == .badRequest)
        #expect(ended.error.message == "An extended CONNECT must leave its stream open")
        let noVersion = try #require(Self.refusal(Self.evaluateHTTP2(Self.connect(without: ["sec-websocket-version"]))))
        #expect(noVersion.status == .badRequest)
        #expect(noVersion.error.message == "Missing sec-websocket-version header")
        let version8 = try #require(Self.refusal(Self.evaluateHTTP2(Self.connect([("sec-websocket-version", "8")]))))
        #expect(version8.status == .badRequest)
        #expect(version8.headers == ["sec-websocket-version": "13"])
        #expect(version8.error.message == "Unsupported WebSocket version 8; 13 is supported over HTTP/2")
        let host = try #require(Self.refusal(Self.evaluateHTTP2(Self.connect([("host", "evil.example")]))))
        #expect(host.status == .badRequest)
        #expect(host.body == "Host differs from :authority")
        #expect(host.error.message == "Host \"evil.example\" differs from :authority \"example.com\"")
        let many = try #require(Self.refusal(Self.evaluateHTTP2(Self.connect()) { $0.maxHeaderCount = 2 }))
        #expect(many.status == .requestHeaderFieldsTooLarge)
        #expect(many.error.message == "Request has 3 headers; at most 2 are accepted")
    }

    @Test("HTTP/2: a method other than CONNECT is a plain request")
    func http2Plain() {
        let fields: [(name: String, value: String)] = [
            (":method", "GET"), (":scheme", "https"), (":path", "/index.html"), (":authority", "example.com"), ("accept", "*/*"),
        ]
        let expected = HTTPRequestHead(
            version: .init(major: 2, minor: 0), method: .GET, uri: "/index.html",
            headers: HTTPHeaders([("accept", "*/*"), ("host", "example.com")]))
        #expect(Self.evaluateHTTP2(fields) == .plainRequest(expected))
    }

    @Test("HTTP/2: X-Forwarded-For follows the same rule")
    func http2ForwardedFor() throws {
        let fields = Self.connect([("x-forwarded-for", "203.0.113.7")])
        #expect(try #require(Self.upgrade(Self.evaluateHTTP2(fields, peer: "::1"))).remoteAddress == "203.0.113.7")
        #expect(try #require(Self.upgrade(Self.evaluateHTTP2(fields, peer: "198.51.100.4"))).remoteAddress == "198.51.100.4")
    }
}

extension HTTPHeaders {
    fileprivate func adding(_ pairs: [(String, String)]) -> HTTPHeaders {
        var copy = self
        copy.add(contentsOf: pairs)
        return copy
    }
}
