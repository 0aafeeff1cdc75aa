import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import WebSocket

/// The `async` face of a connection: `write` (waits only above the high watermark), the `async`
/// `close` that reports how the handshake ended, `roundTrip`, and `WebSocketCloseCode`.
@Suite("Async API")
struct AsyncAPITests {
    @Test("write returns at once while the peer keeps up, and many writes arrive in order")
    func writeBurst() async throws {
        let server = try await TestServer.echo()
        defer { Task { await server.stop() } }
        let connection = try await WebSocketClient().connect(url: server.url)
        let received = try await withTimeout(10, "1,000 echoes") {
            var iterator = connection.messages.makeAsyncIterator()
            for i in 0..<1000 { try await connection.write("m\(i)") }
            var texts: [String] = []
            for _ in 0..<1000 { texts.append(try await iterator.next()?.utf8Data ?? "") }
            return texts
        }
        #expect(received == (0..<1000).map { "m\($0)" })
        _ = try await connection.close(code: .normal)
    }

    @Test("write waits while a paused peer does not read, and goes on when it resumes")
    func writeWaitsAboveHighWatermark() async throws {
        let (server, accepted) = try await WebSocketConnectionTests.serverWithConnections {
            $0.writeBufferWaterMark = try! WebSocketWriteBufferWaterMark(low: 16 * 1024, high: 64 * 1024)
            $0.keepalive = false
            $0.maxReceivedMessageSize = 1 << 20
        }
        defer { Task { await server.stop() } }
        var configuration = WebSocketClient.Configuration()
        configuration.maxReceivedMessageSize = 64 << 20
        configuration.maxReceivedFrameSize = 64 << 20
        let client = try await WebSocketClient(configuration: configuration).connect(url: server.url)
        client.pause()
        let serverSide = try await accepted.value()
        // `drain` fires only when the channel is writable again, on the event loop; never for an
        // async write reaching the handler while the buffer is still full.
        let drains = Collected<(writable: Bool, onLoop: Bool)>()
        serverSide.onDrain { drains.append((serverSide.socket.isWritable, serverSide.socket.eventLoop.inEventLoop)) }
        let written = NIOLockedValueBox(0)
        let chunk = ByteBuffer(repeating: 7, count: 256 * 1024)
        let writer = Task {
            for _ in 0..<32 {
                try await serverSide.write(chunk)
                written.withLockedValue { $0 += 1 }
            }
        }
        // The writes stall: the kernel's buffers hold a few MiB at most, not 8 MiB, and the
        // channel's buffer goes over its high watermark.
        try await waitUntil(20, "the writes to stall") { !serverSide.socket.isWritable }
        #expect(written.withLockedValue { $0 } < 32)
        let count = NIOLockedValueBox(0)
        let all = Expectation<Void>()
        client.onMessage { _ in
            if count.withLockedValue({ $0 += 1; return $0 }) == 32 { all.fulfill(()) }
        }
        client.resume()
        try await all.value(30, "every chunk")
        try await withTimeout(10, "the writer") { try await writer.value }
        #expect(written.withLockedValue { $0 } == 32)
        #expect(!drains.all.isEmpty)
        #expect(drains.all.allSatisfy { $0.writable && $0.onLoop }, "\(drains.all)")
        try client.close()
    }

    @Test("write after the close throws notConnected; a write waiting when the connection closes throws too")
    func writeAfterClose() async throws {
        let (server, accepted) = try await WebSocketConnectionTests.serverWithConnections {
            $0.writeBufferWaterMark = try! WebSocketWriteBufferWaterMark(low: 1024, high: 4096)
            $0.keepalive = false
        }
        defer { Task { await server.stop() } }
        let client = try await WebSocketClient().connect(url: server.url)
        client.pause()
        let serverSide = try await accepted.value()
        let waiting = Task {
            // Enough to fill the socket's buffers: some write waits.
            for _ in 0..<200 { try await serverSide.write(ByteBuffer(repeating: 1, count: 64 * 1024)) }
        }
        // Wait for the event: the socket stops being writable, so a write is waiting.
        try await withTimeout(10, "the socket to fill") {
            while serverSide.socket.isWritable { try await Task.sleep(for: .milliseconds(5)) }
        }
        serverSide.drop(reasonCode: 1001, skipCloseFrame: true)
        await #expect(throws: WebSocketError.self) { try await withTimeout(10, "the waiting write") { try await waiting.value } }
        await #expect { try await serverSide.write("late") } throws: { ($0 as? WebSocketError)?.code == .notConnected }
    }

