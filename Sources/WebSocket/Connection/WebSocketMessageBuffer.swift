import NIOConcurrencyHelpers
import NIOCore

/// The messages between the event loop (which yields them) and the one iterator of
/// ``WebSocketMessageSequence`` (which takes them in batches), with the backpressure signal.
final class WebSocketMessageBuffer: Sendable {
    /// Pause reading when this many messages wait (taken ones included until the iterator
    /// comes back); resume when at most ``lowWatermark`` do.
    static let highWatermark = 16
    static let lowWatermark = 4

    private struct State {
        /// Messages not yet taken by the iterator.
        var messages = CircularBuffer<WebSocketMessage>(initialCapacity: 4)
        /// The size of the batch the iterator took last: waiting until it comes back.
        var handedOut = 0
        /// The iterator, suspended until a message or the end arrives.
        var waiter: UnsafeContinuation<WebSocketMessage?, any Error>?
        /// The connection closed: after the waiting messages, the iteration ends (with this error).
        var finished = false
        var failure: (any Error)?
        /// The iteration is over (ended, cancelled, or the iterator is gone): yields are dropped.
        var terminated = false
        /// Whether the last yield told the connection to stop reading.
        var stopped = false
        /// The scoped handler's task that iterates was cancelled (see ``WebSocketScopeCancellation``).
        var scopeCancelled = false
        /// Whether the waiter relies on the scope for its cancellation (else it has a handler).
        var waiterViaScope = false
    }

    private let state = NIOLockedValueBox(State())
    private let connection: WebSocketConnection
    /// Messages yielded on the event loop during a read, handed over together by ``publish()``:
    /// one lock and at most one wake-up per read instead of one per message. Touched on the
    /// event loop only.
    nonisolated(unsafe) private var staged = CircularBuffer<WebSocketMessage>(initialCapacity: 4)
    /// Storage ``publish()`` swaps in for `staged`, so that a read allocates nothing. Loop only.
    nonisolated(unsafe) private var spare = CircularBuffer<WebSocketMessage>(initialCapacity: 4)

    init(connection: WebSocketConnection) {
        self.connection = connection
    }

    /// What a yield tells the connection.
    enum YieldResult {
        case produceMore
        case stopProducing
        /// Nobody iterates any more: the message was dropped.
        case dropped
        /// Kept on the event loop until ``publish()``, which the read calls at its end.
        case staged
    }

    // MARK: Producer (the event loop)

    /// Hands `message` to the iterator: on the event loop it waits for the read's
    /// ``publish()``; elsewhere it goes at once.
    func yield(_ message: WebSocketMessage) -> YieldResult {
        if connection.eventLoop.inEventLoop {
            staged.append(message)
            return .staged
        }
        return yieldNow(message)
    }

    /// Hands the messages of this read to the iterator (the first at once if it waits);
    /// `.stopProducing` when more than ``highWatermark`` wait then. On the event loop.
    func publish() -> YieldResult {
        guard !staged.isEmpty else { return .produceMore }
        var batch = spare
        swap(&batch, &staged)
        let result = handOver(&batch)
        // `batch` is empty now: the next read's storage.
        spare = batch
        return result
    }

    /// Hands `message` to the iterator at once (a yield off the event loop).
    private func yieldNow(_ message: WebSocketMessage) -> YieldResult {
        var batch = CircularBuffer<WebSocketMessage>(initialCapacity: 1)
        batch.append(message)
        return handOver(&batch)
    }

    /// Moves `batch` (not empty) to the iterator: its first message at once if the iterator
    /// waits, the rest to the queue. Leaves `batch` empty, its storage kept.
    private func handOver(_ batch: inout CircularBuffer<WebSocketMessage>) -> YieldResult {
        let (waiter, first, result) = state.withLockedValue {
            state -> (UnsafeContinuation<WebSocketMessage?, any Error>?, WebSocketMessage?, YieldResult) in
            if state.terminated || state.finished {
                batch.removeAll(keepingCapacity: true)
                return (nil, nil, .dropped)
            }
            var waiter: UnsafeContinuation<WebSocketMessage?, any Error>?
            var first: WebSocketMessage?
            if let waiting = state.waiter {
                state.waiter = nil
                waiter = waiting
                first = batch.removeFirst()
                state.handedOut = 1
            }
            if state.messages.isEmpty {
                swap(&state.messages, &batch)
            } else {
                state.messages.append(contentsOf: batch)
                batch.removeAll(keepingCapacity: true)
            }
            guard state.messages.count + state.handedOut > Self.highWatermark else { return (waiter, first, .produceMore) }
            state.stopped = true
            return (waiter, first, .stopProducing)
        }
        if let waiter { waiter.resume(returning: first) }
        return result
    }

