import NIOConcurrencyHelpers
import NIOCore
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@testable import WebSocket

/// A node of a cluster, for these tests: accepts every request, subscribes a connection to the
/// topic a `subscribe <topic>` message names, and keeps the server side of its connections.
private struct Node {
    let server: TestServer
    let connections: Collected<WebSocketConnection>
    var url: String { server.url }

    /// `refuse` answers a request itself (true) or lets the node accept it (false).
    static func start(refuse: @escaping @Sendable (WebSocketRequest) -> Bool = { _ in false }) async throws -> Node {
        let connections = Collected<WebSocketConnection>()
        let server = try await TestServer.start(setup: { server in
            server.onRequest { request in
                guard !refuse(request), let connection = try? request.accept() else { return }
                connections.append(connection)
                connection.onMessage { message in
                    guard let text = message.utf8Data, text.hasPrefix("subscribe ") else { return }
                    _ = try? connection.subscribe(to: String(text.dropFirst("subscribe ".count)))
                }
            }
        })
        return Node(server: server, connections: connections)
    }

    /// Waits until `count` connections are subscribed to `topic`.
    func waitForSubscribers(_ count: Int, of topic: String = "prices") async throws {
        try await waitUntil(10, "\(count) subscriber(s) of \(topic) on \(url)") { server.server.subscriberCount(of: topic) == count }
    }

    func stop() async { await server.stop() }
}

/// A URL where nothing listens, for as long as the value lives: a TCP socket bound to a port of
/// 127.0.0.1 and not listening, so connections to it are refused and no other test's server can
/// take the port meanwhile.
private final class DeadPort: Sendable {
    let descriptor: Int32
    let url: String

    init() throws {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.descriptor = descriptor
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                bind(descriptor, address, length) == 0 && getsockname(descriptor, address, &length) == 0
            }
        }
        guard descriptor >= 0, bound else {
            let error = errno
            if descriptor >= 0 { close(descriptor) }
            throw WebSocketError(.connectionFailed, "cannot reserve a port: errno \(error)")
        }
        url = "ws://127.0.0.1:\(UInt16(bigEndian: address.sin_port))/"
    }

    deinit { close(descriptor) }
}

/// What a reconnecting client reported, and the messages its connections received.
private final class ClientEvents: Sendable {
    let connects = Expectation<WebSocketConnection>()
    let reconnecting = Expectation<WebSocketClient.ReconnectAttempt>()
    let reconnected = Expectation<WebSocketConnection>()
    let failures = Expectation<WebSocketError>()
    let messages = Expectation<String>()
    let closes = Expectation<Int>()

    /// Registers for every event; in `connect`, subscribes the new connection to `prices`, as
    /// an application resubscribes.
    init(_ client: WebSocketClient) {
        client.onConnect { [self] connection in
            connection.onMessage { [self] in messages.fulfill($0.utf8Data ?? "binary") }
            connection.onClose { [self] code, _ in closes.fulfill(code) }
            connection.sendUTF("subscribe prices")
            connects.fulfill(connection)
        }
        client.onReconnecting { [self] in reconnecting.fulfill($0) }
        client.onReconnected { [self] in reconnected.fulfill($0) }
        client.onConnectFailed { [self] in failures.fulfill($0) }
    }
}

/// A client that reconnects quickly (10 ms, no jitter) to `urls` after the first.
private func reconnectingClient(urls: [String], maxAttempts: Int? = nil, retriesFirstConnection: Bool = true) -> WebSocketClient {
    var configuration = WebSocketClient.Configuration()
    configuration.reconnect = WebSocketClient.ReconnectPolicy(
        urls: urls, initialDelay: .milliseconds(10), maxDelay: .milliseconds(50), jitter: 0, maxAttempts: maxAttempts,
        retriesFirstConnection: retriesFirstConnection)
    return WebSocketClient(configuration: configuration)
}

