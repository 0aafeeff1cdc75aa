import NIOConcurrencyHelpers

/// The cancellation of a scoped handler's task, watched once for the task's whole life: the
/// server's runner wraps the handler in one cancellation handler that calls ``cancel()``, and
/// the `messages` sequences that task waits on register here instead of installing a
/// cancellation handler per wait. Only the task itself relies on it (``WebSocketScopeWatch``): a
/// child or unstructured task that inherits the task-local value has cancellations of its own
/// and waits with a handler.
///
/// Only the server's shutdown cancels the task, and only once the scope's own connection has
/// closed (see `WebSocketScopedHandlers`): that connection's `messages` end with the close, so
/// the cancellation leaves them alone (the loop returns `nil`, and the code after it runs,
/// whether or not the iterator had taken the end yet). Other sequences the task waits on (the
/// messages of a connection it opened itself, say) are woken with `CancellationError`.
final class WebSocketScopeCancellation: Sendable {
    /// The scope of the running scoped handler, if any.
    @TaskLocal static var current: WebSocketScopeCancellation?

    /// The connection the scope's handler was given.
    private let connection: WebSocketConnection

    init(connection: WebSocketConnection) {
        self.connection = connection
    }

    /// Whether `buffer` is the scope's own connection's `messages` (made already, since it is
    /// being waited on).
    private func isOwn(_ buffer: WebSocketMessageBuffer) -> Bool {
        connection.state.withLockedValue { $0.messageSequence?.buffer } === buffer
    }

    private struct Owner: @unchecked Sendable {
        /// Compared, never used: set by the task itself while it runs, cleared before it ends,
        /// so the address cannot belong to another task meanwhile.
        var task: UnsafeCurrentTask?
    }
    private struct State {
        var owner = Owner()
        var cancelled = false
        var buffers: [WebSocketMessageBuffer] = []
    }
    private let state = NIOLockedValueBox(State())

    /// Called by the scope's task when it starts and (with nil) before it ends.
    func adopt(_ task: UnsafeCurrentTask?) {
        state.withLockedValue { $0.owner = Owner(task: task) }
    }

    /// Whether `task` is the scope's own.
    func isOwned(by task: UnsafeCurrentTask) -> Bool {
        state.withLockedValue { $0.owner.task == task }
    }

    /// Registers `buffer` for the cancellation; true when it came already (never for the
    /// scope's own connection's, which ends with its close).
    func watch(_ buffer: WebSocketMessageBuffer) -> Bool {
        if isOwn(buffer) { return false }
        return state.withLockedValue { state in
            if !state.buffers.contains(where: { $0 === buffer }) { state.buffers.append(buffer) }
            return state.cancelled
        }
    }

    /// The scope's task was cancelled: wake what it waits on (but its own connection's
    /// messages, which are never registered: see ``watch(_:)``).
    func cancel() {
        let buffers = state.withLockedValue { state -> [WebSocketMessageBuffer] in
            state.cancelled = true
            return state.buffers
        }
        for buffer in buffers { buffer.cancelWaiter(viaScope: true) }
    }
}

/// An iterator's memo of whether the task that waits on its buffer is the running scope's own
/// (whose cancellation the scope watches): looked up (a task-local and a lock), and the buffer
/// registered with the scope, only when the waiting task changes; another wait by the same task
/// costs a read of the current task.
///
/// It keeps the task it is about, only to compare it with the next waiting task (never to act on
/// it): an `UnsafeCurrentTask` holds its task strongly, so the address cannot pass to another
/// task meanwhile. An iterator lives in the task that iterates, so this keeps no task alive
/// longer than its iterator, and a scope's task ends right after its handler.
struct WebSocketScopeWatch {
    /// The task the memo is about.
    private var task: UnsafeCurrentTask?
    private var viaScope = false

    /// Whether the calling task is the running scope's own, its cancellation watched for
    /// `buffer`; `cancelled` when the scope was cancelled before `buffer` registered (this wait
    /// ends the iteration, so there is no later one to tell).
    mutating func check(for buffer: WebSocketMessageBuffer) -> (viaScope: Bool, cancelled: Bool) {
        withUnsafeCurrentTask { current in
            guard let current else { return (false, false) }
            if let task, task == current { return (viaScope, false) }
            task = current
            guard let scope = WebSocketScopeCancellation.current, scope.isOwned(by: current) else {
                viaScope = false
                return (false, false)
            }
            viaScope = true
            return (true, scope.watch(buffer))
        }
    }
}
