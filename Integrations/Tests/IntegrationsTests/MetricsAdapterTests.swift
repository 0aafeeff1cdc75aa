import Foundation
import Hummingbird
import Logging
import Metrics
import MetricsTestKit
import NIOCore
import Testing
import Vapor
import WebSocket
import WebSocketHummingbird
import WebSocketVapor

// Issue 34: with a metrics backend bootstrapped, `accept` off the event loop stopped the process
// (a trap in debug builds, the tests' build). The library's own tests run every async accept path
// with a backend; these run the two adapters' paths: requests that came through Hummingbird's or
// Vapor's HTTP server, accepted with a block from a task iterating `requests`, in a debug build.
@Suite("Adapters with a metrics backend", .serialized)
struct MetricsAdapterTests {
    /// One backend for this process (`MetricsSystem.bootstrap` may run once).
    static let backend: TestMetrics = {
        let backend = TestMetrics()
        MetricsSystem.bootstrap(backend)
        return backend
    }()

    @Test("a request through the adapter, accepted off the event loop with a block, echoes and is counted", arguments: Framework.allCases)
    func acceptOffTheLoop(framework: Framework) async throws {
        let backend = Self.backend
        typealias N = WebSocketMetricNames
        let acceptedBefore = (try? backend.expectCounter(N.handshakesAccepted).totalValue) ?? 0
        let server = WebSocketServer()
        let requests = server.requests
        let accepting = Task {
            for await request in requests {
                try request.accept { connection in
                    for try await message in connection.messages { try await connection.write(message) }
                }
            }
        }
        defer { accepting.cancel() }
        try await framework.withAdapter(server) { port in
            let client = try await WebSocketClient().connect(url: "ws://127.0.0.1:\(port)/metrics-echo")
            let echoed = Expectation<WebSocketMessage>()
            client.onMessage { echoed.fulfill($0) }
            client.sendUTF("hello")
            #expect(try await echoed.value(10, "the echo") == .utf8("hello"))
            try await client.close(code: .normal)
        }
        await server.shutDown()
        #expect(try backend.expectCounter(N.handshakesAccepted).totalValue == acceptedBefore + 1)
    }
}

extension Framework {
    /// Runs a bare app of the framework whose `/metrics-echo` upgrades go to `server`, calls
    /// `body` with its port, then stops it.
    func withAdapter(_ server: WebSocketServer, _ body: @Sendable (Int) async throws -> Void) async throws {
        switch self {
        case .hummingbird:
            var logger = Logger(label: "test-hummingbird-metrics")
            logger.logLevel = .warning
            let bound = Expectation<Int>()
            let application = Hummingbird.Application(
                router: Hummingbird.Router(),
                server: .http1WebSocket(server, upgradingPaths: ["/metrics-echo"]),
                configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                onServerRunning: { channel in bound.fulfill(channel.localAddress?.port ?? 0) },
                logger: logger)
            let running = Task { try await application.runService() }
            defer { running.cancel() }
            let port = try await bound.value(30, "Hummingbird listening")
            try await body(port)
            running.cancel()
            _ = try? await withTimeout(20, "Hummingbird stopping") { try await running.value }
        case .vapor:
            let app = try await Vapor.Application.make(.testing)
            app.logger.logLevel = .warning
            _ = app.webSocket("metrics-echo", server: server)
            do {
                try await app.server.start(address: .hostname("127.0.0.1", port: 0))
                guard let port = app.http.server.shared.localAddress?.port else { throw TestError("Vapor has no local address") }
                try await body(port)
            } catch {
                await app.server.shutdown()
                try await app.asyncShutdown()
                throw error
            }
            await app.server.shutdown()
            try await app.asyncShutdown()
        }
    }
}
