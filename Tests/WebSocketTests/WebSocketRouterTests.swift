import NIOCore
import Testing

@testable import WebSocket

@Suite("WebSocketRouter")
struct WebSocketRouterTests {
    /// Connects with `protocols` to `path`; returns the accepted protocol, or the HTTP status.
    static func attempt(_ server: TestServer, _ path: String, _ protocols: [String]) async throws -> String {
        let raw = try await RawClient.connect(port: server.port)
        let headers = protocols.isEmpty ? [] : ["Sec-WebSocket-Protocol: " + protocols.joined(separator: ", ")]
        let response = try await raw.handshake(path: path, headers: headers)
        await raw.close()
        if response.hasPrefix("HTTP/1.1 101") {
            let line = response.split(separator: "\r\n").first { $0.lowercased().hasPrefix("sec-websocket-protocol:") }
            return "101 " + (line.map { String($0.split(separator: ":")[1].trimmingSpaces()) } ?? "-")
        }
        return String(response.split(separator: " ")[1])
    }

    @Test("the routing table: exact paths, *, regular expressions, protocols, first requested protocol first")
    func table() async throws {
        let hits = Collected<String>()
        let router = WebSocketRouter()
        func route(_ name: String) -> WebSocketRouter.Handler {
            { request in
                hits.append(name)
                _ = try? request.accept()
            }
        }
        try router.mount("/chat", protocol: "chat", handler: route("chat"))
        try router.mount("/chat", protocol: "Echo", handler: route("chat-echo"))
        try router.mount(.regex("^/rooms/[0-9]+$"), protocol: "*", handler: route("rooms"))
        try router.mount("*", protocol: "fallback", handler: route("any-fallback"))
        try router.mount("/plain", handler: route("plain"))
        let server = try await TestServer.start(setup: { router.attachServer($0) })
        defer { Task { await server.stop() } }

        #expect(try await Self.attempt(server, "/chat", ["chat"]) == "101 chat")
        #expect(try await Self.attempt(server, "/chat?x=1", ["ECHO", "chat"]) == "101 echo")
        #expect(try await Self.attempt(server, "/chat", ["nope", "chat"]) == "101 chat")
        #expect(try await Self.attempt(server, "/chat", ["nope"]) == "404")
        #expect(try await Self.attempt(server, "/rooms/42", ["whatever"]) == "101 whatever")
        #expect(try await Self.attempt(server, "/rooms/42", []) == "101 -")
        #expect(try await Self.attempt(server, "/rooms/x", ["whatever"]) == "404")
        #expect(try await Self.attempt(server, "/anything/else", ["fallback"]) == "101 fallback")
        #expect(try await Self.attempt(server, "/plain", []) == "101 -")
        #expect(try await Self.attempt(server, "/plain", ["chat"]) == "404")
        #expect(hits.all == ["chat", "chat-echo", "chat", "rooms", "rooms", "any-fallback", "plain"])

        #expect(router.unmount("/chat", protocol: "chat"))
        #expect(!router.unmount("/chat", protocol: "chat"))
        #expect(try await Self.attempt(server, "/chat", ["chat"]) == "404")
    }

    @Test("a second handler for the same path and protocol throws; a bad pattern throws")
    func duplicates() throws {
        let router = WebSocketRouter()
        try router.mount("/a", protocol: "p") { _ in }
        #expect(throws: WebSocketError.self) { try router.mount("/a", protocol: "P") { _ in } }
        try router.mount("/a", protocol: "q") { _ in }
        #expect(throws: WebSocketError.self) { try WebSocketRoutePath.regex("(unclosed") }
    }

    @Test("a router request exposes the request and accepts with the matched protocol")
    func routerRequest() async throws {
        let seen = Expectation<(String?, String, String?)>()
        let router = WebSocketRouter()
        try router.mount("*", protocol: "*") { request in
            seen.fulfill((request.protocol, request.resourceURL.path, request.origin))
            _ = try? request.accept(origin: request.origin)
        }
        let server = try await TestServer.start(setup: { router.attachServer($0) })
        defer { Task { await server.stop() } }
        let connection = try await WebSocketClient().connect(url: server.url + "x/y", protocols: ["Game"], origin: "http://o.example")
        let (proto, path, origin) = try await seen.value()
        #expect(proto == "game" && path == "/x/y" && origin == "http://o.example")
        #expect(connection.protocol == "game")
        try connection.close()
    }
}

@Suite("WebSocketRouter lifetime")
struct WebSocketRouterLifetimeTests {
    @Test("an attached router keeps routing after the caller drops its reference")
    func keptAlive() async throws {
        let server = try await TestServer.start(setup: { server in
            let router = WebSocketRouter(server: server)
            try? router.mount("*", protocol: "*") { request in
                guard let connection = try? request.accept() else { return }
                connection.onMessage { connection.send($0) }
            }
        })
        defer { Task { await server.stop() } }
        let client = try await WebSocketClient().connect(url: server.url, protocols: ["x"])
        try await client.write("routed")
        #expect(try await withTimeout(5) { try await client.messages.first { _ in true } } == .utf8("routed"))
        try client.close()
    }
}
