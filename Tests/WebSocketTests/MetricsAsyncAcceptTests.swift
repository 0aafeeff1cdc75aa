import Foundation
import MetricsTestKit
import NIOCore
import Testing

@testable import WebSocket

// Issue 34: with a metrics backend, `accept` called off the event loop (every async way of
// handling requests) once set the connection handler's metrics from the caller's thread through
// a getter that asserts it runs on the loop: a trap in debug builds (the tests' build) and a data
// race in release builds. Each way of accepting below runs in a debug build with a backend, and
// the echo and the counts show the connection worked and was counted.
@Suite("Metrics with every async accept path")
struct MetricsAsyncAcceptTests {
    /// The ways the DocC articles and README accept a request in async code.
    enum Path: String, CaseIterable, CustomTestStringConvertible {
        /// `server.run(handlingRequests:)`, `accept` then a `messages` loop.
        case runHandlingRequests
        /// `for await request in server.requests { try request.accept() … }`.
        case requestsSequence
        /// `for await request in server.requests { try request.accept { connection in … } }`.
        case requestsBlockAccept
        /// `onRequest` handing the request to a task that accepts it with a block.
        case taskBlockAccept
        /// The router's scoped mount (`mount(_:protocol:connectionHandler:)`).
        case routerScopedMount

        var testDescription: String { rawValue }
    }

    /// An echo loop for scoped handlers.
    static func echo(_ connection: WebSocketConnection) async throws {
        for try await message in connection.messages { try await connection.write(message) }
    }

    @Test("accept off the event loop with a metrics backend: the connection works and is counted", arguments: Path.allCases)
    func acceptWithMetrics(path: Path) async throws {
        let backend = TestMetrics()
        let server = WebSocketMetricsFactory.$override.withValue(backend) {
            WebSocketServer(listeners: path == .runHandlingRequests ? [.init(host: "127.0.0.1", port: 0)] : [])
        }
        #expect(server.metrics != nil)
        var tasks: [Task<Void, any Error>] = []
        var router: WebSocketRouter?
        switch path {
        case .runHandlingRequests:
            tasks.append(
                Task {
                    try await server.run { request in
                        let connection = try request.accept()
                        try await Self.echo(connection)
                    }
                })
        case .requestsSequence:
            let requests = server.requests
            tasks.append(
                Task {
                    for await request in requests {
                        let connection = try request.accept()
                        Task { try await Self.echo(connection) }
                    }
                })
        case .requestsBlockAccept:
            let requests = server.requests
            tasks.append(Task { for await request in requests { try request.accept { try await Self.echo($0) } } })
        case .taskBlockAccept:
            server.onRequest { request in Task { try request.accept { try await Self.echo($0) } } }
        case .routerScopedMount:
            let mounted = WebSocketRouter(server: server)
            try mounted.mount("*", connectionHandler: { try await Self.echo($0) })
            router = mounted
        }
        defer {
            for task in tasks { task.cancel() }
            router?.detachServer()
        }
        let port: Int
        if path == .runHandlingRequests {
            port = try await GracefulShutdownTests.port(of: server)
        } else {
            port = try await server.listen(host: "127.0.0.1", port: 0).port!
        }

        let client = try await WebSocketClient().connect(url: "ws://127.0.0.1:\(port)/")
        let echoed = Expectation<WebSocketMessage>()
        client.onMessage { echoed.fulfill($0) }
        client.sendUTF("hello")
        #expect(try await echoed.value(10, "the echo") == .utf8("hello"))
        try await client.close(code: .normal)
        await server.shutDown()
        typealias N = WebSocketMetricNames
        #expect(try backend.expectCounter(N.handshakesAccepted).totalValue == 1)
        #expect(try backend.expectCounter(N.connectionsOpened).totalValue == 1)
        #expect(try backend.expectCounter(N.messagesReceived, [("kind", "text")]).totalValue == 1)
    }
}
