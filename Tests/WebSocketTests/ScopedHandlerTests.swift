import NIOConcurrencyHelpers
import Logging
import NIOCore
import ServiceLifecycle
import NIOPosix
import Testing

@testable import WebSocket

/// Events that callbacks and handlers deliver and a test awaits in order: an `AsyncStream`, so a
/// wait suspends until the event (no polling), bounded by ``withTimeout(_:_:_:)``.
private struct Events<Value: Sendable>: Sendable {
    let stream: AsyncStream<Value>
    let continuation: AsyncStream<Value>.Continuation

    init() { (stream, continuation) = AsyncStream.makeStream() }

    func fulfill(_ value: Value) { continuation.yield(value) }

    /// The next event, waiting at most `seconds`.
    func next(_ seconds: Double = 10, _ what: String) async throws -> Value {
        let stream = self.stream
        guard let value = try await withTimeout(seconds, what, { await stream.first { _ in true } }) else {
            throw TestTimeout(what: what)
        }
        return value
    }
}

/// Runs `body` in a task of its own and waits at most `seconds` for its result. Unlike
/// ``withTimeout(_:_:_:)`` it gives up on a body that ignores cancellation (`shutDown()`, say),
/// so a hang fails the test instead of hanging it.
private func within<T: Sendable>(_ seconds: Double, _ what: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    let result = Events<Result<T, any Error>>()
    let work = Task {
        do { result.fulfill(.success(try await body())) } catch { result.fulfill(.failure(error)) }
    }
    do {
        return try await result.next(seconds, what).get()
    } catch {
        work.cancel()
        throw error
    }
}

/// What the close handler of a client connection saw.
private struct Closed: Sendable, Equatable {
    var code: Int
    var description: String
}

/// An error whose text goes to the client as the close description.
private struct HandlerFailure: Error, CustomStringConvertible {
    var description: String
}

/// Connects a client to `url`; its close event goes to the returned events.
private func connectClient(_ url: String, protocols: [String] = []) async throws -> (WebSocketConnection, Events<Closed>) {
    let connection: WebSocketConnection = try await withTimeout(10, "connecting to \(url)") {
        try await WebSocketClient().connect(url: url, protocols: protocols)
    }
    let closed = Events<Closed>()
    connection.onClose { code, description in closed.fulfill(Closed(code: code, description: description)) }
    return (connection, closed)
}

/// A server whose every request is accepted with the scoped `handler`.
private func scopedServer(_ handler: nonisolated(nonsending) @escaping @Sendable (WebSocketConnection) async throws -> Void) async throws -> TestServer {
    try await TestServer.start(setup: { server in
        server.onRequest { request in
            _ = try? request.accept(handler: handler)
        }
    })
}

@Suite("Scoped connection handlers")
struct ScopedHandlerTests {
    @Test("the handler returns: the client sees 1000")
    func returnClosesNormally() async throws {
        let server = try await scopedServer { connection in
            for try await message in connection.messages {
                try await connection.write(message)
                return
            }
        }
        defer { Task { await server.stop() } }
        let (client, closed) = try await connectClient(server.url)
        let echoes = Events<WebSocketMessage>()
        client.onMessage { echoes.fulfill($0) }
        client.sendUTF("once ✓")
        #expect(try await echoes.next(10, "the echo") == .utf8("once ✓"))
        #expect(try await closed.next(10, "the close") == Closed(code: 1000, description: "Normal connection closure"))
    }

    @Test("the handler throws: the client sees 1011 with the error's text")
    func throwClosesWithInternalError() async throws {
        let server = try await scopedServer { _ in throw HandlerFailure(description: "no such room") }
        defer { Task { await server.stop() } }
        let (_, closed) = try await connectClient(server.url)
        #expect(try await closed.next(10, "the close") == Closed(code: 1011, description: "no such room"))
    }

