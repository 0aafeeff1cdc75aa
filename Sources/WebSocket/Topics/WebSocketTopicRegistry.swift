import NIOConcurrencyHelpers
import NIOCore

/// A server's topics: who is subscribed to what, and the delivery of published messages.
///
/// Publishing takes a snapshot of the topic's subscribers under one lock, frames the message
/// once per kind of subscriber (``WebSocketPublication``), and queues it in the inbox of every
/// event loop that has subscribers; each event loop drains its inbox in one task, so every
/// message queued for it within one tick goes out with one flush per connection (one `writev`).
/// Consecutive messages for the same subscribers are joined into one buffer, written to each of
/// them: one write per connection per drain, whatever the number of messages.
///
/// Order: one publisher's messages reach a loop's inbox in publish order, and each inbox is
/// drained in order. A subscription counts from the moment ``subscribe(_:to:)`` returns: the
/// snapshot of a later publish contains it, and that of a publish after ``unsubscribe(_:from:)``
/// returned does not.
final class WebSocketTopicRegistry: @unchecked Sendable {
    /// The longest topic name, in UTF-8 bytes.
    static let maxTopicBytes = 1024
    /// The most bytes of published messages one event loop's inbox holds before further
    /// publications to its subscribers are skipped (and counted as skipped for each): a
    /// publisher on another thread cannot outrun a loop without bound.
    static let maxInboxBytes = 64 << 20

    /// The limit and policy of ``WebSocketServer/Configuration/maxBackpressure``.
    let maxBackpressure: Int
    let backpressurePolicy: WebSocketServer.BackpressurePolicy
    /// Where messages are split into frames (nil: never), as every connection of the server does.
    let fragmentationThreshold: Int?
    /// The cluster's broker; nil for the local one (nothing to call).
    let broker: (any WebSocketBroker)?

    // Everything below is guarded by `lock`.
    let lock = NIOLock()
    /// Subscriptions and publications for swift-metrics (Metrics/); nil without a backend.
    let metrics = WebSocketTopicMetrics.resolve()
    var topics: [String: Topic] = [:]
    var memberships: [ObjectIdentifier: Set<String>] = [:]
    var inboxes: [ObjectIdentifier: Inbox] = [:]
    var skippedTotal = 0
    /// The broker's start, once: every `listen` awaits the same one.
    private var brokerStart: Task<Void, any Error>?

    init(configuration: WebSocketServer.Configuration) {
        self.maxBackpressure = max(0, configuration.maxBackpressure)
        self.backpressurePolicy = configuration.backpressurePolicy
        self.fragmentationThreshold = configuration.fragmentOutgoingMessages ? max(1, configuration.fragmentationThreshold) : nil
        self.broker = configuration.broker is WebSocketLocalBroker ? nil : configuration.broker
    }

    /// One subscriber: the connection and how it takes published messages.
    struct Subscriber {
        let connection: WebSocketConnection
        var id: ObjectIdentifier { ObjectIdentifier(connection) }
    }

    /// One topic's subscribers on one event loop.
    final class LoopSubscribers {
        let inbox: Inbox
        var list: [Subscriber] = []
        var positions: [ObjectIdentifier: Int] = [:]
        /// Changes with every subscribe and unsubscribe: publications with the same version went
        /// to the same subscribers and may be joined.
        var version: UInt64 = 0

        init(inbox: Inbox) {
            self.inbox = inbox
        }
    }

    struct Topic {
        var loops: [LoopSubscribers] = []
        var count = 0
        /// How many subscribers want each framing (usually a single entry).
        var framings: [WebSocketTopicFraming: Int] = [:]
    }

    /// One event loop's queue of publications to deliver.
    final class Inbox: @unchecked Sendable {
        let eventLoop: any EventLoop
        var pending: [Delivery] = []
        var pendingBytes = 0
        var scheduled = false

        init(eventLoop: any EventLoop) {
            self.eventLoop = eventLoop
        }
    }

    /// A publication for the subscribers of one topic on one event loop.
    struct Delivery {
        let publication: WebSocketPublication
        let subscribers: [Subscriber]
        let group: ObjectIdentifier
        let version: UInt64
    }

    // MARK: - Subscriptions

