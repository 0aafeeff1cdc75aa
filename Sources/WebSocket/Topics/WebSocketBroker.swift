import NIOCore

/// Carries a server's publications to the other servers (nodes) of a cluster, and theirs to it.
///
/// A server publishes to its own subscribers at once, whatever the broker; the broker sends each
/// publication to the other nodes, which deliver it to theirs. The default,
/// ``WebSocketLocalBroker``, has no other node: topics stay inside one process. The PostgreSQL
/// broker of the `WebSocketPostgres` product spans several processes; write your own (Redis,
/// NATS) by conforming to this protocol:
///
/// - ``start(delivering:)`` runs once, before the server listens: connect, and from then on hand
///   every publication of another node to ``WebSocketBrokerDelivery/deliver(_:)``, each exactly
///   once and in each publisher's order. Throw when the broker cannot work (a clear message: it
///   fails `listen`).
/// - ``publish(_:)`` gets each publication made on this node. It must not block: queue it and
///   return. Throw to refuse it (for instance when the queue is full); the publish then fails
///   on this node too, and no subscriber gets it.
/// - ``shutDown()`` runs when the server shuts down.
public protocol WebSocketBroker: Sendable {
    /// Starts the broker; `delivering` takes the publications of other nodes.
    func start(delivering: WebSocketBrokerDelivery) async throws
    /// A publication made on this node (its own subscribers have it already).
    func publish(_ publication: WebSocketBrokerPublication) throws(WebSocketError)
    /// Stops the broker.
    func shutDown() async
}

/// A publication as it travels between the nodes of a cluster.
public struct WebSocketBrokerPublication: Sendable, Equatable {
    /// The topic it was published to.
    public var topic: String
    /// The message.
    public var message: WebSocketMessage

    /// Creates a publication.
    public init(topic: String, message: WebSocketMessage) {
        self.topic = topic
        self.message = message
    }
}

/// Where a broker hands the publications of other nodes: this node's subscribers.
public struct WebSocketBrokerDelivery: Sendable {
    let registry: WebSocketTopicRegistry

    /// Delivers a publication of another node to this node's subscribers of its topic (it does
    /// not go back to the broker). Returns how many connections it was queued for.
    @discardableResult
    public func deliver(_ publication: WebSocketBrokerPublication) -> Int {
        switch publication.message {
        case .utf8(let text): registry.deliver(.text(text), to: publication.topic, compress: true, sender: nil)
        case .binary(let bytes): registry.deliver(.binary(bytes), to: publication.topic, compress: true, sender: nil)
        }
    }

    /// Whether this node has a subscriber of `topic`: a broker may skip (or not even fetch) the
    /// publications of topics nobody here listens to.
    public func hasSubscribers(_ topic: String) -> Bool {
        registry.subscriberCount(of: topic) > 0
    }

    /// The topics this node has subscribers of.
    public var topics: [String] {
        registry.topicNames
    }
}

/// The default broker: no other node, nothing to run. Topics stay inside one server process.
public struct WebSocketLocalBroker: WebSocketBroker {
    /// Creates the broker.
    public init() {}

    /// Nothing to start.
    public func start(delivering: WebSocketBrokerDelivery) async throws {}

    /// Nothing to send: the local subscribers have the publication already.
    public func publish(_ publication: WebSocketBrokerPublication) throws(WebSocketError) {}

    /// Nothing to stop.
    public func shutDown() async {}
}