    @Test("a long error text is cut to 123 bytes at a whole character")
    func closeDescriptionCut() {
        // 61 two-byte characters are 122 bytes: the 62nd would make 124.
        let long = HandlerFailure(description: String(repeating: "é", count: 80))
        let cut = WebSocketCloseReason.truncatedDescription(String(describing: long))
        #expect(cut == String(repeating: "é", count: 61))
        // A four-byte character that would end at byte 124 is left out whole.
        let emoji = HandlerFailure(description: String(repeating: "a", count: 120) + "😀b")
        #expect(WebSocketCloseReason.truncatedDescription(String(describing: emoji)) == String(repeating: "a", count: 120))
        #expect(WebSocketCloseReason.truncatedDescription(String(describing: HandlerFailure(description: "short"))) == "short")
    }

    @Test("the peer closes while the handler iterates: the loop ends, and no second close goes out")
    func peerCloses() async throws {
        let handlerEnded = Events<Bool>()
        let serverClosed = Events<Closed>()
        let server = try await scopedServer { connection in
            connection.onClose { code, description in serverClosed.fulfill(Closed(code: code, description: description)) }
            for try await _ in connection.messages {}
            handlerEnded.fulfill(Task.isCancelled)
        }
        defer { Task { await server.stop() } }
        let (client, closed) = try await connectClient(server.url)
        try client.close(reasonCode: 4000, description: "bye")
        #expect(try await handlerEnded.next(10, "the handler's return") == false)
        #expect(try await serverClosed.next(10, "the server's close event") == Closed(code: 4000, description: "bye"))
        // The client's own close: the server answered the close frame with the same code, once.
        #expect(try await closed.next(10, "the client's close").code == 4000)
    }

    @Test("shutDown: the client sees 1001, the handler's `for try await` loop ends without an error and the code after it runs; shutDown returns after the handler")
    func shutDownEndsTheLoop() async throws {
        let started = Events<Void>()
        let outcome = Events<String>()
        let server = try await scopedServer { connection in
            started.fulfill(())
            do {
                for try await _ in connection.messages {}
                outcome.fulfill("ended with \(connection.closeReasonCode)")
            } catch {
                outcome.fulfill("threw \(error)")
                throw error
            }
            // Code after the loop that awaits: it runs, whatever the cancellation that follows.
            await Task.yield()
            outcome.fulfill("after the loop")
        }
        let (_, closed) = try await connectClient(server.url)
        try await started.next(10, "the handler to start")
        try await within(15, "shutDown") { await server.server.shutDown() }
        #expect(try await outcome.next(10, "the handler's loop") == "ended with 1001")
        #expect(try await outcome.next(10, "the code after the loop") == "after the loop")
        #expect(try await closed.next(10, "the close").code == 1001)
        #expect(server.server.scopedHandlers.count == 0)
    }

    @Test("shutDown while the handler is busy with a message: the loop still ends with nil afterwards, not CancellationError")
    func shutDownWhileBusy() async throws {
        let gate = Gate()
        let busy = Events<Void>()
        let outcome = Events<String>()
        let server = try await scopedServer { connection in
            do {
                for try await _ in connection.messages {
                    busy.fulfill(())
                    await gate.wait()  // not woken by cancellation: the close completes meanwhile
                }
                outcome.fulfill("ended")
            } catch {
                outcome.fulfill("threw \(error)")
            }
        }
        let (client, closed) = try await connectClient(server.url)
        client.sendUTF("hold")
        try await busy.next(10, "the handler to take the message")
        let shutDown = Task { await server.server.shutDown() }
        #expect(try await closed.next(10, "the close").code == 1001)
        // The server's side has closed, and its task's cancellation (queued on the loop by the
        // close) has run: the iterator has not taken the end yet.
        try await eventually(10, "the server's side to close") { server.server.connectionCount == 0 }
        try await barrierAllLoops()
        gate.open()
        #expect(try await outcome.next(10, "the loop's end") == "ended")
        try await within(15, "shutDown") { await shutDown.value }
    }

