import NIOCore

// Topics (publish/subscribe) of a server: connections subscribe with
// `WebSocketConnection.subscribe(to:)`; anyone publishes here, from any thread or task.
extension WebSocketServer {
    /// Sends a message to every connection subscribed to `topic`, whatever its event loop and
    /// transport (ws://, wss://, HTTP/2 streams), and, through the configured
    /// ``Configuration/broker``, to the subscribers on the other servers of a cluster. Returns
    /// how many connections of this server it was queued for (0 when the topic has no
    /// subscriber here: then it costs a lookup and allocates nothing).
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
    ///
    /// Throws ``WebSocketError/Code-swift.struct/invalidArgument`` for a topic name over 1,024
    /// bytes of UTF-8 or containing U+0000 (PostgreSQL's text cannot hold it), and
    /// ``WebSocketError/Code-swift.struct/brokerUnavailable`` when the cluster's broker refuses
    /// the message; either way nobody gets it.
    @discardableResult
    public func publish(_ message: WebSocketMessage, to topic: String, compress: Bool = true) throws(WebSocketError) -> Int {
        switch message {
        case .utf8(let text): try topicRegistry.publish(.text(text), to: topic, compress: compress, sender: nil)
        case .binary(let bytes): try topicRegistry.publish(.binary(bytes), to: topic, compress: compress, sender: nil)
        }
    }

    /// Sends a text message to every subscriber of `topic`; see
    /// ``publish(_:to:compress:)-(WebSocketMessage,_,_)``.
    @discardableResult
    public func publish(_ text: String, to topic: String, compress: Bool = true) throws(WebSocketError) -> Int {
        try topicRegistry.publish(.text(text), to: topic, compress: compress, sender: nil)
    }

    /// Sends a binary message to every subscriber of `topic`; see
    /// ``publish(_:to:compress:)-(WebSocketMessage,_,_)``.
    @discardableResult
    public func publish(_ bytes: ByteBuffer, to topic: String, compress: Bool = true) throws(WebSocketError) -> Int {
        try topicRegistry.publish(.binary(bytes), to: topic, compress: compress, sender: nil)
    }

    /// The number of connections of this server subscribed to `topic`.
    public func subscriberCount(of topic: String) -> Int {
        topicRegistry.subscriberCount(of: topic)
    }

    /// The topics with at least one subscriber on this server, sorted.
    public var topics: [String] {
        topicRegistry.topicNames
    }

    /// How many published messages were skipped for connections that read too slowly (see
    /// ``Configuration/maxBackpressure``), counted once per connection and message.
    public var skippedPublishedMessages: Int {
        topicRegistry.skippedCount
    }
}