    /// Subscribes `connection`; false when it was subscribed already or is closing or closed.
    func subscribe(_ connection: WebSocketConnection, to topic: String) throws(WebSocketError) -> Bool {
        try Self.validate(topic)
        let id = ObjectIdentifier(connection)
        return lock.withLock {
            // Under this lock: leaveAll runs after `connected` turns false, so a subscription
            // made before that is removed, and none is made after.
            guard connection.connected, memberships[id, default: []].insert(topic).inserted else {
                if memberships[id]?.isEmpty == true { memberships[id] = nil }
                return false
            }
            let loopID = ObjectIdentifier(connection.eventLoop)
            let inbox = inboxes[loopID] ?? {
                let inbox = Inbox(eventLoop: connection.eventLoop)
                inboxes[loopID] = inbox
                return inbox
            }()
            var entry = topics[topic] ?? Topic()
            let group: LoopSubscribers
            if let existing = entry.loops.first(where: { $0.inbox === inbox }) {
                group = existing
            } else {
                group = LoopSubscribers(inbox: inbox)
                entry.loops.append(group)
            }
            group.positions[id] = group.list.count
            group.list.append(Subscriber(connection: connection))
            group.version &+= 1
            entry.count += 1
            entry.framings[connection.topicFraming, default: 0] += 1
            topics[topic] = entry
            metrics?.subscriptions.increment()
            return true
        }
    }

    /// Unsubscribes `connection`; false when it was not subscribed.
    func unsubscribe(_ connection: WebSocketConnection, from topic: String) -> Bool {
        let id = ObjectIdentifier(connection)
        return lock.withLock {
            guard memberships[id]?.remove(topic) != nil else { return false }
            if memberships[id]?.isEmpty == true { memberships[id] = nil }
            remove(connection, from: topic)
            return true
        }
    }

    /// Takes `connection` out of every topic (it is closing).
    func leaveAll(_ connection: WebSocketConnection) {
        lock.withLock {
            guard let topics = memberships.removeValue(forKey: ObjectIdentifier(connection)) else { return }
            for topic in topics { remove(connection, from: topic) }
        }
    }

    /// Removes one subscription from its topic (under the lock).
    private func remove(_ connection: WebSocketConnection, from topic: String) {
        let id = ObjectIdentifier(connection)
        guard var entry = topics[topic],
            let loopIndex = entry.loops.firstIndex(where: { $0.inbox.eventLoop === connection.eventLoop }),
            case let group = entry.loops[loopIndex],
            let position = group.positions.removeValue(forKey: id)
        else { return }
        let last = group.list.count - 1
        if position != last {
            group.list[position] = group.list[last]
            group.positions[group.list[position].id] = position
        }
        group.list.removeLast()
        group.version &+= 1
        if group.list.isEmpty { entry.loops.remove(at: loopIndex) }
        entry.count -= 1
        let framing = connection.topicFraming
        entry.framings[framing, default: 1] -= 1
        if entry.framings[framing] == 0 { entry.framings[framing] = nil }
        topics[topic] = entry.count == 0 ? nil : entry
        metrics?.subscriptions.decrement()
    }

    /// The topics `connection` is subscribed to.
    func topics(of connection: WebSocketConnection) -> Set<String> {
        lock.withLock { memberships[ObjectIdentifier(connection)] ?? [] }
    }

    func subscriberCount(of topic: String) -> Int {
        lock.withLock { topics[topic]?.count ?? 0 }
    }

    /// The topics with at least one subscriber, sorted.
    var topicNames: [String] {
        lock.withLock { Array(topics.keys) }.sorted()
    }

    /// Published messages skipped for slow subscribers since the server started.
    var skippedCount: Int {
        lock.withLock { skippedTotal }
    }

    static func validate(_ topic: String) throws(WebSocketError) {
        let bytes = topic.utf8.count
        guard bytes <= maxTopicBytes else {
            throw WebSocketError(.invalidArgument, "A topic name has at most \(maxTopicBytes) bytes of UTF-8; this one has \(bytes)")
        }
        // Checked here, once for every broker: PostgreSQL's text (and C strings) cannot hold it.
        guard !topic.utf8.contains(0) else {
            throw WebSocketError(.invalidArgument, "A topic name cannot contain U+0000 (NUL)")
        }
    }

    // MARK: - The broker