    @Test("shutDown wakes a handler that waits for something else, once its connection has closed (the task is cancelled then)")
    func shutDownCancelsOtherWaitsAfterTheClose() async throws {
        let outcome = Events<String>()
        let server = try await scopedServer { connection in
            do {
                try await Task.sleep(for: .seconds(600))
                outcome.fulfill("slept")
            } catch {
                outcome.fulfill("\(type(of: error)) after the close: \(!connection.connected)")
            }
        }
        let (_, closed) = try await connectClient(server.url)
        try await eventually(10, "the handler to start") { server.server.scopedHandlers.count == 1 }
        try await within(15, "shutDown") { await server.server.shutDown() }
        #expect(try await outcome.next(10, "the handler's end") == "CancellationError after the close: true")
        #expect(try await closed.next(10, "the close").code == 1001)
    }

    @Test("shutDown wakes a handler iterating another connection's `messages` (one it opened) with CancellationError")
    func shutDownWakesOtherConnectionsMessages() async throws {
        let upstream = try await scopedServer { connection in
            for try await _ in connection.messages {}
        }
        defer { Task { await upstream.stop() } }
        let outcome = Events<String>()
        let connected = Events<Void>()
        let server = try await scopedServer { connection in
            let other = try await WebSocketClient().connect(url: upstream.url)
            connected.fulfill(())
            do {
                for try await _ in other.messages {}
                outcome.fulfill("ended")
            } catch is CancellationError {
                outcome.fulfill("cancelled")
            }
            try? other.close()
        }
        let (_, closed) = try await connectClient(server.url)
        // Connected (a shutdown during the connect would abort it: the handler would throw).
        try await connected.next(10, "the upstream connection")
        try await within(15, "shutDown") { await server.server.shutDown() }
        #expect(try await outcome.next(10, "the handler's end") == "cancelled")
        #expect(try await closed.next(10, "the close").code == 1001)
    }

    @Test("as a Service: graceful shutdown sends 1001 and ends the handler's loop without an error; run() returns")
    func serviceGracefulShutdown() async throws {
        let outcome = Events<String>()
        let server = WebSocketServer(listeners: [.init(host: "127.0.0.1", port: 0)])
        server.onRequest { request in
            _ = try? request.accept { connection in
                do {
                    for try await _ in connection.messages {}
                    outcome.fulfill("ended")
                } catch {
                    outcome.fulfill("threw \(error)")
                }
            }
        }
        let group = ServiceGroup(configuration: .init(services: [server], logger: Logger(label: "test.scoped")))
        let running = Task { try await group.run() }
        let address = try await withTimeout(5, "the listener") {
            while server.localAddresses.isEmpty { try await Task.sleep(for: .milliseconds(10)) }
            return server.localAddresses[0]
        }
        let (_, closed) = try await connectClient("ws://127.0.0.1:\(address.port!)/")
        await group.triggerGracefulShutdown()
        #expect(try await outcome.next(15, "the handler's end") == "ended")
        #expect(try await closed.next(15, "the close").code == 1001)
        try await within(15, "run() to return") { try await running.value }
    }

    @Test("through the router: a mounted connection handler's return closes with 1000")
    func routerMount() async throws {
        let router = WebSocketRouter()
        try router.mount("/echo", protocol: "echo-protocol") { connection in
            for try await message in connection.messages {
                try await connection.write(message)
                return
            }
        }
        let server = try await TestServer.start(setup: { router.attachServer($0) })
        defer { Task { await server.stop() } }
        let (client, closed) = try await connectClient("ws://127.0.0.1:\(server.port)/echo", protocols: ["echo-protocol"])
        #expect(client.protocol == "echo-protocol")
        client.sendUTF("routed")
        var received: [WebSocketMessage] = []
        for try await message in client.messages { received.append(message) }
        #expect(received == [.utf8("routed")])
        #expect(try await closed.next(10, "the close") == Closed(code: 1000, description: "Normal connection closure"))
    }

