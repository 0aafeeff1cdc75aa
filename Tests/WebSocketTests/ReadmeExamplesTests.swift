import NIOConcurrencyHelpers
import NIOCore
import Testing

import WebSocket

/// The README's examples, as written there (port 0 instead of 8080), run against each other, so
/// the documentation cannot drift from the code.
@Suite("README examples")
struct ReadmeExamplesTests {
    @Test("the server and client examples work together")
    func serverAndClient() async throws {
        let closes = Expectation<Int>()
        // -- server example --
        var configuration = WebSocketServer.Configuration()
        configuration.maxReceivedMessageSize = 4 << 20
        let server = WebSocketServer(configuration: configuration)
        server.onRequest { request in
            guard request.origin == nil || request.origin == "https://example.com" else {
                request.reject(status: 403, reason: "Origin not allowed")
                return
            }
            guard let connection = try? request.accept(protocol: request.requestedProtocols.first) else { return }
            connection.onMessage { message in
                connection.send(message)
            }
            connection.onClose { code, description in
                closes.fulfill(code)
            }
        }
        let address = try await server.listen(host: "127.0.0.1", port: 0)
        defer { Task { await server.shutDown() } }

        // -- client example --
        let received = try await withTimeout(10) {
            let client = WebSocketClient()
            let connection = try await client.connect(url: "ws://127.0.0.1:\(address.port!)/", protocols: ["echo-protocol"])
            try await connection.write("Hello, server")
            try await connection.write(ByteBuffer(bytes: [1, 2, 3]))
            var messages: [WebSocketMessage] = []
            var count = 0
            for try await message in connection.messages {
                messages.append(message)
                count += 1
                if count == 2 { try await connection.close(code: .normal) }
            }
            #expect(connection.protocol == "echo-protocol")
            return messages
        }
        #expect(received == [.utf8("Hello, server"), .binary(ByteBuffer(bytes: [1, 2, 3]))])
        #expect(try await closes.value() == 1000)
    }

    @Test("the async server example echoes until the client closes")
    func asyncServer() async throws {
        let server = WebSocketServer()
        // -- async server example --
        server.onRequest { request in
            _ = try? request.accept(protocol: request.requestedProtocols.first) { connection in
                for try await message in connection.messages {
                    try await connection.send(message)
                }
            }
        }
        let address = try await server.listen(host: "127.0.0.1", port: 0)
        defer { Task { await server.shutDown() } }

        let received = try await withTimeout(10) {
            let client = WebSocketClient()
            let connection = try await client.connect(url: "ws://127.0.0.1:\(address.port!)/", protocols: ["echo-protocol"])
            try await connection.sendUTF("Hello, server")
            var messages: [WebSocketMessage] = []
            for try await message in connection.messages {
                messages.append(message)
                try connection.close()
            }
            return messages
        }
        #expect(received == [.utf8("Hello, server")])
    }
}
