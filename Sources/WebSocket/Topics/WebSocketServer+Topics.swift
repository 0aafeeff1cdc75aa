import NIOCore

// Topics (publish/subscribe) of a server: connections subscribe with
// `WebSocketConnection.subscribe(to:)`; anyone publishes here, from any thread or task.
extension WebSocketServer {
    /// Sends a message to every connection subscribed to `topic`, whatever its event loop and
    /// transport (ws://, wss://, HTTP/2 streams). Returns how many connections it was queued
    /// for (0 when the topic has no subscriber: then it costs a lookup and allocates nothing).
    ///
    /// The message is framed once, by the server's `fragmentOutgoingMessages` and
    /// `fragmentationThreshold` (it may be larger than `maxReceivedMessageSize`: that limit is
    /// for what peers send), and every subscriber's write shares those bytes. With
    /// permessage-deflate, subscribers whose compressor keeps no context between messages share
    /// one compressed copy; the others compress it themselves. `compress: false` sends it
    /// uncompressed to all.
    ///
    /// Messages one publisher publishes to a topic reach each subscriber in publish order. A
    /// subscriber that reads too slowly meets ``Configuration/backpressurePolicy``. Returns at
    /// once, also in `async` code: delivery happens on each subscriber's event loop.
    @discardableResult
    public func publish(_ message: WebSocketMessage, to topic: String, compress: Bool = true) -> Int {
        switch message {
        case .utf8(let text): topicRegistry.publish(.text(text), to: topic, compress: compress, sender: nil)
        case .binary(let bytes): topicRegistry.publish(.binary(bytes), to: topic, compress: compress, sender: nil)
        }
    }

    /// Sends a text message to every subscriber of `topic`; see
    /// ``publish(_:to:compress:)-(WebSocketMessage,_,_)``.
    @discardableResult
    public func publish(_ text: String, to topic: String, compress: Bool = true) -> Int {
        topicRegistry.publish(.text(text), to: topic, compress: compress, sender: nil)
    }

    /// Sends a binary message to every subscriber of `topic`; see
    /// ``publish(_:to:compress:)-(WebSocketMessage,_,_)``.
    @discardableResult
    public func publish(_ bytes: ByteBuffer, to topic: String, compress: Bool = true) -> Int {
        topicRegistry.publish(.binary(bytes), to: topic, compress: compress, sender: nil)
    }

    /// The number of connections subscribed to `topic`.
    public func subscriberCount(of topic: String) -> Int {
        topicRegistry.subscriberCount(of: topic)
    }

    /// The topics with at least one subscriber, sorted.
    public var topics: [String] {
        topicRegistry.topicNames
    }

    /// How many published messages were skipped for connections that read too slowly (see
    /// ``Configuration/maxBackpressure``), counted once per connection and message.
    public var skippedPublishedMessages: Int {
        topicRegistry.skippedCount
    }
}