    @Test("a write from another thread that the close overtakes on the loop throws (it once returned, and the loop dropped the message)")
    func offLoopWriteOvertakenByClose() async throws {
        let (server, accepted) = try await WebSocketConnectionTests.serverWithConnections { $0.keepalive = false }
        defer { Task { await server.stop() } }
        let client = try await WebSocketClient().connect(url: server.url)
        let serverSide = try await accepted.value()
        // The loop is held; behind the hold, the close; behind the close, the write, which
        // found the connection open when it was called (off the loop).
        let gate = ConditionLock(value: 0)
        serverSide.eventLoop.execute {
            gate.lock(whenValue: 1)
            gate.unlock()
        }
        serverSide.eventLoop.execute { try? serverSide.close(reasonCode: 1000, description: "bye") }
        let write = Task { try await serverSide.write("overtaken by the close") }
        try await withTimeout(10, "the write to reach the loop's queue") {
            while serverSide.state.withLockedValue({ $0.bytesInTransit }) == 0 { try await Task.sleep(for: .milliseconds(1)) }
        }
        #expect(serverSide.closeReasonCode == -1)
        gate.lock()
        gate.unlock(withValue: 1)
        await #expect { try await withTimeout(10, "the write") { try await write.value } } throws: {
            ($0 as? WebSocketError)?.code == .notConnected
        }
        client.drop(reasonCode: 1001, skipCloseFrame: true)
    }

    @Test("roundTrip in a task cancelled before the call throws CancellationError at once (the cancellation was lost: it waited for the close)")
    func roundTripCancelledBeforeTheCall() async throws {
        let (server, accepted) = try await WebSocketConnectionTests.serverWithConnections { $0.keepalive = false }
        defer { Task { await server.stop() } }
        let client = try await WebSocketClient().connect(url: server.url)
        client.pause()  // no pong comes back
        let serverSide = try await accepted.value()
        let ping = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await serverSide.roundTrip()
        }
        await #expect(throws: CancellationError.self) { try await withTimeout(5, "the cancelled roundTrip") { try await ping.value } }
        client.drop(reasonCode: 1001, skipCloseFrame: true)
    }

    @Test("async close returns the result once closed: a completed handshake")
    func asyncClose() async throws {
        let server = try await TestServer.echo()
        defer { Task { await server.stop() } }
        let connection = try await WebSocketClient().connect(url: server.url)
        let result = try await withTimeout(10, "close") { try await connection.close(code: .goingAway, reason: "bye") }
        #expect(result == WebSocketConnection.CloseResult(code: .goingAway, description: "bye", handshakeCompleted: true))
        #expect(connection.closeCode == .goingAway)
        // Again, on the closed connection: the same result at once, no error.
        #expect(try await connection.close(code: .normal) == result)
        // A close that times out: CloseTimeoutVirtualTimeTests.asyncCloseTimesOut.
    }

    @Test("roundTrip returns the time until the matching pong; concurrent calls each get theirs")
    func roundTrip() async throws {
        let server = try await TestServer.echo()
        defer { Task { await server.stop() } }
        let connection = try await WebSocketClient().connect(url: server.url)
        let pongs = Collected<Int>()
        connection.onPong { pongs.append($0.readableBytes) }
        let times = try await withTimeout(10, "round trips") {
            async let a = connection.roundTrip()
            async let b = connection.roundTrip(ByteBuffer(string: "hi"))
            return try await [a, b]
        }
        #expect(times.allSatisfy { $0 > .zero && $0 < .seconds(10) })
        #expect(Set(pongs.all) == [8, 10], "the pong event still fires, with the payload")
        await #expect(throws: WebSocketError.self) { try await connection.roundTrip(ByteBuffer(repeating: 0, count: 118)) }
        _ = try await connection.close(code: .normal)
        await #expect { try await connection.roundTrip() } throws: { ($0 as? WebSocketError)?.code == .notConnected }
    }

    @Test("close codes as values: static members, integer literals, and the Int API alike")
    func closeCodes() async throws {
        #expect(WebSocketCloseCode.normal.rawValue == 1000)
        #expect(WebSocketCloseCode.tryAgainLater == 1013)
        #expect(WebSocketCloseCode(4000).isValidOnWire)
        #expect(!WebSocketCloseCode.abnormal.isValidOnWire)
        #expect(WebSocketCloseCode.policyViolation.description == "1008 (Policy violation)")
        let server = try await TestServer.echo()
        defer { Task { await server.stop() } }
        let connection = try await WebSocketClient().connect(url: server.url)
        let closed = Expectation<Int>()
        connection.onClose { code, _ in closed.fulfill(code) }
        try connection.close(reasonCode: .policyViolation)
        #expect(try await closed.value(10) == 1008)
        #expect(throws: WebSocketError.self) { try connection.close(reasonCode: WebSocketCloseCode.abnormal) }
    }
}