@Suite("Reconnecting client")
struct ReconnectTests {
    @Test("a node's connection dies (1006): the client reconnects to the next URL, onConnect resubscribes, a later publication arrives")
    func failoverAfterAbruptClose() async throws {
        let a = try await Node.start()
        let b = try await Node.start()
        defer { Task { await a.stop(); await b.stop() } }
        let client = reconnectingClient(urls: [b.url])
        defer { client.stopReconnecting() }
        let events = ClientEvents(client)

        client.connect(a.url)
        let first = try await events.connects.value(10, "the first connection")
        try await a.waitForSubscribers(1)
        #expect(try a.server.server.publish("before", to: "prices") == 1)
        #expect(try await events.messages.value(10, "the message from A") == "before")

        // The node dies: its socket closes without a close frame.
        let serverSide = try #require(a.connections.all.first)
        serverSide.socket.close(promise: nil)

        let attempt = try await events.reconnecting.value(10, "reconnecting")
        #expect(attempt.number == 1)
        #expect(attempt.url == b.url)
        #expect(attempt.delay == .milliseconds(10))
        #expect(attempt.cause == .closed(code: 1006, description: WebSocketCloseReason.description(for: 1006)))
        #expect(try await events.closes.value(10, "the first connection's close") == 1006)
        let second = try await events.connects.value(10, "onConnect again")
        #expect(second !== first)
        #expect(try await events.reconnected.value(10, "reconnected") === second)
        try await b.waitForSubscribers(1)
        #expect(try b.server.server.publish("after", to: "prices") == 1)
        #expect(try await events.messages.value(10, "the message from B") == "after")
        #expect(events.failures.pending().isEmpty)
        try await second.close(code: .normal)
    }

    @Test("a node's connection is reset (RST, as a killed process's can be): 1006, and the client reconnects")
    func failoverAfterReset() async throws {
        let a = try await Node.start()
        defer { Task { await a.stop() } }
        let client = reconnectingClient(urls: [])
        defer { client.stopReconnecting() }
        let events = ClientEvents(client)
        client.connect(a.url)
        _ = try await events.connects.value(10, "the first connection")
        try await a.waitForSubscribers(1)

        let serverSide = try #require(a.connections.all.first)
        try await resetOnClose(serverSide.socket)
        try await serverSide.socket.close()

        let attempt = try await events.reconnecting.value(10, "reconnecting after the reset")
        #expect(attempt.url == a.url)
        guard case .closed(1006, _) = attempt.cause else {
            Issue.record("expected a 1006 close, got \(attempt.cause)")
            return
        }
        let connection = try await events.reconnected.value(10, "reconnected")
        try await waitUntil(10, "the new subscription") { a.server.server.subscriberCount(of: "prices") == 1 && a.connections.all.count == 2 }
        #expect(try a.server.server.publish("after", to: "prices") == 1)
        #expect(try await events.messages.value(10, "the message after the reset") == "after")
        try await connection.close(code: .normal)
    }

    @Test("the server shuts down (1001): the client goes to the next node; attempts that fail go round the list")
    func failoverAfterShutdown() async throws {
        let a = try await Node.start()
        let b = try await Node.start()
        defer { Task { await b.stop() } }
        let deadPort = try DeadPort()
        let dead = deadPort.url
        let client = reconnectingClient(urls: [dead, b.url])
        defer { client.stopReconnecting() }
        let events = ClientEvents(client)

        client.connect(a.url)
        _ = try await events.connects.value(10, "the first connection")
        try await a.waitForSubscribers(1)
        await a.stop()

        let first = try await events.reconnecting.value(10, "reconnecting after the shutdown")
        #expect(first.number == 1 && first.url == dead && first.cause == .closed(code: 1001, description: first.cause.closeDescription))
        let second = try await events.reconnecting.value(10, "reconnecting after the refused attempt")
        #expect(second.number == 2 && second.url == b.url && second.delay == .milliseconds(20))
        guard case .failed(let error) = second.cause else {
            Issue.record("expected a failed attempt, got \(second.cause)")
            return
        }
        #expect(error.code == .connectionRefused)
        let connection = try await events.reconnected.value(10, "reconnected to B")
        try await b.waitForSubscribers(1)
        #expect(try b.server.server.publish("after", to: "prices") == 1)
        #expect(try await events.messages.value(10, "the message from B") == "after")
        #expect(events.failures.pending().isEmpty)
        try await connection.close(code: .normal)
    }

