import NIOCore
import NIOHTTP1
import Testing

@testable import WebSocket

@Suite("Opening handshake")
struct WebSocketHandshakeTests {
    @Test("Sec-WebSocket-Accept is computed as in RFC 6455 §1.3")
    func acceptValue() {
        #expect(WebSocketHandshake.acceptValue(forKey: "dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    }

    @Test("keys are 16 random bytes in base64, and only those are valid")
    func keys() {
        let a = WebSocketHandshake.makeKey()
        let b = WebSocketHandshake.makeKey()
        #expect(a != b)
        #expect(WebSocketHandshake.isValidKey(a))
        #expect(!WebSocketHandshake.isValidKey("c2hvcnQ="))
        #expect(!WebSocketHandshake.isValidKey("not base64 at all!!!!!!="))
        // The in-place check agrees with decoding on keys and near-keys: mutated valid keys,
        // wrong lengths, padding in the wrong place, non-ASCII.
        var random = SystemRandomNumberGenerator()
        let alphabet = Array("ABCXYZabcxyz0189+/=-_ .é".unicodeScalars)
        var valid = 0
        for _ in 0..<20_000 {
            var scalars = Array(WebSocketHandshake.makeKey().unicodeScalars)
            for _ in 0..<Int.random(in: 0...2, using: &random) {
                let index = Int.random(in: 0..<scalars.count, using: &random)
                switch Int.random(in: 0..<3, using: &random) {
                case 0: scalars[index] = alphabet.randomElement(using: &random)!
                case 1: scalars.insert(alphabet.randomElement(using: &random)!, at: index)
                default: scalars.remove(at: index)
                }
            }
            let key = String(String.UnicodeScalarView(scalars))
            let decoded = Base64.decode(key)?.count == 16
            #expect(WebSocketHandshake.isValidKey(key) == decoded, "\(key)")
            if decoded { valid += 1 }
        }
        #expect(valid > 1_000 && valid < 19_000)
    }

    @Test("SHA-1 matches known digests")
    func sha1() {
        let hex = { (bytes: [UInt8]) in bytes.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined() }
        #expect(hex(SHA1.hash(Array("abc".utf8))) == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(hex(SHA1.hash([])) == "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        #expect(hex(SHA1.hash(Array(String(repeating: "a", count: 1000).utf8))) == "291e9a6c66994949b57ba5e650361e98fc36b1ba")
        // Every length from 0 to 199 (each padding case: 55, 56, 63, 64, 119, 120 bytes...): the
        // SHA-1 of all 200 digests in a row, computed with Python's hashlib.
        var digests: [UInt8] = []
        for n in 0..<200 {
            digests += SHA1.hash((0..<n).map { UInt8(truncatingIfNeeded: $0 * 7 + 3) })
        }
        #expect(hex(SHA1.hash(digests)) == "8b12ee1d73de5287db7fc3d864d1c732ac699e94")
    }

    @Test("Upgrade and Connection tokens: any case, lists, spaces and tabs, whole tokens only")
    func headerTokens() {
        func contains(_ values: [String], _ token: String) -> Bool {
            var headers = HTTPHeaders()
            for value in values { headers.add(name: "Connection", value: value) }
            return WebSocketHandshake.headerContainsToken(headers, "connection", token)
        }
        #expect(contains(["Upgrade"], "upgrade"))
        #expect(contains(["keep-alive, Upgrade"], "upgrade"))
        #expect(contains(["keep-alive,UPGRADE"], "upgrade"))
        #expect(contains(["keep-alive", " \tupgrade\t "], "upgrade"))
        #expect(contains(["WebSocket"], "websocket"))
        #expect(contains([",, upgrade ,"], "upgrade"))
        #expect(!contains(["upgrades"], "upgrade"))
        #expect(!contains(["up grade"], "upgrade"))
        #expect(!contains(["keep-alive, upgrade-later"], "upgrade"))
        #expect(!contains(["keep-alive"], "upgrade"))
        #expect(!contains([""], "upgrade"))
        #expect(!contains([], "upgrade"))
    }

    @Test("base64 matches Python's for every remainder")
    func base64() {
        // Python: base64.b64encode(bytes(range(250, 250 + n % 6)) + bytes(range(n)))
        let expected = ["", "+gA=", "+vsAAQ==", "+vv8AAEC", "+vv8/QABAgM=", "+vv8/f4AAQIDBA==", "AAECAwQF", "+gABAgMEBQY="]
        for (n, value) in expected.enumerated() {
            let bytes = (250..<(250 + n % 6)).map { UInt8($0) } + (0..<n).map { UInt8($0) }
            #expect(Base64.encode(bytes) == value)
            #expect(Base64.decode(value) == bytes)
        }
    }

    /// A server that records requests and upgrade errors; accepts with the first protocol.
    static func recordingServer() async throws -> (TestServer, Expectation<WebSocketRequest>, Expectation<String>) {
        let requests = Expectation<WebSocketRequest>()
        let errors = Expectation<String>()
        let server = try await TestServer.start(setup: { server in
            server.onRequest { request in
                requests.fulfill(request)
                _ = try? request.accept(protocol: request.requestedProtocols.first, origin: request.origin)
            }
            server.onUpgradeError { errors.fulfill("\($0)") }
        })
        return (server, requests, errors)
    }

    @Test("version 13: 101 with the accept key, the chosen protocol and origin; request fields parsed")
    func version13() async throws {
        let (server, requests, _) = try await Self.recordingServer()
        defer { Task { await server.stop() } }
        let raw = try await RawClient.connect(port: server.port)
        let response = try await raw.handshake(
            path: "/chat/room?user=J%C3%BCrgen&x=1",
            headers: ["Origin: http://example.com", "Sec-WebSocket-Protocol: Chat, Superchat",
                      "Sec-WebSocket-Extensions: foo; a=1; b, bar", "Cookie: session=abc; theme=\"dark\""])
        #expect(response.hasPrefix("HTTP/1.1 101 Switching Protocols\r\n"))
        #expect(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"))
        #expect(response.contains("Sec-WebSocket-Protocol: chat\r\n"))
        #expect(response.contains("Origin: http://example.com\r\n"))
        let request = try await requests.value()
        #expect(request.webSocketVersion == 13)
        #expect(request.origin == "http://example.com")
        #expect(request.requestedProtocols == ["chat", "superchat"])
        #expect(request.resource == "/chat/room?user=J%C3%BCrgen&x=1")
        #expect(request.resourceURL.path == "/chat/room")
        #expect(request.resourceURL.queryItems.map(\.name) == ["user", "x"])
        #expect(request.resourceURL.queryItems.first?.value == "Jürgen")
        #expect(request.host == "127.0.0.1")
        #expect(request.requestedExtensions == [
            WebSocketExtension(name: "foo", parameters: [.init(name: "a", value: "1"), .init(name: "b")]),
            WebSocketExtension(name: "bar"),
        ])
        #expect(request.cookies.map(\.name) == ["session", "theme"])
        #expect(request.cookies.map(\.value) == ["abc", "dark"])
        #expect(request.remoteAddress == "127.0.0.1")
    }

    @Test("version 8 is accepted and takes its origin from Sec-WebSocket-Origin")
    func version8() async throws {
        let (server, requests, _) = try await Self.recordingServer()
        defer { Task { await server.stop() } }
        let raw = try await RawClient.connect(port: server.port)
        let response = try await raw.handshake(headers: ["Sec-WebSocket-Origin: http://old.example"], version: "8")
        #expect(response.hasPrefix("HTTP/1.1 101"))
        #expect(response.contains("Sec-WebSocket-Origin: http://old.example\r\n"))
        let request = try await requests.value()
        #expect(request.webSocketVersion == 8)
        #expect(request.origin == "http://old.example")
    }

    @Test("an unknown version gets 426 with the supported versions")
    func version99() async throws {
        let (server, _, errors) = try await Self.recordingServer()
        defer { Task { await server.stop() } }
        let raw = try await RawClient.connect(port: server.port)
        let response = try await raw.handshake(version: "99")
        #expect(response.hasPrefix("HTTP/1.1 426 Upgrade Required"))
        #expect(response.contains("Sec-WebSocket-Version: 13, 8\r\n"))
        #expect(try await errors.value().contains("99"))
        try await raw.waitForEOF()
    }

    @Test(
        "a malformed upgrade gets 400 and an upgradeError, and the server goes on",
        arguments: [
            ("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n", "Key"),
            ("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n", "Key"),
            ("POST / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n", "GET"),
            ("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", "Connection"),
            ("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", "Host"),
            ("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", "Version"),
            ("GARBAGE\r\n\r\n", "Malformed"),
        ])
    func malformed(request: String, mentions: String) async throws {
        let (server, _, errors) = try await Self.recordingServer()
        defer { Task { await server.stop() } }
        let raw = try await RawClient.connect(port: server.port)
        try await raw.send(request)
        let response = try await raw.readAllText()
        #expect(response.hasPrefix("HTTP/1.1 400 Bad Request"), "\(response)")
        #expect(try await errors.value().contains(mentions))
        // Nothing else is affected: a good client still connects.
        let client = try await WebSocketClient().connect(url: server.url)
        try client.close()
    }

    @Test("a plain HTTP request reaches the plain handler (404 by default)")
    func plainRequest() async throws {
        let server = try await TestServer.echo()
        defer { Task { await server.stop() } }
        let raw = try await RawClient.connect(port: server.port)
        try await raw.send("GET /index.html HTTP/1.1\r\nHost: h\r\n\r\n")
        #expect(try await raw.readAllText().hasPrefix("HTTP/1.1 404 Not Found"))
        server.server.setHTTPHandler { head in (.ok, ["X-Path": head.uri], "hello") }
        let again = try await RawClient.connect(port: server.port)
        try await again.send("GET /page HTTP/1.1\r\nHost: h\r\n\r\n")
        let response = try await again.readAllText()
        #expect(response.hasPrefix("HTTP/1.1 200 OK"))
        #expect(response.contains("X-Path: /page"))
        #expect(response.hasSuffix("hello"))
    }

    @Test("reject answers the status with X-WebSocket-Reject-Reason and extra headers, then closes")
    func reject() async throws {
        let rejected = Expectation<Bool>()
        let server = try await TestServer.start(setup: { server in
            server.onRequest { request in
                request.onRequestRejected { rejected.fulfill(true) }
                request.reject(status: 401, reason: "Who are you?", extraHeaders: ["WWW-Authenticate": "Basic"])
            }
        })
        defer { Task { await server.stop() } }
        let raw = try await RawClient.connect(port: server.port)
        try await raw.send("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        let response = try await raw.readAllText()
        #expect(response.hasPrefix("HTTP/1.1 401 Unauthorized"))
        #expect(response.contains("X-WebSocket-Reject-Reason: Who are you?\r\n"))
        #expect(response.contains("WWW-Authenticate: Basic\r\n"))
        #expect(try await rejected.value())
    }

    @Test("accept refuses a protocol the client did not request, bad cookies, and a second decision")
    func acceptChecks() async throws {
        let outcome = Expectation<[String]>()
        let server = try await TestServer.start(setup: { server in
            server.onRequest { request in
                var errors: [String] = []
                for attempt in [
                    { _ = try request.accept(protocol: "nope") },
                    { _ = try request.accept(cookies: [WebSocketCookie(name: "bad name", value: "1")]) },
                    { _ = try request.accept(cookies: [WebSocketCookie(name: "a", value: "x;y")]) },
                    { _ = try request.accept(cookies: [WebSocketCookie(name: "a", value: "1"), WebSocketCookie(name: "a", value: "2")]) },
                ] as [() throws -> Void] {
                    do { try attempt() } catch { errors.append("\(error)") }
                }
                _ = try? request.accept(protocol: "CHAT", cookies: [WebSocketCookie(name: "id", value: "42", path: "/", httpOnly: true)])
                do { _ = try request.accept() } catch { errors.append("\(error)") }
                outcome.fulfill(errors)
            }
        })
        defer { Task { await server.stop() } }
        let raw = try await RawClient.connect(port: server.port)
        let response = try await raw.handshake(headers: ["Sec-WebSocket-Protocol: chat"])
        let errors = try await outcome.value()
        #expect(errors.count == 5)
        #expect(errors[0].contains("not requested"))
        #expect(errors[1].contains("cookie name"))
        #expect(errors[2].contains("value"))
        #expect(errors[3].contains("Duplicate"))
        #expect(errors[4].contains("already"))
        #expect(response.contains("Sec-WebSocket-Protocol: chat\r\n"))
        #expect(response.contains("Set-Cookie: id=42; Path=/; HttpOnly\r\n"))
    }

    @Test("X-Forwarded-For gives remoteAddress when the peer is a trusted proxy, unless ignored")
    func forwardedFor() async throws {
        for ignore in [false, true] {
            let requests = Expectation<WebSocketRequest>()
            let server = try await TestServer.start({ $0.ignoreXForwardedFor = ignore }, setup: { server in
                server.onRequest { requests.fulfill($0); $0.reject() }
            })
            let raw = try await RawClient.connect(port: server.port)
            _ = try await raw.handshake(headers: ["X-Forwarded-For: 203.0.113.7, 10.0.0.1"])
            let request = try await requests.value()
            #expect(request.remoteAddress == (ignore ? "127.0.0.1" : "10.0.0.1"))
            #expect(request.remoteAddresses == ["203.0.113.7", "10.0.0.1", "127.0.0.1"])
            await server.stop()
        }
    }

    @Test("our client reports a non-101 answer and a bad accept key clearly")
    func clientFailures() async throws {
        let server = try await TestServer.start(setup: { server in
            server.onRequest { $0.reject(status: 403, reason: "go away") }
        })
        defer { Task { await server.stop() } }
        do {
            _ = try await WebSocketClient().connect(url: server.url)
            Issue.record("connect should fail")
        } catch let error as WebSocketError {
            #expect(error.code == .unexpectedStatus)
            #expect(error.message.contains("403"))
        }
        do {
            _ = try await WebSocketClient().connect(url: "ws://127.0.0.1:1/")
            Issue.record("connect should fail")
        } catch let error as WebSocketError {
            #expect(error.code == .connectionRefused)
        }
    }
}
