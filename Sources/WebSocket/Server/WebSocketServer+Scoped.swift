import NIOConcurrencyHelpers
import NIOCore

/// A connection handled in structured concurrency: the handler's scope is the connection's.
///
/// ``WebSocketRequest/accept(protocol:origin:cookies:handler:)``,
/// ``WebSocketRouterRequest/accept(origin:cookies:handler:)`` and
/// ``WebSocketRouter/mount(_:protocol:connectionHandler:)`` run their handler here, in a task the
/// server tracks. When the handler returns, the connection closes with 1000; when it throws,
/// with 1011 and the error's text. A connection that is already closing (the peer closed it,
/// the handler did, or the server's shutdown did) is left alone.
///
/// On ``WebSocketServer/shutDown()`` the connection is closed with 1001 and the handler's
/// `messages` loop ends (returns `nil`) once the close handshake is done, as when the client
/// closes: the code after the loop runs. Only then is the handler's task cancelled, so that a
/// handler still waiting for something else (a feed, a sleep) is woken; the shutdown waits for
/// every handler to return.
extension WebSocketServer {
    /// Runs `handler` for `connection` in a task that ``shutDown()`` ends and waits for.
    func runScoped(_ connection: WebSocketConnection, handler: nonisolated(nonsending) @escaping @Sendable (WebSocketConnection) async throws -> Void) {
        let scopedHandlers = self.scopedHandlers
        let executor = scopedHandlers.start(for: connection) {
            var failure: (any Error)?
            do {
                try await handler(connection)
            } catch {
                failure = error
            }
            guard connection.connected else { return }
            // Returned (or threw) while the server shuts down, before the shutdown's 1001 went
            // out: the server is going away, whatever the handler made of it.
            if scopedHandlers.isShuttingDown || Task.isCancelled {
                try? connection.close(reasonCode: WebSocketCloseReason.goingAway)
            } else if let failure {
                connection.logger.debug("WebSocket connection handler threw", metadata: ["error": "\(failure)"])
                try? connection.close(
                    reasonCode: WebSocketCloseReason.internalServerError, description: WebSocketCloseReason.truncatedDescription(String(describing: failure)))
            } else {
                try? connection.close(reasonCode: WebSocketCloseReason.normal)
            }
        }
        // The handler's writes then flush at the end of the executor's turn, with no job of their own.
        if let executor { connection.onLoop { $0.turnEnd = executor } }
    }
}

/// The tasks of a server's scoped handlers (see `WebSocketServer.runScoped(_:handler:)`): each
/// removes itself when it ends; `cancelAll()` and `waitForAll()` are shutDown's.
final class WebSocketScopedHandlers: Sendable {
    private struct Entry {
        var task: Task<Void, Never>
        var connection: WebSocketConnection
    }
    private struct State {
        var tasks: [UInt64: Entry] = [:]
        var nextID: UInt64 = 0
        /// Set while the server shuts down: handlers started meanwhile are ended at once.
        var shuttingDown = false
        /// One executor per event loop, shared by the handlers of its connections: their jobs
        /// of one turn run from one queue, and their writes flush once at its end.
        var executors: [ObjectIdentifier: any Sendable & AnyObject] = [:]
    }
    private let state = NIOLockedValueBox(State())

    /// Starts `body` in a tracked task isolated to `connection`'s event loop: `body` and the
    /// nonsending async calls it makes (the connection's `messages` and writes) run on the
    /// connection's thread, with no hop between threads when they suspend and resume. During a
    /// shutdown the connection is closed at once, as `cancelAll()` does.
    @discardableResult
    func start(
        for connection: WebSocketConnection, _ body: nonisolated(nonsending) @escaping @Sendable () async -> Void
    ) -> (any WebSocketTurnEnd)? {
        let (turnEnd, endNow) = state.withLockedValue { state -> ((any WebSocketTurnEnd)?, Entry?) in
            let id = state.nextID
            state.nextID += 1
            let isolation = EventLoopIsolation(connection.eventLoop, executors: &state.executors)
            let scope = WebSocketScopeCancellation(connection: connection)
            let operation: @Sendable () async -> Void = {
                withUnsafeCurrentTask { scope.adopt($0) }
                await withTaskCancellationHandler {
                    await WebSocketScopeCancellation.$current.withValue(scope) {
                        await isolation.run(body)
                    }
                } onCancel: {
                    scope.cancel()
                }
                scope.adopt(nil)
                self.state.withLockedValue { _ = $0.tasks.removeValue(forKey: id) }
            }
            // Made under the lock, so the task is registered before it can remove itself.
            let task: Task<Void, Never>
            if #available(macOS 15.0, iOS 18.0, tvOS 18.0, watchOS 11.0, *) {
                // The same executor as the isolation's, preferred for nonisolated code too: a
                // continuation resumes on the task's preferred executor (else on the global
                // pool, another thread) and then finds itself on the actor's already.
                task = Task(executorPreference: isolation.loopExecutor as? EventLoopExecutor, operation: operation)
            } else {
                task = Task(operation: operation)
            }
            let entry = Entry(task: task, connection: connection)
            state.tasks[id] = entry
            return (isolation.loopExecutor as? any WebSocketTurnEnd, state.shuttingDown ? entry : nil)
        }
        if let endNow { Self.end(endNow) }
        return turnEnd
    }

    /// Starts a shutdown: every handler's connection is closed with 1001, and so is that of every
    /// handler started until `waitForAll()` returns. A handler's `messages` loop then ends with
    /// the close, as when the client closes (it returns `nil`: the code after it runs), and its
    /// task is cancelled once the connection has closed, to wake anything else it waits for.
    func cancelAll() {
        let entries = state.withLockedValue { state in
            state.shuttingDown = true
            return Array(state.tasks.values)
        }
        for entry in entries { Self.end(entry) }
    }

    /// Whether a shutdown is under way (from `cancelAll()` until `waitForAll()` returns).
    var isShuttingDown: Bool { state.withLockedValue { $0.shuttingDown } }

    /// Closes the handler's connection with 1001, and cancels its task once the connection has
    /// closed, after the close's own work (the `messages` sequence ends right after the close
    /// handlers), so that an iteration waiting for the end gets it, not a `CancellationError`.
    private static func end(_ entry: Entry) {
        let (task, connection) = (entry.task, entry.connection)
        try? connection.close(reasonCode: WebSocketCloseReason.goingAway)
        connection.onClose { _, _ in
            connection.eventLoop.execute { task.cancel() }
        }
    }

    /// Waits until every task has ended (those that started since `cancelAll()` were ended as
    /// they started), then lets new tasks run as usual again.
    func waitForAll() async {
        while true {
            let tasks = state.withLockedValue { state -> [Task<Void, Never>] in
                if state.tasks.isEmpty { state.shuttingDown = false }
                return state.tasks.values.map(\.task)
            }
            guard !tasks.isEmpty else { return }
            for task in tasks { await task.value }
        }
    }

    /// The number of running handler tasks.
    var count: Int { state.withLockedValue { $0.tasks.count } }
}
