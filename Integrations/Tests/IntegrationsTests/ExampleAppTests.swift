import Foundation
import NIOCore
import Testing
import WebSocket

// The example apps over real sockets on 127.0.0.1: one port serves the framework's HTTP route
// and this library's WebSockets.
@Suite("Example apps", .serialized)
struct ExampleAppTests {
    @Test("the HTTP JSON route answers on the app's port", arguments: Framework.allCases)
    func httpRoute(_ framework: Framework) async throws {
        try await framework.withApp { port, _ in
            let response = try await rawHTTP(port: port, "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            #expect(statusCode(of: response) == 200)
            let status = try JSONDecoder().decode(StatusBody.self, from: Data(body(of: response).utf8))
            #expect(status.framework == framework.rawValue)
            #expect(status.webSocketRoutes == ["/echo", "/chat"])
        }
    }

    @Test("a WebSocket on the same port echoes with our client, and permessage-deflate negotiates", arguments: Framework.allCases)
    func echoWithOurClient(_ framework: Framework) async throws {
        try await framework.withApp { port, server in
            var configuration = WebSocketClient.Configuration()
            configuration.perMessageDeflate = PerMessageDeflate.Options()
            let client = WebSocketClient(configuration: configuration)
            let connection = try await withTimeout(15, "connecting") {
                try await client.connect(url: "ws://127.0.0.1:\(port)/echo", protocols: ["echo"])
            }
            #expect(connection.protocol == "echo")
            #expect(connection.extensions.map(\.name) == ["permessage-deflate"])
            let inbox = Expectation<WebSocketMessage>()
            connection.onMessage { inbox.fulfill($0) }
            let text = String(repeating: "héllo wörld 🌍 ", count: 200)
            try await connection.write(text)
            #expect(try await inbox.value(10, "the text echo") == .utf8(text))
            let bytes = ByteBuffer(bytes: (0..<70_000).map { UInt8(truncatingIfNeeded: $0 &* 31) })
            try await connection.write(bytes)
            #expect(try await inbox.value(10, "the binary echo") == .binary(bytes))
            #expect(server.connectionCount == 1)
            // The HTTP route still answers beside the open WebSocket, and sees it.
            let response = try await rawHTTP(port: port, "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            let status = try JSONDecoder().decode(StatusBody.self, from: Data(body(of: response).utf8))
            #expect(status.connections == 1)
            let closed = Expectation<Int>()
            connection.onClose { code, _ in closed.fulfill(code) }
            try connection.close()
            #expect(try await closed.value(10, "the close") == 1000)
        }
    }

    @Test("Python websockets echoes through the app's port, with permessage-deflate", arguments: Framework.allCases)
    func echoWithPython(_ framework: Framework) async throws {
        try await framework.withApp { port, _ in
            let text = try await Python.runClient(url: "ws://127.0.0.1:\(port)/echo", scenario: "text+deflate")
            #expect(text["texts"] as? Int == 3)
            #expect((text["extensions"] as? String)?.hasPrefix("permessage-deflate") == true)
            let binary = try await Python.runClient(url: "ws://127.0.0.1:\(port)/echo", scenario: "binary")
            #expect((binary["sizes"] as? [Int])?.last == 1 << 20)
        }
    }

    @Test("a page from a refused origin gets 403, and the port still serves", arguments: Framework.allCases)
    func refusedOrigin(_ framework: Framework) async throws {
        try await framework.withApp { port, server in
            let client = WebSocketClient()
            do {
                _ = try await withTimeout(15, "connecting") {
                    try await client.connect(url: "ws://127.0.0.1:\(port)/echo", origin: "https://evil.example")
                }
                Issue.record("a refused origin was accepted")
            } catch let error as WebSocketError {
                #expect(error.response?.statusCode == 403)
                #expect(error.response?.rejectReason == "Origin not allowed")
            }
            #expect(server.connectionCount == 0)
            let allowed = try await withTimeout(15, "connecting") {
                try await client.connect(url: "ws://127.0.0.1:\(port)/echo", origin: "http://localhost:3000")
            }
            #expect(allowed.connected)
            allowed.drop(reasonCode: 1000, skipCloseFrame: false)
        }
    }

    @Test("the chat route reaches every member (a topic)", arguments: Framework.allCases)
    func chat(_ framework: Framework) async throws {
        try await framework.withApp { port, server in
            let client = WebSocketClient()
            let alice = try await withTimeout(15, "alice") { try await client.connect(url: "ws://127.0.0.1:\(port)/chat") }
            let bob = try await withTimeout(15, "bob") { try await client.connect(url: "ws://127.0.0.1:\(port)/chat") }
            let aliceInbox = Expectation<WebSocketMessage>()
            let bobInbox = Expectation<WebSocketMessage>()
            alice.onMessage { aliceInbox.fulfill($0) }
            bob.onMessage { bobInbox.fulfill($0) }
            // Both subscribed once the server counts them.
            try await withTimeout(10, "two subscribers") {
                while server.subscriberCount(of: "chat") < 2 { try await Task.sleep(for: .milliseconds(10)) }
            }
            try await alice.write("hi bob")
            #expect(try await bobInbox.value(10, "bob's message") == .utf8("hi bob"))
            #expect(try await aliceInbox.value(10, "alice's own message") == .utf8("hi bob"))
            alice.drop(reasonCode: 1000, skipCloseFrame: false)
            bob.drop(reasonCode: 1000, skipCloseFrame: false)
        }
    }

    @Test("an upgrade to a path the app does not upgrade goes to the framework's router")
    func otherPathsGoToTheFramework() async throws {
        try await Framework.hummingbird.withApp { port, server in
            let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            // (Hummingbird keeps the connection open: read until the JSON body has ended.)
            let response = try await rawHTTP(port: port, "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\(upgrade)\r\n") {
                $0.contains("\r\n\r\n") && $0.hasSuffix("}")
            }
            #expect(statusCode(of: response) == 200)
            #expect(body(of: response).contains("Hummingbird"))
            #expect(server.connectionCount == 0)
        }
    }

    @Test("Hummingbird gets every byte: a POST with a body, then a keep-alive request on the same connection")
    func keepAliveAndBodiesGoToTheFramework() async throws {
        try await Framework.hummingbird.withApp { port, _ in
            let body = String(repeating: "x", count: 100_000)
            let request =
                "POST /status HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
                + "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            let response = try await rawHTTP(port: port, request)
            // The POST has no route (405 or 404); the GET after it on the same connection answers.
            let statuses = response.components(separatedBy: "HTTP/1.1 ").dropFirst().compactMap { Int($0.prefix(3)) }
            #expect(statuses.count == 2)
            #expect(statuses.last == 200)
            #expect(statuses.first.map { $0 == 404 || $0 == 405 } == true)
        }
    }

    @Test("a request without an upgrade to a Vapor WebSocket route gets 426")
    func vaporPlainRequestGets426() async throws {
        try await Framework.vapor.withApp { port, _ in
            let response = try await rawHTTP(port: port, "GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            #expect(statusCode(of: response) == 426)
        }
    }
}

struct StatusBody: Decodable {
    var framework: String
    var connections: Int
    var webSocketRoutes: [String]
}
