import Foundation
import MetricsTestKit
import NIOCore
import Testing

@testable import WebSocket

// Metrics through swift-metrics: a server created with a backend records exact counts; without
// one (swift-metrics' no-op default) it keeps no metric objects at all. `ws serve
// --metrics-port` exposes them for Prometheus.
@Suite("Metrics", .serialized)
struct MetricsTests {
    @Test("without a metrics backend a server and its topics keep no metric objects")
    func offByDefault() {
        let server = WebSocketServer()
        #expect(server.metrics == nil)
    }

    @Test("a known workload gives exact counts: connections, handshakes, messages, bytes, deflate, failures, topics")
    func exactCounts() async throws {
        let backend = TestMetrics()
        let server = try await WebSocketMetricsFactory.$override.withValue(backend) {
            try await TestServer.start({ $0.perMessageDeflate = PerMessageDeflate.Options() }) { server in
                server.onRequest { request in
                    if request.resourceURL.path == "/refuse" { return request.reject(status: 403) }
                    guard let connection = try? request.accept() else { return }
                    _ = try? connection.subscribe(to: "room")
                    connection.onMessage { connection.send($0) }
                }
            }
        }
        defer { Task { await server.stop() } }
        #expect(server.server.metrics != nil)
        typealias N = WebSocketMetricNames
        let closed = Expectation<Int>()
        server.server.onClose { _, code, _ in closed.fulfill(code) }

        // Two clients (the second offers permessage-deflate), 3 text and 2 binary messages each.
        var deflating = WebSocketClient.Configuration()
        deflating.perMessageDeflate = PerMessageDeflate.Options()
        var connections: [WebSocketConnection] = []
        for configuration in [WebSocketClient.Configuration(), deflating] {
            let connection = try await WebSocketClient(configuration: configuration).connect(url: server.url)
            let inbox = Expectation<WebSocketMessage>()
            connection.onMessage { inbox.fulfill($0) }
            for text in ["one", "two", String(repeating: "three ", count: 100)] {
                connection.send(text)
                #expect(try await inbox.value(10, "an echo") == .utf8(text))
            }
            for size in [10, 1000] {
                let bytes = ByteBuffer(repeating: 7, count: size)
                connection.send(bytes)
                #expect(try await inbox.value(10, "an echo") == .binary(bytes))
            }
            connections.append(connection)
        }
        #expect(try server.server.publish("news", to: "room") == 2)
        #expect(try backend.expectMeter(WebSocketMetricNames.topicSubscriptions).lastValue == 2)
        #expect(try server.server.publish("nobody", to: "empty") == 0)

        // One refused handshake, one protocol failure (a frame with a reserved opcode: 1002).
        let refused = try await RawClient.connect(port: server.port)
        #expect(try await refused.handshake(path: "/refuse").hasPrefix("HTTP/1.1 403"))
        let failing = try await RawClient.connected(port: server.port)
        try await failing.send([0x83, 0x80, 1, 2, 3, 4])
        #expect(try await failing.readCloseCode() == 1002)

        // Close the others with 1000 and 4000, and wait for the server to count them.
        try connections[0].close()
        try connections[1].close(reasonCode: 4000, description: "done")
        var codes: [Int] = []
        while codes.count < 3 { codes.append(try await closed.value(10, "three closes")) }
        // The raw client's connection (failed with 1002) closes when its socket does.
        await failing.close()

        #expect(try backend.expectCounter(N.connectionsOpened).totalValue == 3)
        #expect(try backend.expectMeter(N.connectionsOpen).lastValue == 0)
        #expect(try backend.expectCounter(N.connectionsClosed, [("code_class", "normal")]).totalValue == 1)
        #expect(try backend.expectCounter(N.connectionsClosed, [("code_class", "application")]).totalValue == 1)
        #expect(try backend.expectCounter(N.connectionsClosed, [("code_class", "error")]).totalValue == 1)
        #expect(try backend.expectCounter(N.handshakesAccepted).totalValue == 3)
        #expect(try backend.expectCounter(N.handshakesRefused, [("status", "403")]).totalValue == 1)
        #expect(try backend.expectTimer(N.handshakeDuration, [("result", "accepted")]).values.count == 3)
        #expect(try backend.expectTimer(N.handshakeDuration, [("result", "refused")]).values.count == 1)
        let textBytes = 3 + 3 + 600
        #expect(try backend.expectCounter(N.messagesReceived, [("kind", "text")]).totalValue == 6)
        #expect(try backend.expectCounter(N.bytesReceived, [("kind", "text")]).totalValue == Int64(2 * textBytes))
        #expect(try backend.expectCounter(N.messagesReceived, [("kind", "binary")]).totalValue == 4)
        #expect(try backend.expectCounter(N.bytesReceived, [("kind", "binary")]).totalValue == 2 * 1010)
        #expect(try backend.expectCounter(N.messagesSent, [("kind", "text")]).totalValue == 6)
        #expect(try backend.expectCounter(N.bytesSent, [("kind", "text")]).totalValue == Int64(2 * textBytes))
        #expect(try backend.expectCounter(N.messagesSent, [("kind", "binary")]).totalValue == 4)
        #expect(try backend.expectCounter(N.protocolFailures, [("code", "1002")]).totalValue == 1)
        // Only the second client compressed: what it sent and what the server sent back.
        let deflatedBefore = try backend.expectCounter(N.deflateBytes, [("direction", "sent"), ("stage", "uncompressed")]).totalValue
        let deflatedAfter = try backend.expectCounter(N.deflateBytes, [("direction", "sent"), ("stage", "compressed")]).totalValue
        let inflatedAfter = try backend.expectCounter(N.deflateBytes, [("direction", "received"), ("stage", "uncompressed")]).totalValue
        #expect(deflatedBefore > 0 && deflatedAfter > 0 && deflatedAfter < deflatedBefore)
        #expect(inflatedAfter > 0)
        #expect(try backend.expectCounter(N.topicPublishes).totalValue == 2)
        #expect(try backend.expectMeter(N.topicSubscriptions).lastValue == 0)
    }