    @Test("a normal close (1000) by the server does not reconnect")
    func normalCloseDoesNotReconnect() async throws {
        let a = try await Node.start()
        defer { Task { await a.stop() } }
        let client = reconnectingClient(urls: [])
        let events = ClientEvents(client)
        client.connect(a.url)
        _ = try await events.connects.value(10, "the connection")
        try await a.waitForSubscribers(1)
        try #require(a.connections.all.first).close(reasonCode: .normal)
        #expect(try await events.closes.value(10, "the close") == 1000)
        try await barrierAllLoops()
        #expect(events.reconnecting.pending().isEmpty)
        #expect(events.failures.pending().isEmpty)
        #expect(client.reconnections.withLockedValue { $0.isEmpty })
        #expect(a.connections.all.count == 1)
    }

    @Test("the application's own close does not reconnect, even with a code that would (1001)")
    func applicationCloseDoesNotReconnect() async throws {
        let a = try await Node.start()
        defer { Task { await a.stop() } }
        let client = reconnectingClient(urls: [])
        let events = ClientEvents(client)
        let connection = try await withTimeout(10) { try await client.connect(url: a.url) }
        _ = try await events.connects.value(10, "the connect event")
        let result = try await withTimeout(10) { try await connection.close(code: .goingAway) }
        #expect(result.code == .goingAway)
        try await barrierAllLoops()
        #expect(events.reconnecting.pending().isEmpty)
        #expect(client.reconnections.withLockedValue { $0.isEmpty })
        #expect(a.connections.all.count == 1)
    }

    @Test("stopReconnecting() while waiting to reconnect: no attempt, the client forgets the reconnection")
    func stopWhileWaiting() async throws {
        let a = try await Node.start()
        let b = try await Node.start()
        defer { Task { await a.stop(); await b.stop() } }
        var configuration = WebSocketClient.Configuration()
        // A delay no test waits for: the attempt can only happen if stopping fails.
        configuration.reconnect = WebSocketClient.ReconnectPolicy(urls: [b.url], initialDelay: .seconds(600), maxDelay: .seconds(600))
        let client = WebSocketClient(configuration: configuration)
        let events = ClientEvents(client)
        client.connect(a.url)
        _ = try await events.connects.value(10, "the connection")
        try await waitUntil(10, "node a's connection") { !a.connections.all.isEmpty }
        try #require(a.connections.all.first).socket.close(promise: nil)
        let attempt = try await events.reconnecting.value(10, "reconnecting")
        #expect(attempt.delay <= .seconds(600) && attempt.delay >= .seconds(300))
        client.stopReconnecting()
        #expect(client.reconnections.withLockedValue { $0.isEmpty })
        try await barrierAllLoops()
        #expect(b.connections.all.isEmpty)
        #expect(events.failures.pending().isEmpty)
    }

    @Test("maxAttempts failed attempts (refused, 503, refused): connectFailed with .reconnectFailed naming the attempts, URLs and last error")
    func maxAttemptsExhausted() async throws {
        let refusing = NIOLockedValueBox(false)
        let a = try await Node.start { request in
            guard refusing.withLockedValue({ $0 }) else { return false }
            request.reject(status: 503, reason: "Draining")
            return true
        }
        defer { Task { await a.stop() } }
        let deadPort = try DeadPort()
        let dead = deadPort.url
        let client = reconnectingClient(urls: [dead], maxAttempts: 3)
        let events = ClientEvents(client)
        client.connect(a.url)
        _ = try await events.connects.value(10, "the connection")
        try await a.waitForSubscribers(1)
        refusing.withLockedValue { $0 = true }
        try #require(a.connections.all.first).socket.close(promise: nil)

        var attempts: [WebSocketClient.ReconnectAttempt] = []
        for number in 1...3 {
            let attempt = try await events.reconnecting.value(10, "reconnecting \(number)")
            #expect(attempt.number == number)
            attempts.append(attempt)
        }
        #expect(attempts.map(\.url) == [dead, a.url, dead])
        #expect(attempts.map(\.delay) == [10, 20, 40].map { Duration.milliseconds($0) })
        guard case .failed(let refusal) = attempts[2].cause else {
            Issue.record("expected a failed attempt, got \(attempts[2].cause)")
            return
        }
        #expect(refusal.code == .unexpectedStatus && refusal.response?.statusCode == 503)
        let error = try await events.failures.value(10, "the final error")
        #expect(error.code == .reconnectFailed)
        #expect(error.message.contains("Gave up reconnecting after 3 failed attempts (maxAttempts is 3)"), "\(error.message)")
        #expect(error.message.contains(a.url) && error.message.contains(dead))
        #expect(error.message.contains("Connection refused"), "\(error.message)")
        try await barrierAllLoops()
        #expect(events.reconnecting.pending().isEmpty)
        #expect(client.reconnections.withLockedValue { $0.isEmpty })
    }

