import NIOCore

// A server connection's side of topics (see `WebSocketServer.publish(_:to:compress:)`).
extension WebSocketConnection {
    /// Subscribes this connection to `topic`: from the moment this returns, every message
    /// published to it reaches this connection. Returns false when it was subscribed already, or
    /// when the connection is closing or closed (then nothing happens). A connection leaves all
    /// its topics by itself when it starts closing, before its `close` event.
    ///
    /// Throws ``WebSocketError/Code-swift.struct/invalidArgument`` for a topic name over 1,024
    /// bytes of UTF-8 or containing U+0000 (nothing is subscribed), and for a client's
    /// connection: topics are a server's.
    @discardableResult
    public func subscribe(to topic: String) throws(WebSocketError) -> Bool {
        guard let topicRegistry else {
            throw WebSocketError(.invalidArgument, "Topics belong to a server: this connection is a client's and cannot subscribe")
        }
        return try topicRegistry.subscribe(self, to: topic)
    }

    /// Unsubscribes this connection from `topic`: no message published after this returns
    /// reaches it. Returns false when it was not subscribed.
    @discardableResult
    public func unsubscribe(from topic: String) -> Bool {
        topicRegistry?.unsubscribe(self, from: topic) ?? false
    }

    /// The topics this connection is subscribed to.
    public var topics: Set<String> {
        topicRegistry?.topics(of: self) ?? []
    }

    /// Sends a message to every other subscriber of `topic` on this connection's server, and
    /// through its broker to the other servers of a cluster (this connection excluded, as
    /// uWebSockets' `ws.publish` does; use
    /// ``WebSocketServer/publish(_:to:compress:)-(WebSocketMessage,_,_)`` to include it). Returns
    /// how many connections of this server it was queued for. Throws what the server's `publish`
    /// throws, and ``WebSocketError/Code-swift.struct/invalidArgument`` on a client's connection.
    @discardableResult
    public func publish(_ message: WebSocketMessage, to topic: String, compress: Bool = true) throws(WebSocketError) -> Int {
        switch message {
        case .utf8(let text): try publishPayload(.text(text), to: topic, compress: compress)
        case .binary(let bytes): try publishPayload(.binary(bytes), to: topic, compress: compress)
        }
    }

    /// Sends a text message to every other subscriber of `topic`; see
    /// ``publish(_:to:compress:)-(WebSocketMessage,_,_)``.
    @discardableResult
    public func publish(_ text: String, to topic: String, compress: Bool = true) throws(WebSocketError) -> Int {
        try publishPayload(.text(text), to: topic, compress: compress)
    }

    /// Sends a binary message to every other subscriber of `topic`; see
    /// ``publish(_:to:compress:)-(WebSocketMessage,_,_)``.
    @discardableResult
    public func publish(_ bytes: ByteBuffer, to topic: String, compress: Bool = true) throws(WebSocketError) -> Int {
        try publishPayload(.binary(bytes), to: topic, compress: compress)
    }

    private func publishPayload(_ payload: WebSocketPublication.Payload, to topic: String, compress: Bool) throws(WebSocketError) -> Int {
        guard let topicRegistry else {
            throw WebSocketError(.invalidArgument, "Topics belong to a server: this connection is a client's and cannot publish")
        }
        return try topicRegistry.publish(payload, to: topic, compress: compress, sender: self)
    }

    /// How many published messages this connection did not get because it read too slowly
    /// (see ``WebSocketServer/Configuration/maxBackpressure``).
    public var skippedPublishedMessages: Int {
        state.withLockedValue { $0.skippedPublications }
    }

    func recordSkippedPublications(_ count: Int) {
        state.withLockedValue { $0.skippedPublications += count }
    }
}
