import NIOConcurrencyHelpers
import PostgresNIO
import WebSocket

/// A query that cannot hang the broker: it runs with a deadline, and past it the connection is
/// closed (which fails the query) and a timeout is thrown, so the loop reconnects.
///
/// Needed because a query written to a connection PostgreSQL has just cut (an immediate
/// shutdown) can wait forever in postgres-nio 1.33: seen here, the writer's first batch after
/// `pg_ctl stop -m immediate` never completed, and nothing was stored after the restart.
extension WebSocketPostgresBroker {
    struct QueryTimeout: Error, CustomStringConvertible {
        let timeout: Duration
        var description: String { "no answer from PostgreSQL within \(timeout)" }
    }

    struct ConnectionClosed: Error, CustomStringConvertible {
        var description: String { "the connection is closed" }
    }

    /// Where one ``withDeadline(on:_:)`` call stands. Cancellation may come at any moment,
    /// before the continuation exists too (a task cancelled before it called, or between the
    /// handler's install and the continuation's store): then the call ends at once, with
    /// `CancellationError`, instead of waiting for a resumption nobody will make.
    enum DeadlineState<T: Sendable> {
        /// Not yet waiting.
        case idle
        /// Waiting for the query or the timer.
        case waiting(CheckedContinuation<T, any Error>)
        /// Cancelled before it waited: the continuation is resumed as soon as it is stored.
        case cancelled
        /// Resumed (or to be resumed by whoever set it).
        case done
    }

    /// Runs `body` with ``Configuration/queryTimeout``: returns its result, or throws
    /// ``QueryTimeout`` (and closes `connection`) when it takes longer, or `CancellationError`
    /// when the calling task is cancelled, also before this call (it never waits then).
    func withDeadline<T: Sendable>(
        on connection: PostgresConnection, _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        if connection.isClosed { throw ConnectionClosed() }
        try Task.checkCancellation()
        let timeout = configuration.queryTimeout
        let outcome = NIOLockedValueBox(DeadlineState<T>.idle)
        let work = NIOLockedValueBox<Task<Void, Never>?>(nil)
        let timer = NIOLockedValueBox<Task<Void, Never>?>(nil)
        /// Resumes the waiting continuation once; false when it was resumed already, or when
        /// there is none yet (a cancellation: the state says so, and the store resumes).
        let finish = { @Sendable (result: Result<T, any Error>) -> Bool in
            let continuation = outcome.withLockedValue { state -> CheckedContinuation<T, any Error>? in
                switch state {
                case .waiting(let continuation):
                    state = .done
                    return continuation
                case .idle:
                    if case .failure(let error) = result, error is CancellationError { state = .cancelled }
                    return nil
                case .cancelled, .done:
                    return nil
                }
            }
            continuation?.resume(with: result)
            return continuation != nil
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
                let cancelledEarly = outcome.withLockedValue { state -> Bool in
                    if case .cancelled = state {
                        state = .done
                        return true
                    }
                    state = .waiting(continuation)
                    return false
                }
                if cancelledEarly {
                    continuation.resume(throwing: CancellationError())
                    return
                }
                work.withLockedValue {
                    $0 = Task {
                        let result: Result<T, any Error>
                        do { result = .success(try await body()) } catch { result = .failure(error) }
                        if finish(result) { timer.withLockedValue { $0?.cancel() } }
                    }
                }
                timer.withLockedValue {
                    $0 = Task {
                        guard (try? await Task.sleep(for: timeout)) != nil else { return }
                        if finish(.failure(QueryTimeout(timeout: timeout))) {
                            work.withLockedValue { $0?.cancel() }
                            try? await connection.close()
                        }
                    }
                }
                // A cancellation between the store and the tasks' making resumed already and
                // found no task to cancel: cancel them now (nothing waits for them).
                if Task.isCancelled {
                    work.withLockedValue { $0?.cancel() }
                    timer.withLockedValue { $0?.cancel() }
                }
            }
        } onCancel: {
            // Before the store too: `finish` then marks the state cancelled, and the store
            // resumes at once. The tasks may not exist yet; cancelling what exists is enough
            // (the ones made after see the resumed state and finish nothing).
            _ = finish(.failure(CancellationError()))
            work.withLockedValue { $0?.cancel() }
            timer.withLockedValue { $0?.cancel() }
        }
    }
}