    @Test("an unusable policy fails the connect (and the async sequence) with .invalidArgument naming the option")
    func invalidPolicy() async throws {
        var configuration = WebSocketClient.Configuration()
        configuration.reconnect = WebSocketClient.ReconnectPolicy(jitter: 2)
        let client = WebSocketClient(configuration: configuration)
        let error = try await connectError(client, url: "ws://127.0.0.1:1/")
        #expect(error.code == .invalidArgument && error.message.contains("jitter"), "\(error)")
        await #expect(throws: WebSocketError(.invalidArgument, "Configuration.reconnect: jitter must be between 0 and 1 (it is 2.0)")) {
            for try await _ in client.connections(to: "ws://127.0.0.1:1/") {}
        }
        #expect(client.reconnections.withLockedValue { $0.isEmpty })
    }

    @Test("connections(to:): a for-await loop gets the first connection, then the one after the failover; the app's close ends it")
    func asyncSequence() async throws {
        let a = try await Node.start()
        let b = try await Node.start()
        defer { Task { await a.stop(); await b.stop() } }
        let client = reconnectingClient(urls: [b.url])
        let received = try await withTimeout(20, "the connections") {
            var received: [String] = []
            var count = 0
            for try await connection in client.connections(to: a.url) {
                count += 1
                try await connection.write("subscribe prices")
                let node = count == 1 ? a : b
                try await node.waitForSubscribers(1)
                _ = try node.server.server.publish("hello \(count)", to: "prices")
                for try await message in connection.messages {
                    received.append(message.utf8Data ?? "")
                    if count == 1 {
                        try #require(a.connections.all.first).socket.close(promise: nil)  // the node dies
                    } else {
                        try await connection.close(code: .normal)  // ours: the sequence ends
                    }
                }
            }
            return received
        }
        #expect(received == ["hello 1", "hello 2"])
        #expect(client.reconnections.withLockedValue { $0.isEmpty })
    }

    @Test("connections(to:) without first-connection retries throws the first connect's error; cancelling the task closes the connection (1001) and throws CancellationError")
    func asyncSequenceErrorsAndCancel() async throws {
        let client = reconnectingClient(urls: [], retriesFirstConnection: false)
        let deadPort = try DeadPort()
        let dead = deadPort.url
        let error = try await withTimeout(10) { () -> WebSocketError? in
            do {
                for try await _ in client.connections(to: dead) {}
                return nil
            } catch let error as WebSocketError {
                return error
            }
        }
        #expect(error?.code == .connectionRefused)

        let a = try await Node.start()
        defer { Task { await a.stop() } }
        let opened = Expectation<WebSocketConnection>()
        let task = Task {
            for try await connection in client.connections(to: a.url) {
                opened.fulfill(connection)
                for try await _ in connection.messages {}
            }
        }
        let connection = try await opened.value(10, "the connection")
        let closed = Expectation<Int>()
        connection.onClose { code, _ in closed.fulfill(code) }
        task.cancel()
        #expect(try await closed.value(10, "the close after cancelling") == 1001)
        let result = await task.result
        #expect(throws: CancellationError.self) { try result.get() }
        try await waitUntil(10, "the reconnection to end") { client.reconnections.withLockedValue { $0.isEmpty } }
    }
}

