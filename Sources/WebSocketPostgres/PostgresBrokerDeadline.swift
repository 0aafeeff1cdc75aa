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

    func withDeadline<T: Sendable>(
        on connection: PostgresConnection, _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        if connection.isClosed { throw ConnectionClosed() }
        let timeout = configuration.queryTimeout
        let outcome = NIOLockedValueBox<(continuation: CheckedContinuation<T, any Error>?, done: Bool)>((nil, false))
        let finish = { @Sendable (result: Result<T, any Error>) -> Bool in
            let continuation = outcome.withLockedValue { state -> CheckedContinuation<T, any Error>? in
                guard !state.done else { return nil }
                state.done = true
                defer { state.continuation = nil }
                return state.continuation
            }
            continuation?.resume(with: result)
            return continuation != nil
        }
        let work = NIOLockedValueBox<Task<Void, Never>?>(nil)
        let timer = NIOLockedValueBox<Task<Void, Never>?>(nil)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
                outcome.withLockedValue { $0.continuation = continuation }
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
            }
        } onCancel: {
            if finish(.failure(CancellationError())) {
                work.withLockedValue { $0?.cancel() }
                timer.withLockedValue { $0?.cancel() }
            }
        }
    }
}
