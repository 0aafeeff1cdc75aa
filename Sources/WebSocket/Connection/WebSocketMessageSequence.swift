import NIOCore

/// The inbound messages of a connection as an `AsyncSequence`, with backpressure: when more
/// than 16 messages wait for the consumer, the connection stops reading from its socket until
/// the consumer is down to 4.
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

    /// The iterator; one per sequence.
    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: Producer.AsyncIterator

        /// The next message; `nil` once the connection has closed.
        public mutating func next() async throws -> WebSocketMessage? {
            try await base.next()
        }
    }

    /// The iterator (one per sequence); making it hands waiting messages over.
    public func makeAsyncIterator() -> AsyncIterator {
        connection.consumerAttached()
        return AsyncIterator(base: producer.makeAsyncIterator())
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