extension ReconnectTests {
    @Test("connect(_:) with a policy: a refused first connection is retried (reconnecting, then connect, no connectFailed nor reconnected)")
    func firstConnectionRetried() async throws {
        let b = try await Node.start()
        defer { Task { await b.stop() } }
        let deadPort = try DeadPort()
        let client = reconnectingClient(urls: [b.url])
        defer { client.stopReconnecting() }
        let events = ClientEvents(client)
        client.connect(deadPort.url)  // nothing listens there yet: as a client started before its server

        let attempt = try await events.reconnecting.value(10, "reconnecting after the refused first attempt")
        #expect(attempt.number == 1 && attempt.url == b.url && attempt.delay == .milliseconds(10))
        guard case .failed(let error) = attempt.cause else {
            Issue.record("expected a failed attempt, got \(attempt.cause)")
            return
        }
        #expect(error.code == .connectionRefused)
        let connection = try await events.connects.value(10, "the first connection, on B")
        try await b.waitForSubscribers(1)
        #expect(try b.server.server.publish("hello", to: "prices") == 1)
        #expect(try await events.messages.value(10, "the message from B") == "hello")
        try await barrierAllLoops()
        #expect(events.failures.pending().isEmpty, "connectFailed for a first attempt that was retried")
        #expect(events.reconnected.pending().isEmpty, "the first connection is no reconnection")

        // It reconnects as any connection does once open.
        try await waitUntil(10, "node b's connection") { !b.connections.all.isEmpty }
        try #require(b.connections.all.first).socket.close(promise: nil)
        #expect(try await events.reconnecting.value(10, "reconnecting after the drop").cause.closeCode == 1006)
        #expect(try await events.reconnected.value(10, "reconnected") !== connection)
    }

    @Test("retriesFirstConnection: false: the refused first connect is connectFailed(.connectionRefused), nothing retried")
    func firstConnectionNotRetried() async throws {
        let b = try await Node.start()
        defer { Task { await b.stop() } }
        let deadPort = try DeadPort()
        let client = reconnectingClient(urls: [b.url], retriesFirstConnection: false)
        let events = ClientEvents(client)
        client.connect(deadPort.url)
        #expect(try await events.failures.value(10, "connectFailed").code == .connectionRefused)
        try await barrierAllLoops()
        #expect(events.reconnecting.pending().isEmpty && events.connects.pending().isEmpty)
        #expect(b.connections.all.isEmpty)
        #expect(client.reconnections.withLockedValue { $0.isEmpty })
    }

    @Test("a first connection refused with 403 is not retried: connectFailed with the refusal, at once")
    func firstConnectionRefusedIsNotRetried() async throws {
        let a = try await Node.start { request in
            request.reject(status: 403, reason: "Go away")
            return true
        }
        defer { Task { await a.stop() } }
        let client = reconnectingClient(urls: [])
        let events = ClientEvents(client)
        client.connect(a.url)
        let error = try await events.failures.value(10, "connectFailed")
        #expect(error.code == .unexpectedStatus && error.response?.statusCode == 403)
        try await barrierAllLoops()
        #expect(events.reconnecting.pending().isEmpty)
        #expect(client.reconnections.withLockedValue { $0.isEmpty })
    }

    @Test("connections(to:) retries a refused first connection (default policy) and hands out the connection that opens")
    func sequenceRetriesFirstConnection() async throws {
        let b = try await Node.start()
        defer { Task { await b.stop() } }
        let deadPort = try DeadPort()
        let client = reconnectingClient(urls: [b.url])
        let reconnecting = Collected<WebSocketClient.ReconnectAttempt>()
        client.onReconnecting { reconnecting.append($0) }
        let remote = try await withTimeout(10, "the first connection") { () -> Int? in
            for try await connection in client.connections(to: deadPort.url) {
                let port = connection.socket.remoteAddress?.port
                try await connection.close(code: .normal)
                return port
            }
            return nil
        }
        #expect(remote == b.server.port)
        #expect(reconnecting.all.map(\.url) == [b.url])
    }