    @Test("through the router: WebSocketRouterRequest.accept(handler:) closes with 1011 when the handler throws")
    func routerRequestAccept() async throws {
        let router = WebSocketRouter()
        try router.mount("/rooms", protocol: "*") { request in
            _ = try? request.accept(origin: request.origin) { connection in
                throw HandlerFailure(description: "room \(connection.protocol ?? "-") is full")
            }
        }
        let server = try await TestServer.start(setup: { router.attachServer($0) })
        defer { Task { await server.stop() } }
        let (_, closed) = try await connectClient("ws://127.0.0.1:\(server.port)/rooms", protocols: ["chat"])
        #expect(try await closed.next(10, "the close") == Closed(code: 1011, description: "room chat is full"))
    }

    @Test("the task list: a handler started during a shutdown gets 1001 at once (its loop ends); one started after it runs as usual")
    func trackerEndsLateTasks() async throws {
        let outcome = Events<String>()
        let server = try await scopedServer { connection in
            for try await message in connection.messages { try await connection.write(message) }
            outcome.fulfill("ended with \(connection.closeReasonCode)")
        }
        defer { Task { await server.stop() } }
        // What shutDown does first; no handler runs yet.
        server.server.scopedHandlers.cancelAll()
        #expect(server.server.scopedHandlers.isShuttingDown)
        let (_, lateClosed) = try await connectClient(server.url)
        #expect(try await lateClosed.next(10, "the late connection's close").code == 1001)
        #expect(try await outcome.next(10, "the late handler") == "ended with 1001")
        try await within(10, "waitForAll") { await server.server.scopedHandlers.waitForAll() }
        #expect(!server.server.scopedHandlers.isShuttingDown)

        let (client, closed) = try await connectClient(server.url)
        let echoes = Events<WebSocketMessage>()
        client.onMessage { echoes.fulfill($0) }
        client.sendUTF("after")
        #expect(try await echoes.next(10, "the echo after the shutdown") == .utf8("after"))
        try await client.close(code: .normal)
        #expect(try await closed.next(10, "the close").code == 1000)
        #expect(try await outcome.next(10, "the handler") == "ended with 1000")
    }

    @Test("the handler runs on its connection's event loop, isolated to it: the connection's async calls need no hop")
    func handlerIsolatedToEventLoop() async throws {
        let onLoop = Events<Bool>()
        let server = try await scopedServer { connection in
            // `#isolation` in a nonsending helper is the handler's: the event loop's actor.
            let isolation = await currentIsolation()
            onLoop.fulfill(connection.socket.eventLoop.inEventLoop && isolation is EventLoopIsolation)
            for try await message in connection.messages { try await connection.write(message) }
        }
        defer { Task { await server.stop() } }
        let (client, _) = try await connectClient(server.url)
        #expect(try await onLoop.next(10, "the handler's start") == true)
        let echoes = Events<WebSocketMessage>()
        client.onMessage { echoes.fulfill($0) }
        client.sendUTF("echo")
        #expect(try await echoes.next(10, "the echo") == .utf8("echo"))
    }

    @Test("a child task of the handler waiting on `messages` is cancelled on its own (a timeout) and the handler goes on")
    func childTaskCancellation() async throws {
        let outcome = Events<String>()
        let server = try await scopedServer { connection in
            outcome.fulfill((try? await cancelWhileWaiting(connection)) ?? "failed")
            outcome.fulfill(Task.isCancelled ? "handler cancelled" : "handler running")
        }
        defer { Task { await server.stop() } }
        let (_, closed) = try await connectClient(server.url)
        #expect(try await outcome.next(10, "the child's end") == "cancelled")
        #expect(try await outcome.next(10, "the handler") == "handler running")
        #expect(try await closed.next(10, "the close").code == 1000)
    }