    @Test("close code classes")
    func closeCodeClasses() {
        #expect([1000, 1001, 1002, 1005, 1006, 1011, 3000, 4999, 5000].map(WebSocketMetricNames.closeCodeClass) == [
            "normal", "going_away", "error", "abnormal", "abnormal", "error", "application", "application", "other",
        ])
    }

    @Test("ws serve --metrics-port: Prometheus text after N connections, M messages and one refused handshake", .timeLimit(.minutes(1)))
    func wsServePrometheus() async throws {
        let ws = BrowserTests.wsBinary
        guard FileManager.default.isExecutableFile(atPath: ws) else {
            throw InteropError("the ws executable is not built at \(ws); run `swift build` first")
        }
        let process = try PeerProcess(
            name: "ws serve", executable: ws, arguments: ["serve", "--port", "0", "--metrics-port", "0", "--quiet"])
        defer { process.killByPID() }
        let metricsLine = try await process.line(20, "the metrics line") { $0.hasPrefix("ws serve: metrics on") }
        let listening = try await process.line(20, "the listening line") { $0.hasPrefix("ws serve: listening on") }
        func port(in line: String) throws -> Int {
            guard let port = line.split(separator: ":").compactMap({ Int($0.prefix(while: \.isNumber)) }).last else {
                throw InteropError("no port in \(line)")
            }
            return port
        }
        let metricsPort = try port(in: metricsLine)
        let wsPort = try port(in: listening)

        let n = 3, m = 5
        let message = "metrics!"  // 8 bytes
        for _ in 0..<n {
            let connection = try await WebSocketClient().connect(url: "ws://127.0.0.1:\(wsPort)/echo")
            let inbox = Expectation<WebSocketMessage>()
            connection.onMessage { inbox.fulfill($0) }
            for _ in 0..<m {
                connection.send(message)
                _ = try await inbox.value(10, "an echo")
            }
            let closed = Expectation<Int>()
            connection.onClose { code, _ in closed.fulfill(code) }
            try connection.close()
            _ = try await closed.value(10, "the close")
        }
        let refused = try await RawClient.connect(port: wsPort)
        #expect(try await refused.handshake(path: "/echo", version: "12").hasPrefix("HTTP/1.1 426"))

        // Scrape until the server has counted every close (each closes on its own schedule).
        var text = ""
        let deadline = ContinuousClock.now + .seconds(10)
        repeat {
            let scrape = try await RawClient.connect(port: metricsPort)
            try await scrape.send("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            text = try await scrape.readAllText()
            if Self.sample(text, "websocket_connections_closed_total{code_class=\"normal\"}") == "\(n)" { break }
            try await Task.sleep(for: .milliseconds(20))
        } while ContinuousClock.now < deadline
        #expect(text.hasPrefix("HTTP/1.1 200"))
        #expect(text.contains("Content-Type: text/plain; version=0.0.4"))
        let expected: [(String, String)] = [
            ("websocket_connections_opened_total", "\(n)"),
            ("websocket_connections_open", "0.0"),  // a gauge: a Double
            ("websocket_connections_closed_total{code_class=\"normal\"}", "\(n)"),
            ("websocket_connections_closed_total{code_class=\"abnormal\"}", "0"),
            ("websocket_handshakes_accepted_total", "\(n)"),
            ("websocket_handshakes_refused_total{status=\"426\"}", "1"),
            ("websocket_handshake_duration_seconds_count{result=\"accepted\"}", "\(n)"),
            ("websocket_messages_received_total{kind=\"text\"}", "\(n * m)"),
            ("websocket_received_bytes_total{kind=\"text\"}", "\(n * m * 8)"),
            ("websocket_messages_sent_total{kind=\"text\"}", "\(n * m)"),
            ("websocket_sent_bytes_total{kind=\"text\"}", "\(n * m * 8)"),
            ("websocket_messages_received_total{kind=\"binary\"}", "0"),
            ("websocket_protocol_failures_total", "absent"),
        ]
        for (name, value) in expected {
            if value == "absent" {
                #expect(!text.contains("\n\(name){"), "\(name) should have no samples")
            } else {
                #expect(Self.sample(text, name) == value, "\(name)")
            }
        }
    }

    /// The value of the sample `name` (with its labels) in a Prometheus text exposition.
    static func sample(_ text: String, _ name: String) -> String? {
        for line in text.split(whereSeparator: \.isNewline) where line.hasPrefix(name + " ") {
            return String(line.dropFirst(name.count + 1))
        }
        return nil
    }
}
