import NIOConcurrencyHelpers
import NIOCore

/// A connection handled in structured concurrency: the handler's scope is the connection's.
///
/// ``WebSocketRequest/accept(protocol:origin:cookies:handler:)``,
/// ``WebSocketRouterRequest/accept(origin:cookies:handler:)`` and
/// ``WebSocketRouter/mount(_:protocol:connectionHandler:)`` run their handler here, in a task the
/// server tracks. When the handler returns, the connection closes with 1000; when it throws,
/// with 1011 and the error's text; when ``WebSocketServer/shutDown()`` cancelled it, with 1001.
/// A connection that is already closing (the peer closed it, or the handler did) is left alone.
extension WebSocketServer {
    /// Runs `handler` for `connection` in a task that ``shutDown()`` cancels and waits for.
    func runScoped(_ connection: WebSocketConnection, handler: nonisolated(nonsending) @escaping @Sendable (WebSocketConnection) async throws -> Void) {
        let executor = scopedHandlers.start(on: connection.eventLoop) {
            var failure: (any Error)?
            do {
                try await handler(connection)
            } catch {
                failure = error
            }
            // Only shutDown cancels this task (nobody else holds it): then the server is going away,
            // whatever the handler made of the cancellation.
            guard connection.connected else { return }
            if Task.isCancelled {
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
    private struct State {
        var tasks: [UInt64: Task<Void, Never>] = [:]
        var nextID: UInt64 = 0
        /// Set while the server shuts down: tasks started meanwhile are cancelled at once.
        var cancelling = false
        /// One executor per event loop, shared by the handlers of its connections: their jobs
        /// of one turn run from one queue, and their writes flush once at its end.
        var executors: [ObjectIdentifier: any Sendable & AnyObject] = [:]
    }
    private let state = NIOLockedValueBox(State())

    /// Starts `body` in a tracked task (cancelled at once during a shutdown) isolated to
    /// `eventLoop` (the connection's): `body` and the nonsending async calls it makes (the
    /// connection's `messages` and writes) run on the connection's thread, with no hop between
    /// threads when they suspend and resume.
    @discardableResult
    func start(on eventLoop: any EventLoop, _ body: nonisolated(nonsending) @escaping @Sendable () async -> Void) -> (any WebSocketTurnEnd)? {
        state.withLockedValue { state -> (any WebSocketTurnEnd)? in
            let id = state.nextID
            state.nextID += 1
            let cancelledAtStart = state.cancelling
            let isolation = EventLoopIsolation(eventLoop, executors: &state.executors)
            let scope = WebSocketScopeCancellation()
            let operation: @Sendable () async -> Void = {
                withUnsafeCurrentTask { scope.adopt($0) }
                // Cancelled before the body runs (cancelling the handle after creating it would
                // race with a task that starts at once on its event loop).
                if cancelledAtStart { withUnsafeCurrentTask { $0?.cancel() } }
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
            state.tasks[id] = task
            return isolation.loopExecutor as? any WebSocketTurnEnd
        }
    }

    /// Cancels every running task, and those started until `waitForAll()` returns.
    func cancelAll() {
        let tasks = state.withLockedValue { state in
            state.cancelling = true
            return Array(state.tasks.values)
        }
        for task in tasks { task.cancel() }
    }

    /// Waits until every task has ended (those that started since `cancelAll()` were cancelled
    /// as they started), then lets new tasks run uncancelled again.
    func waitForAll() async {
        while true {
            let tasks = state.withLockedValue { state -> [Task<Void, Never>] in
                if state.tasks.isEmpty { state.cancelling = false }
                return Array(state.tasks.values)
            }
            guard !tasks.isEmpty else { return }
            for task in tasks { await task.value }
        }
    }

    /// The number of running handler tasks.
    var count: Int { state.withLockedValue { $0.tasks.count } }
}
