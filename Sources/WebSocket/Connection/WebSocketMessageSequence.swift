import NIOConcurrencyHelpers
import NIOCore

/// The inbound messages of a connection as an `AsyncSequence`, with backpressure: when more
/// than 16 messages wait for the consumer, the connection stops reading from its socket until
/// the consumer is down to 4 (the bytes read already are still parsed and queued: at most one
/// read's worth more).
///
/// The iterator takes every waiting message in one step and hands them out one by one without
/// locking or suspending, so a consumer that keeps up pays one hand-over per batch of messages
/// read together, not one per message. The messages of a batch count as waiting until the
/// consumer comes back for more.
///
/// One iterator per connection: a second `for try await` over ``WebSocketConnection/messages``
/// (at the same time or after the first) throws ``WebSocketError/Code-swift.struct/alreadyIterating``
/// at its first step instead of sharing or losing messages.
///
/// Cancelling the iterating task ends the iteration with `CancellationError` the next time it
/// must wait (at once if it is waiting); the messages that waited are dropped then, as when the
/// loop is left with `break`.
public struct WebSocketMessageSequence: AsyncSequence, Sendable {
    public typealias Element = WebSocketMessage

    let buffer: WebSocketMessageBuffer
    private let connection: WebSocketConnection

    init(connection: WebSocketConnection) {
        self.connection = connection
        self.buffer = WebSocketMessageBuffer(connection: connection)
    }

    /// The iterator; one per connection.
    public struct AsyncIterator: AsyncIteratorProtocol {
        /// Nil for a refused (second) iterator.
        private let consumer: Consumer?
        /// The messages of the last batch not yet returned; touched by this iterator only.
        private var batch = CircularBuffer<WebSocketMessage>(initialCapacity: 4)
        /// Set for an iterator that may not run (a second one): its first `next()` throws it.
        private var refusal: WebSocketError?
        /// Whether the waiting task is a scoped handler's own (see ``WebSocketScopeWatch``).
        private var scopeWatch = WebSocketScopeWatch()

        init(buffer: WebSocketMessageBuffer) {
            consumer = Consumer(buffer: buffer)
        }

        init(refusal: WebSocketError) {
            consumer = nil
            self.refusal = refusal
        }

        /// The next message; `nil` once the connection has closed.
        public nonisolated(nonsending) mutating func next() async throws -> WebSocketMessage? {
            try await nextMessage()
        }

        /// The next message, on the caller's isolation: what `for try await` calls. Nonsending
        /// rather than isolated to `actor`: a function with an `isolated` parameter switches to
        /// it on entry (a runtime call per message even when already there), and the protocol's
        /// default would call ``next()`` through its nonisolated requirement, a hop off the
        /// caller's executor and back.
        public nonisolated(nonsending) mutating func next(isolation actor: (any Actor)?) async throws(any Error) -> WebSocketMessage? {
            try await nextMessage()
        }

        private nonisolated(nonsending) mutating func nextMessage() async throws -> WebSocketMessage? {
            if let message = batch.popFirst() { return message }
            if let refusal {
                self.refusal = nil
                throw refusal
            }
            guard let buffer = consumer?.buffer else { return nil }
            return try await buffer.next(refilling: &batch, watch: &scopeWatch)
        }
    }

    /// The iterator: the first one made hands waiting messages over; any later one throws
    /// ``WebSocketError/Code-swift.struct/alreadyIterating`` when first asked for a message.
    public func makeAsyncIterator() -> AsyncIterator {
        guard connection.claimMessageIterator() else {
            return AsyncIterator(
                refusal: WebSocketError(
                    .alreadyIterating,
                    "connection.messages is already being iterated: a connection's messages can be iterated once; "
                        + "share one loop (or register onMessage handlers, which may be many)"))
        }
        connection.consumerAttached()
        return AsyncIterator(buffer: buffer)
    }

    /// Ends the iteration when the iterator is dropped (a `break` out of the loop, say), so
    /// that the connection does not stay paused for a consumer that is gone.
    final class Consumer {
        let buffer: WebSocketMessageBuffer
        init(buffer: WebSocketMessageBuffer) { self.buffer = buffer }
        deinit { buffer.terminate() }
    }
}