    /// Ends the iteration after the waiting messages: normally, or by throwing `error`.
    func finish(_ error: (any Error)? = nil) {
        // The messages of the read that ended the connection come first.
        if connection.eventLoop.inEventLoop { _ = publish() }
        let waiter = state.withLockedValue { state -> UnsafeContinuation<WebSocketMessage?, any Error>? in
            guard !state.finished, !state.terminated else { return nil }
            state.finished = true
            state.failure = error
            guard let waiter = state.waiter else { return nil }
            // Waiting means nothing is buffered: the end is next.
            state.waiter = nil
            state.terminated = true
            state.failure = nil
            return waiter
        }
        if let error { waiter?.resume(throwing: error) } else { waiter?.resume(returning: nil) }
    }

    /// Whether the iterator waits for a message (for tests).
    var isWaiting: Bool { state.withLockedValue { $0.waiter != nil } }

    /// The messages that count as waiting: queued, or taken and not yet all returned (for tests).
    var waitingCount: Int { state.withLockedValue { $0.messages.count + $0.handedOut } }

    // MARK: Consumer (the iterator)

    /// What the iterator does after looking at the buffer; `resumeReading` when the connection
    /// stopped reading and few enough messages wait now.
    private enum Step {
        case message(WebSocketMessage, resumeReading: Bool)
        /// The iteration is over: return nil, or throw.
        case end((any Error)?, resumeReading: Bool)
        /// Nothing waits (the continuation is stored).
        case wait(resumeReading: Bool)
    }

    /// The iterator's buffer is empty: takes every waiting message into `batch` and returns the
    /// first, or waits for one.
    ///
    /// A scoped handler's own task has its cancellation watched once for its whole life (see
    /// ``WebSocketScopeCancellation``): it looks and waits under one lock. Any other task looks
    /// first, and installs a cancellation handler only to wait, which costs four more executor
    /// checks per wait (each a lock of the task's status records when the task prefers an
    /// executor): a fifth of the async echo's time on W1.
    nonisolated(nonsending) func next(
        refilling batch: inout CircularBuffer<WebSocketMessage>, watch: inout WebSocketScopeWatch
    ) async throws -> WebSocketMessage? {
        let (viaScope, scopeCancelled) = watch.check(for: self)
        if viaScope { return try await suspend(viaScope: true, cancelled: scopeCancelled, refilling: &batch) }
        let cancelled = Task.isCancelled
        let step = state.withLockedValue { state -> Step? in
            if state.messages.isEmpty && !state.finished && !state.terminated && !cancelled { return nil }
            return Self.take(&state, into: &batch, cancelled: cancelled)
        }
        guard let step else { return try await waitWithCancellationHandler(refilling: &batch) }
        return try perform(step)
    }

    private func perform(_ step: Step) throws -> WebSocketMessage? {
        switch step {
        case .message(let message, let resumeReading):
            if resumeReading { connection.streamCanResume() }
            return message
        case .end(let error, let resumeReading):
            if resumeReading { connection.streamCanResume() }
            if let error { throw error }
            return nil
        case .wait(let resumeReading):
            if resumeReading { connection.streamCanResume() }
            return nil
        }
    }

