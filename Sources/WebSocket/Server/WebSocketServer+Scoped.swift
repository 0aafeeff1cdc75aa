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
    func runScoped(_ connection: WebSocketConnection, handler: @escaping @Sendable (WebSocketConnection) async throws -> Void) {
        scopedHandlers.start(on: connection.socket.eventLoop) {
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
    }
    private let state = NIOLockedValueBox(State())

    /// Starts `body` in a tracked task (cancelled at once during a shutdown) that runs on
    /// `eventLoop` (the connection's): its sends and the messages it awaits then need no hop
    /// between threads.
    func start(on eventLoop: any EventLoop, _ body: @escaping @Sendable () async -> Void) {
        state.withLockedValue { state in
            let id = state.nextID
            state.nextID += 1
            let cancelledAtStart = state.cancelling
            let operation: @Sendable () async -> Void = {
                // Cancelled before the body runs (cancelling the handle after creating it would
                // race with a task that starts at once on its event loop).
                if cancelledAtStart { withUnsafeCurrentTask { $0?.cancel() } }
                await body()
                self.state.withLockedValue { _ = $0.tasks.removeValue(forKey: id) }
            }
            // Made under the lock, so the task is registered before it can remove itself.
            let task: Task<Void, Never>
            if #available(macOS 15.0, iOS 18.0, tvOS 18.0, watchOS 11.0, *) {
                task = Task(executorPreference: EventLoopTaskExecutor(eventLoop), operation: operation)
            } else {
                task = Task(operation: operation)
            }
            state.tasks[id] = task
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

/// Runs tasks on a NIO event loop: a scoped handler's task then lives on its connection's
/// thread, as its callbacks do. Measured with the async echo benchmark (Benchmarks/README.md).
@available(macOS 15.0, iOS 18.0, tvOS 18.0, watchOS 11.0, *)
final class EventLoopTaskExecutor: TaskExecutor {
    let eventLoop: any EventLoop

    init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