    @Test("connections(to:): reconnecting fires after the loop over the old connection has ended, so the lines come in order")
    func sequenceEventOrder() async throws {
        let a = try await Node.start()
        let b = try await Node.start()
        defer { Task { await a.stop(); await b.stop() } }
        let client = reconnectingClient(urls: [b.url])
        let log = Collected<String>()
        client.onReconnecting { log.append("reconnecting \($0.number) to \($0.url)") }
        try await withTimeout(20, "the connections") {
            var count = 0
            for try await connection in client.connections(to: a.url) {
                count += 1
                log.append("connection \(count)")
                if count == 1 {
                    // The node records its connection after accept() returns, which may be after
                    // the client has read the 101.
                    try await waitUntil(10, "node a's connection") { !a.connections.all.isEmpty }
                    try #require(a.connections.all.first).socket.close(promise: nil)  // the node dies
                } else {
                    try await connection.close(code: .normal)
                }
                for try await _ in connection.messages {}
                log.append("loop \(count) ended with \(connection.closeReasonCode)")
            }
            log.append("sequence ended")
        }
        #expect(log.all == [
            "connection 1", "loop 1 ended with 1006", "reconnecting 1 to \(b.url)", "connection 2", "loop 2 ended with 1000",
            "sequence ended",
        ])
    }

    @Test("connections(to:): a normal close by the server ends the loop; stopReconnecting() ends it; a cancelled task throws CancellationError")
    func sequenceStopVersusClose() async throws {
        let a = try await Node.start()
        defer { Task { await a.stop() } }
        let client = reconnectingClient(urls: [])

        // The server closes normally (1000): the loop ends, nothing thrown.
        let closedNormally = Task {
            for try await _ in client.connections(to: a.url) {
                try await waitUntil(10, "the server side") { a.connections.all.count == 1 }
                try #require(a.connections.all.first).close(reasonCode: .normal)
            }
            return "ended"
        }
        #expect(try await withTimeout(10) { try await closedNormally.value } == "ended")

        // stopReconnecting(): the loop ends (the connection stays open: closed here).
        let stopped = Task {
            for try await connection in client.connections(to: a.url) {
                client.stopReconnecting()
                try? connection.close()
            }
            return "ended"
        }
        #expect(try await withTimeout(10) { try await stopped.value } == "ended")

        // Cancelled while the body runs (which swallows its own errors): the sequence throws
        // CancellationError when asked for the next connection, and the connection gets 1001.
        let opened = Expectation<WebSocketConnection>()
        let cancelled = Task {
            for try await connection in client.connections(to: a.url) {
                opened.fulfill(connection)
                do { for try await _ in connection.messages {} } catch {}
            }
        }
        let connection = try await opened.value(10, "the connection")
        cancelled.cancel()
        let result = await cancelled.result
        #expect(throws: CancellationError.self) { try result.get() }
        try await waitUntil(10, "the close") { connection.closeReasonCode == 1001 }
        try await waitUntil(10, "the reconnections to end") { client.reconnections.withLockedValue { $0.isEmpty } }

        // Cancelled while waiting for the next connection (a reconnection 10 minutes away).
        var configuration = WebSocketClient.Configuration()
        configuration.reconnect = WebSocketClient.ReconnectPolicy(initialDelay: .seconds(600), maxDelay: .seconds(600))
        let patient = WebSocketClient(configuration: configuration)
        let reconnecting = Expectation<WebSocketClient.ReconnectAttempt>()
        patient.onReconnecting { reconnecting.fulfill($0) }
        let waiting = Task {
            for try await _ in patient.connections(to: a.url) {
                try await waitUntil(10, "the server side") { a.connections.all.count == 4 }
                try #require(a.connections.all.last).close(reasonCode: .goingAway)  // reconnects, in 10 minutes
            }
            return "ended"
        }
        // Announced once the body has ended and the iterator waits for the next connection.
        _ = try await reconnecting.value(10, "reconnecting")
        waiting.cancel()
        let waited = await waiting.result
        #expect(throws: CancellationError.self) { try waited.get() }
        try await waitUntil(10, "the reconnection to end") { patient.reconnections.withLockedValue { $0.isEmpty } }
    }
}

extension WebSocketClient.ReconnectCause {
    /// The close code of a close, nil for a failure.
    fileprivate var closeCode: Int? {
        if case .closed(let code, _) = self { return code }
        return nil
    }

    /// The description of a close, "" for a failure.
    fileprivate var closeDescription: String {
        if case .closed(_, let description) = self { return description }
        return ""
    }
}