    /// The step for an empty iterator buffer: the waiting messages go to `batch` (but the first,
    /// returned); `cancelled` ends the iteration; nothing waiting stores `waiter`.
    private static func take(
        _ state: inout State, into batch: inout CircularBuffer<WebSocketMessage>, cancelled: Bool,
        waiter: UnsafeContinuation<WebSocketMessage?, any Error>? = nil
    ) -> Step {
        // Coming back means the last batch was consumed.
        state.handedOut = 0
        if cancelled && !state.terminated {
            state.terminated = true
            state.messages.removeAll()
            return .end(CancellationError(), resumeReading: stoppedUntilNow(&state))
        }
        if let first = state.messages.popFirst() {
            swap(&batch, &state.messages)
            state.handedOut = batch.count + 1
            return .message(first, resumeReading: resumeIfLow(&state))
        }
        if state.finished || state.terminated {
            let error = state.terminated ? nil : state.failure
            state.terminated = true
            state.failure = nil
            return .end(error, resumeReading: stoppedUntilNow(&state))
        }
        state.waiter = waiter
        return .wait(resumeReading: resumeIfLow(&state))
    }

    /// Whether reading may resume now (it stopped, and few enough wait).
    private static func resumeIfLow(_ state: inout State) -> Bool {
        guard state.messages.count + state.handedOut <= lowWatermark else { return false }
        return stoppedUntilNow(&state)
    }

    private static func stoppedUntilNow(_ state: inout State) -> Bool {
        defer { state.stopped = false }
        return state.stopped
    }

    /// Waits with a cancellation handler of its own. Isolated to the caller's actor, captured by
    /// the operation so that it runs there too (a closure in a `nonisolated(nonsending)` function
    /// would run on the generic executor: a hop off the caller's executor and back per wait).
    private func waitWithCancellationHandler(
        refilling batch: inout CircularBuffer<WebSocketMessage>, isolation: isolated (any Actor)? = #isolation
    ) async throws -> WebSocketMessage? {
        try await withTaskCancellationHandler {
            _ = isolation
            return try await suspend(viaScope: false, cancelled: false, refilling: &batch)
        } onCancel: {
            cancelWaiter(viaScope: false)
        }
    }

    /// Takes what waits into `batch` (returning the first), or the end, or stores the
    /// continuation until the event loop yields, the connection ends or the task is cancelled
    /// (`viaScope`: through its scope; else through the caller's cancellation handler).
    private nonisolated(nonsending) func suspend(
        viaScope: Bool, cancelled: Bool, refilling batch: inout CircularBuffer<WebSocketMessage>
    ) async throws -> WebSocketMessage? {
        try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<WebSocketMessage?, any Error>) in
            // Under the lock that `yield` and the cancellation take: a message may have come
            // since the caller looked, or the cancellation (whose handler found no waiter).
            let taskCancelled = cancelled || (!viaScope && Task.isCancelled)
            let step = state.withLockedValue { state -> Step in
                state.waiterViaScope = viaScope
                let cancelled = taskCancelled || (viaScope && state.scopeCancelled)
                return Self.take(&state, into: &batch, cancelled: cancelled, waiter: continuation)
            }
            do {
                if case .wait = step {
                    _ = try perform(step)
                } else {
                    continuation.resume(returning: try perform(step))
                }
            } catch {
                continuation.resume(throwing: error)
            }
        }
    }

    /// The waiting task was cancelled: the iteration ends with `CancellationError`. A scope's
    /// cancellation (`viaScope`) also ends the waits its task makes from now on, and wakes only
    /// a waiter that relies on it.
    func cancelWaiter(viaScope: Bool) {
        let (waiter, resumeReading) = state.withLockedValue { state -> (UnsafeContinuation<WebSocketMessage?, any Error>?, Bool) in
            if viaScope { state.scopeCancelled = true }
            guard let waiter = state.waiter, state.waiterViaScope == viaScope else { return (nil, false) }
            state.waiter = nil
            state.terminated = true
            return (waiter, Self.stoppedUntilNow(&state))
        }
        if resumeReading { connection.streamCanResume() }
        waiter?.resume(throwing: CancellationError())
    }

    /// The iterator is gone: drop what waits and let the connection read on.
    func terminate() {
        let wasStopped = state.withLockedValue { state -> Bool in
            state.terminated = true
            state.messages.removeAll()
            defer { state.stopped = false }
            return state.stopped
        }
        if wasStopped { connection.streamCanResume() }
    }
}
