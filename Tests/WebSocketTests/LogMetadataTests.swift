import Logging
import NIOConcurrencyHelpers
import NIOCore
import Testing

@testable import WebSocket

/// A swift-log handler that keeps every line, with the logger's metadata and the line's own
/// merged, as a handler that prints them would.
struct CapturingLogHandler: LogHandler {
    struct Line: Sendable {
        var level: Logger.Level
        var message: String
        var metadata: [String: String]
    }

    final class Store: Sendable {
        private let box = NIOLockedValueBox<[Line]>([])
        func append(_ line: Line) { box.withLockedValue { $0.append(line) } }
        var lines: [Line] { box.withLockedValue { $0 } }
    }

    let store: Store
    var logLevel: Logger.Level = .trace
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var all = metadata
        if let extra = event.metadata { all.merge(extra) { $1 } }
        store.append(Line(level: event.level, message: "\(event.message)", metadata: all.mapValues { "\($0)" }))
    }

    static func logger(_ store: Store) -> Logger {
        Logger(label: "test") { _ in CapturingLogHandler(store: store) }
    }
}

// Item: every log line about a connection carries the same metadata keys (connection id, remote
// address, path, subprotocol), whichever part of the library logs it and at whatever level.
@Suite("Log metadata")
struct LogMetadataTests {
    struct HandlerFailure: Error {}

    /// The lines that are about no connection: the server's own.
    static let serverLines: Set<String> = ["WebSocket server listening", "WebSocket server shutting down gracefully"]

    @Test("the library's lines about a connection, and the application's through connection.logger, carry the four keys")
    func everyConnectionLineHasTheKeys() async throws {
        let store = CapturingLogHandler.Store()
        let server = WebSocketServer(configuration: .init(), logger: CapturingLogHandler.logger(store))
        let ids = Collected<(String, UInt64)>()
        server.onRequest { request in
            ids.append((request.resourceURL.path, request.id))
            if request.resourceURL.path == "/throw" {
                // A scoped handler that throws: the library logs it, and closes with 1011.
                _ = try? request.accept { _ in throw HandlerFailure() }
                return
            }
            guard let connection = try? request.accept(protocol: request.requestedProtocols.first) else { return }
            connection.logger.info("application line")
        }
        let port = try await server.listen(host: "127.0.0.1", port: 0).port!
        defer { Task { await server.shutDown() } }

        // A protocol error (a frame with a reserved opcode), on /chat?token=secret with a subprotocol.
        let failing = try await RawClient.connected(port: port, path: "/chat?token=secret", headers: ["Sec-WebSocket-Protocol: chat"])
        try await failing.send([0x83, 0x80, 1, 2, 3, 4])
        #expect(try await failing.readCloseCode() == 1002)
        await failing.close()

        // A scoped handler that throws.
        let thrower = try await WebSocketClient().connect(url: "ws://127.0.0.1:\(port)/throw")
        let closed = Expectation<Int>()
        thrower.onClose { code, _ in closed.fulfill(code) }
        #expect(try await closed.value(10, "the 1011 close") == 1011)

        // A client's attempt that fails (nobody listens on port 1), through a capturing logger too.
        let clientStore = CapturingLogHandler.Store()
        let client = WebSocketClient(logger: CapturingLogHandler.logger(clientStore))
        await #expect(throws: WebSocketError.self) { try await client.connect(url: "ws://127.0.0.1:1/nowhere?x=1") }

        // Wait (bounded) for the server's lines of both connections.
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            let messages = Set(store.lines.map(\.message))
            if messages.isSuperset(of: ["application line", "WebSocket protocol error", "WebSocket connection handler threw"]) { break }
            try await Task.sleep(for: .milliseconds(10))
        }

        let lines = store.lines.filter { !Self.serverLines.contains($0.message) } + clientStore.lines
        #expect(Set(lines.map(\.message)).isSuperset(of: [
            "application line", "WebSocket protocol error", "WebSocket connection handler threw", "WebSocket connect failed",
        ]))
        for line in lines {
            #expect(Set(line.metadata.keys).isSuperset(of: WebSocketLogMetadata.keys), "\(line.message): \(line.metadata)")
        }

        let chatID = try #require(ids.all.first { $0.0 == "/chat" }).1
        let throwID = try #require(ids.all.first { $0.0 == "/throw" }).1
        #expect(chatID != throwID)
        for message in ["application line", "WebSocket protocol error"] {
            let line = try #require(lines.first { $0.message == message })
            #expect(line.metadata[WebSocketLogMetadata.connectionID] == String(chatID))
            #expect(line.metadata[WebSocketLogMetadata.remoteAddress] == "127.0.0.1")
            #expect(line.metadata[WebSocketLogMetadata.path] == "/chat")  // no query: it may hold tokens
            #expect(line.metadata[WebSocketLogMetadata.protocol] == "chat")
        }
        let threw = try #require(lines.first { $0.message == "WebSocket connection handler threw" })
        #expect(threw.metadata[WebSocketLogMetadata.connectionID] == String(throwID))
        #expect(threw.metadata[WebSocketLogMetadata.path] == "/throw")
        #expect(threw.metadata[WebSocketLogMetadata.protocol] == "")
        let failed = try #require(clientStore.lines.first { $0.message == "WebSocket connect failed" })
        #expect(failed.metadata[WebSocketLogMetadata.connectionID] == "")
        #expect(failed.metadata[WebSocketLogMetadata.remoteAddress] == "127.0.0.1:1")
        #expect(failed.metadata[WebSocketLogMetadata.path] == "/nowhere")
    }

    @Test("a client's connection logs with the keys too, and ids are distinct")
    func clientConnectionLogger() async throws {
        let server = try await TestServer.start(setup: { server in
            server.onRequest { request in
                guard let connection = try? request.accept(protocol: request.requestedProtocols.first) else { return }
                connection.onMessage { connection.send($0) }
            }
        })
        defer { Task { await server.stop() } }
        let first = try await WebSocketClient().connect(url: "ws://127.0.0.1:\(server.port)/room/1?k=v", protocols: ["chat"])
        let second = try await WebSocketClient().connect(url: server.url)
        #expect(first.id != second.id)
        let logger = first.logger
        #expect(logger[metadataKey: WebSocketLogMetadata.connectionID] == .string(String(first.id)))
        #expect(logger[metadataKey: WebSocketLogMetadata.remoteAddress] == .string("127.0.0.1"))
        #expect(logger[metadataKey: WebSocketLogMetadata.path] == .string("/room/1"))
        #expect(logger[metadataKey: WebSocketLogMetadata.protocol] == .string("chat"))
        try first.close()
        try second.close()
    }
}