    @Test("the shutdown's first step (the task list's cancelAll) closes a waiting handler's connection with 1001; its wait ends with nil, not CancellationError")
    func scopeShutdownEndsWait() async throws {
        let outcome = Events<String>()
        let server = try await scopedServer { connection in
            do {
                for try await _ in connection.messages {}
                outcome.fulfill("ended, connected: \(connection.connected)")
            } catch {
                outcome.fulfill("threw \(error)")
            }
        }
        defer { Task { await server.stop() } }
        let (_, closed) = try await connectClient(server.url)
        try await eventually(10, "the handler to wait") {
            server.server.scopedHandlers.count == 1 && server.server.connections.first?.messages.buffer.isWaiting == true
        }
        server.server.scopedHandlers.cancelAll()
        #expect(try await outcome.next(10, "the handler's end") == "ended, connected: false")
        #expect(try await closed.next(10, "the close").code == 1001)
        try await within(10, "waitForAll") { await server.server.scopedHandlers.waitForAll() }
    }

    @Test("an iterator that waited in the handler's own task, moved into a child task: cancelling the child wakes its wait")
    func iteratorMovedToChildTask() async throws {
        let outcome = Events<String>()
        let server = try await scopedServer { connection in
            var iterator = connection.messages.makeAsyncIterator()
            // The handler's own task waits first: the iterator notes the scope watches it.
            _ = try await iterator.next()
            let moved = iterator
            let child = Task {
                var iterator = moved
                do {
                    _ = try await iterator.next()
                    return "ended"
                } catch is CancellationError {
                    return "cancelled"
                }
            }
            try await eventually(10, "the child to wait") { connection.messages.buffer.isWaiting }
            child.cancel()
            // Had the child's wait relied on the handler's scope, only the handler's
            // cancellation would wake it.
            outcome.fulfill((try? await within(5, "the child's end") { try await child.value }) ?? "not woken")
        }
        defer { Task { await server.stop() } }
        let (client, closed) = try await connectClient(server.url)
        client.sendUTF("first")
        #expect(try await outcome.next(10, "the child's end") == "cancelled")
        #expect(try await closed.next(10, "the close").code == 1000)
    }

    @Test("a plain task iterating a client connection's `messages`: cancelling it while it waits throws CancellationError")
    func plainTaskCancellation() async throws {
        let server = try await scopedServer { connection in
            for try await message in connection.messages { try await connection.write(message) }
        }
        defer { Task { await server.stop() } }
        let (client, _) = try await connectClient(server.url)
        #expect(try await cancelWhileWaiting(client) == "cancelled")
    }
}

/// Iterates `connection.messages` in a task of its own and cancels that task once it waits for
/// a message, so that its cancellation handler (not the check before waiting) is what wakes it.
/// Returns how the loop ended: "cancelled" (CancellationError) or "ended" (nil).
private func cancelWhileWaiting(_ connection: WebSocketConnection) async throws -> String {
    let waiting = Task {
        do {
            for try await _ in connection.messages {}
            return "ended"
        } catch is CancellationError {
            return "cancelled"
        }
    }
    try await eventually(10, "the task to wait") { connection.messages.buffer.isWaiting }
    waiting.cancel()
    return try await within(10, "the task's end") { try await waiting.value }
}

/// A wait that only ``open()`` ends (not cancellation): a handler busy with something while
/// the test does something else.
private final class Gate: Sendable {
    private let state = NIOLockedValueBox<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func wait() async {
        await withCheckedContinuation { continuation in
            let now = state.withLockedValue { state -> Bool in
                if state.open { return true }
                state.waiters.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }

    func open() {
        let waiters = state.withLockedValue { state -> [CheckedContinuation<Void, Never>] in
            state.open = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }
}

/// The caller's isolation.
private nonisolated(nonsending) func currentIsolation() async -> (any Actor)? {
    #isolation
}

/// Waits (polling every 5 ms, at most `seconds`) until `condition` holds: for a state with no
/// event to await.
private func eventually(_ seconds: Double, _ what: String, _ condition: @Sendable () -> Bool) async throws {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while !condition() {
        guard ContinuousClock.now < deadline else { throw TestTimeout(what: what) }
        try await Task.sleep(for: .milliseconds(5))
    }
}
