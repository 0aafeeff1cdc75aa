import Foundation
import NIOConcurrencyHelpers
import PostgresNIO
import Testing
import WebSocket
@testable import WebSocketPostgres

// The broker's query deadline and cancellation (issue 29 item 8): a cancellation that comes
// before withDeadline stores its continuation must still end the call. Before the fix the
// cancellation handler ran first, found no continuation, marked the call done, and the
// continuation stored after it was never resumed: the call (and shutDown, which awaits the
// broker's tasks) hung for ever.
extension ClusterTests {
    /// What a call made in a task ended with, for a bounded wait (a hung call never sets it).
    final class Outcome: Sendable {
        private let box = NIOLockedValueBox<String?>(nil)
        func set(_ value: String) { box.withLockedValue { $0 = value } }
        var value: String? { box.withLockedValue { $0 } }
    }

    static func deadlineBroker(_ postgres: ThrowawayPostgres) -> WebSocketPostgresBroker {
        var configuration = WebSocketPostgresBroker.Configuration(postgres: postgres.configuration)
        // Long enough that the timer cannot be what ends a call within the test's bound.
        configuration.queryTimeout = .seconds(30)
        return WebSocketPostgresBroker(configuration: configuration)
    }

    @Test("withDeadline in a task cancelled before the call: throws CancellationError at once, the query never runs (before: never returned)")
    func deadlineCancelledBeforeTheCall() async throws {
        let postgres = try await ThrowawayPostgres.start()
        defer { postgres.destroy() }
        let broker = Self.deadlineBroker(postgres)
        let connection = try await broker.connect()
        let ran = NIOLockedValueBox(false)
        let outcome = Outcome()
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            do {
                let value = try await broker.withDeadline(on: connection) {
                    ran.withLockedValue { $0 = true }
                    return 1
                }
                outcome.set("returned \(value)")
            } catch is CancellationError {
                outcome.set("cancelled")
            } catch {
                outcome.set("threw \(error)")
            }
        }
        try await waitUntil(5, "the cancelled call to end (a hang: the continuation never resumed)") { outcome.value != nil }
        await task.value
        #expect(outcome.value == "cancelled")
        #expect(ran.withLockedValue { $0 } == false)
        try await connection.close()
    }

    @Test("withDeadline cancelled at every moment of its start (500 calls, each cancelled right after it was made, its body sleeping 30 s): every one ends within 5 s, with CancellationError or its result")
    func deadlineCancelledWhileStarting() async throws {
        let postgres = try await ThrowawayPostgres.start()
        defer { postgres.destroy() }
        let broker = Self.deadlineBroker(postgres)
        let connection = try await broker.connect()
        let ended = NIOLockedValueBox(0)
        let cancelled = NIOLockedValueBox(0)
        let calls = 500
        for round in 0..<calls {
            let task = Task {
                // Some rounds yield first, so that the cancel lands at varied moments.
                for _ in 0..<(round % 4) { await Task.yield() }
                do {
                    _ = try await broker.withDeadline(on: connection) {
                        try await Task.sleep(for: .seconds(30))
                        return 1
                    }
                } catch is CancellationError {
                    cancelled.withLockedValue { $0 += 1 }
                } catch {}
                ended.withLockedValue { $0 += 1 }
            }
            task.cancel()
        }
        try await waitUntil(5, "all \(calls) calls to end (\(ended.withLockedValue { $0 }) did)") { ended.withLockedValue { $0 } == calls }
        #expect(cancelled.withLockedValue { $0 } == calls, "every call's body sleeps 30 s: each can only have ended by its cancellation")
        try await connection.close()
    }
}