    /// Starts the broker once (later calls wait for the same start); a failed start may be tried
    /// again. Nothing to do for the local broker.
    func startBroker() async throws {
        guard let broker else { return }
        let delivery = WebSocketBrokerDelivery(registry: self)
        let start = lock.withLock { () -> Task<Void, any Error> in
            if let brokerStart { return brokerStart }
            let start = Task { try await broker.start(delivering: delivery) }
            brokerStart = start
            return start
        }
        do {
            try await start.value
        } catch {
            lock.withLock { if brokerStart == start { brokerStart = nil } }
            if let error = error as? WebSocketError { throw error }
            throw WebSocketError(.brokerUnavailable, "The broker \(type(of: broker)) did not start: \(error)")
        }
    }

    /// Stops the broker if it was started.
    func shutDownBroker() async {
        guard let broker else { return }
        let started = lock.withLock { () -> Task<Void, any Error>? in
            defer { brokerStart = nil }
            return brokerStart
        }
        guard let started, (try? await started.value) != nil else { return }
        await broker.shutDown()
    }

    // MARK: - Publishing

    /// A publication of this node: the broker takes it first (and may refuse it: then nobody
    /// gets it), then this node's subscribers but `sender` get it. Returns how many of them.
    func publish(_ payload: WebSocketPublication.Payload, to topic: String, compress: Bool, sender: WebSocketConnection?) throws(WebSocketError) -> Int {
        try Self.validate(topic)
        if let broker {
            let message: WebSocketMessage
            switch payload {
            case .text(let text): message = .utf8(text)
            case .binary(let bytes): message = .binary(bytes)
            }
            try broker.publish(WebSocketBrokerPublication(topic: topic, message: message))
        }
        return deliver(payload, to: topic, compress: compress, sender: sender)
    }

    /// Queues a message for every subscriber of `topic` on this node but `sender`; returns how
    /// many.
    ///
    /// A topic without subscribers costs a dictionary lookup under the lock and allocates
    /// nothing (the text of a ``WebSocketPublication/Payload/text(_:)`` is not even encoded).
    func deliver(_ payload: WebSocketPublication.Payload, to topic: String, compress: Bool, sender: WebSocketConnection?) -> Int {
        guard topic.utf8.count <= Self.maxTopicBytes else { return 0 }
        metrics?.publishes.increment()
        let senderID = sender.map(ObjectIdentifier.init)
        // The snapshot: the subscribers of each loop, and what framings they need.
        let snapshot: (count: Int, groups: [LoopSubscribers], lists: [[Subscriber]], versions: [UInt64], framings: [WebSocketTopicFraming])? =
            lock.withLock {
                guard let entry = topics[topic] else { return nil }
                var count = entry.count
                if let senderID, memberships[senderID]?.contains(topic) == true { count -= 1 }
                guard count > 0 else { return nil }
                return (count, entry.loops, entry.loops.map(\.list), entry.loops.map(\.version), Array(entry.framings.keys))
            }
        guard let snapshot else { return 0 }
        let publication = WebSocketPublication(
            payload, compress: compress, sender: senderID, framings: snapshot.framings,
            fragmentationThreshold: fragmentationThreshold)
        let size = publication.size
        var toSchedule: [Inbox] = []
        var overflowed: [[Subscriber]] = []
        lock.withLock {
            for (index, group) in snapshot.groups.enumerated() {
                let inbox = group.inbox
                if inbox.pendingBytes > 0 && inbox.pendingBytes + size > Self.maxInboxBytes {
                    overflowed.append(snapshot.lists[index])
                    continue
                }
                inbox.pendingBytes += size
                inbox.pending.append(
                    Delivery(publication: publication, subscribers: snapshot.lists[index], group: ObjectIdentifier(group), version: snapshot.versions[index]))
                if !inbox.scheduled {
                    inbox.scheduled = true
                    toSchedule.append(inbox)
                }
            }
        }
        for list in overflowed {
            skipped(list.lazy.filter { $0.id != senderID }.map(\.connection), count: 1)
        }
        for inbox in toSchedule {
            inbox.eventLoop.execute { self.drain(inbox) }
        }
        return snapshot.count
    }

    /// Counts `count` skipped messages for each of `connections`.
    func skipped(_ connections: some Sequence<WebSocketConnection>, count: Int) {
        var total = 0
        for connection in connections {
            connection.recordSkippedPublications(count)
            total += count
        }
        lock.withLock { skippedTotal += total }
    }
}
