import NIOConcurrencyHelpers

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
        scopedHandlers.start {
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
                connection.logger.debug(
                    "WebSocket connection handler threw", metadata: ["error": "\(failure)", "remoteAddress": "\(connection.remoteAddress)"])
                try? connection.close(
                    reasonCode: WebSocketCloseReason.internalServerError, description: Self.closeDescription(for: failure))
            } else {
                try? connection.close(reasonCode: WebSocketCloseReason.normal)
            }
        }
    }

    /// The close description for a handler's error: its text, cut to the 123 bytes a close frame
    /// carries at the last whole character (never in the middle of one).
    static func closeDescription(for error: any Error) -> String {
        let text = String(describing: error)
        var bytes = 0
        var end = text.startIndex
        for index in text.indices {
            let size = text[index].utf8.count
            guard bytes + size <= 123 else { break }
            bytes += size
            end = text.index(after: index)
        }
        return String(text[..<end])
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

    /// Starts `body` in a tracked task (cancelled at once during a shutdown).
    func start(_ body: @escaping @Sendable () async -> Void) {
        state.withLockedValue { state in
            let id = state.nextID
            state.nextID += 1
            // Made under the lock, so the task is registered before it can remove itself.
            let task = Task {
                await body()
                self.state.withLockedValue { _ = $0.tasks.removeValue(forKey: id) }
            }
            state.tasks[id] = task
            if state.cancelling { task.cancel() }
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
