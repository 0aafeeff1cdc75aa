import NIOCore

/// The inbound messages of a connection as an `AsyncSequence`, with backpressure: when more
/// than 16 messages wait for the consumer, the connection stops reading from its socket until
/// the consumer is down to 4.
///
/// One iterator per connection: a second `for try await` over ``WebSocketConnection/messages``
/// (at the same time or after the first) throws ``WebSocketError/Code-swift.struct/alreadyIterating``
/// at its first step instead of sharing or losing messages.
public struct WebSocketMessageSequence: AsyncSequence, Sendable {
    public typealias Element = WebSocketMessage
    typealias Producer = NIOThrowingAsyncSequenceProducer<
        WebSocketMessage, any Error, NIOAsyncSequenceProducerBackPressureStrategies.HighLowWatermark, Delegate
    >
    typealias Source = Producer.Source

    private let producer: Producer
    private let connection: WebSocketConnection

    static func make(connection: WebSocketConnection) -> (WebSocketMessageSequence, Source) {
        let result = Producer.makeSequence(
            elementType: WebSocketMessage.self,
            failureType: (any Error).self,
            backPressureStrategy: .init(lowWatermark: 4, highWatermark: 16),
            finishOnDeinit: false,
            delegate: Delegate(connection: connection))
        return (WebSocketMessageSequence(producer: result.sequence, connection: connection), result.source)
    }

    /// The iterator; one per connection.
    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: Producer.AsyncIterator?
        /// Set for an iterator that may not run (a second one): its first `next()` throws it.
        var refusal: WebSocketError?

        /// The next message; `nil` once the connection has closed.
        public mutating func next() async throws -> WebSocketMessage? {
            if let refusal {
                self.refusal = nil
                throw refusal
            }
            return try await base?.next()
        }
    }

    /// The iterator: the first one made hands waiting messages over; any later one throws
    /// ``WebSocketError/Code-swift.struct/alreadyIterating`` when first asked for a message.
    public func makeAsyncIterator() -> AsyncIterator {
        // NIO's producer allows one iterator and traps on a second: never let it see one.
        guard connection.claimMessageIterator() else {
            return AsyncIterator(
                base: nil,
                refusal: WebSocketError(
                    .alreadyIterating,
                    "connection.messages is already being iterated: a connection's messages can be iterated once; "
                        + "share one loop (or register onMessage handlers, which may be many)"))
        }
        connection.consumerAttached()
        return AsyncIterator(base: producer.makeAsyncIterator(), refusal: nil)
    }

    struct Delegate: NIOAsyncSequenceProducerDelegate {
        let connection: WebSocketConnection

        func produceMore() {
            connection.onLoop { $0.setStreamBackpressure(false) }
        }

        func didTerminate() {
            // The consumer stopped iterating; keep the connection readable for other listeners.
            connection.onLoop { $0.setStreamBackpressure(false) }
        }
    }
}
