import NIOConcurrencyHelpers
import NIOCore
import Testing

import WebSocket

/// What the reconnect examples (README, "A client"; the client reference) do, checked as a
/// behaviour: a node shuts down, the client fails over to the next and subscribes again. The
/// examples themselves are compiled as written, from the Markdown, by ``SnippetTests``, which also
/// runs the README's server-and-client program; what is here are the examples with this machine's
/// URLs and a short first delay, to run them against real nodes.
@Suite("README examples")
struct ReadmeExamplesTests {
    /// A node of a cluster as the reconnect examples expect one: a `subscribe <topic>` message
    /// subscribes the connection to that topic.
    private func startNode() async throws -> (WebSocketServer, Int) {
        let server = WebSocketServer()
        server.onRequest { request in
            guard let connection = try? request.accept() else { return }
            connection.onMessage { message in
                if let text = message.utf8Data, text.hasPrefix("subscribe ") {
                    _ = try? connection.subscribe(to: String(text.dropFirst("subscribe ".count)))
                }
            }
        }
        let address = try await server.listen(host: "127.0.0.1", port: 0)
        return (server, address.port!)
    }

    @Test("the reconnect example (README, client reference) fails over to the next node and subscribes again")
    func reconnectExample() async throws {
        let (nodeA, portA) = try await startNode()
        let (nodeB, portB) = try await startNode()
        defer { Task { await nodeA.shutDown(); await nodeB.shutDown() } }
        let printed = Expectation<String>()
        @Sendable func print(_ value: Any) { printed.fulfill("\(value)") }

        // -- reconnect example (node URLs on this machine, a short first delay) --
        var configuration = WebSocketClient.Configuration()
        configuration.reconnect = WebSocketClient.ReconnectPolicy(
            urls: ["ws://127.0.0.1:\(portB)/feed"],   // tried in turn after node-a
            initialDelay: .milliseconds(10), maxDelay: .seconds(30), jitter: 0.5, maxAttempts: nil)
        let client = WebSocketClient(configuration: configuration)
        client.onConnect { connection in                                  // every connection, every node
            connection.onMessage { message in print(message.utf8Data ?? "binary") }
            connection.sendUTF("subscribe prices")
        }
        client.onReconnecting { attempt in print("attempt \(attempt.number) to \(attempt.url) in \(attempt.delay): \(attempt.cause)") }
        client.onConnectFailed { error in print(error) }                  // .reconnectFailed once it gives up
        client.connect("ws://127.0.0.1:\(portA)/feed")
        // -- end of the example --
        defer { client.stopReconnecting() }

        try await waitUntil(10, "the subscription on node A") { nodeA.subscriberCount(of: "prices") == 1 }
        await nodeA.shutDown()
        let attempt = try await printed.value(10, "the reconnecting event")
        #expect(attempt.hasPrefix("attempt 1 to ws://127.0.0.1:\(portB)/feed in "), "\(attempt)")
        #expect(attempt.hasSuffix("the connection closed with 1001 (Server shutting down)") || attempt.contains("1001"), "\(attempt)")
        try await waitUntil(10, "the subscription on node B") { nodeB.subscriberCount(of: "prices") == 1 }
        #expect(try nodeB.publish("price 42", to: "prices") == 1)
        #expect(try await printed.value(10, "the message from node B") == "price 42")
    }

    @Test("the async reconnect example (client reference) reads each connection's messages")
    func asyncReconnectExample() async throws {
        let (node, port) = try await startNode()
        defer { Task { await node.shutDown() } }
        let printed = Expectation<String>()
        @Sendable func print(_ value: Any) { printed.fulfill("\(value)") }
        let client = WebSocketClient()
        let url = "ws://127.0.0.1:\(port)/feed"
        let publisher = Task {
            try await waitUntil(10, "the subscription") { node.subscriberCount(of: "prices") == 1 }
            _ = try node.publish("price 42", to: "prices")
            node.closeAllConnections()  // a normal close: the loop ends
        }
        try await withTimeout(10, "the example's loop") {
            // -- async reconnect example --
            for try await connection in client.connections(to: url) {
                do {
                    try await connection.write("subscribe prices")  // again on every node
                    for try await message in connection.messages { print(message) }
                } catch {
                    print("lost \(connection.remoteAddress): \(error)")  // the next connection follows
                }
            }
            // -- end of the example --
        }
        try await publisher.value
        let lines = printed.pending()
        #expect(lines.count == 1 && lines.first?.contains("price 42") == true, "\(lines)")
    }
}
