import Foundation
import Logging
import NIOCore
import PostgresNIO
import WebSocket

// The broker's three tasks: the writer stores this node's publications in batches, the reader
// LISTENs and reads every other node's, and retention deletes old rows. Each reconnects by
// itself with backoff; none holds the lock across an await.
extension WebSocketPostgresBroker {
    /// The rows read per query by the reader.
    static let fetchLimit = 1000

    // MARK: - Writer

    /// Stores batches from the front of the queue, one transaction each, until the broker stops
    /// with an empty queue. A batch leaves the queue only once stored; after a lost connection
    /// it goes again, first (the table's `UNIQUE (node, seq)` stores it once).
    func runWriter(first: PostgresConnection) async {
        var connection: PostgresConnection? = first
        var attempt = 0
        var wakeups = self.wakeups.makeAsyncIterator()
        while !Task.isCancelled {
            if connection == nil {
                do {
                    let fresh = try await connect()
                    connection = fresh
                    shared.withLockedValue {
                        $0.writerConnection = fresh
                        $0.writerDown = nil
                    }
                    attempt = 0
                    updateState()
                } catch {
                    if !(await sleep(attempt: attempt)) { return }
                    attempt += 1
                    continue
                }
            }
            guard let current = connection else { continue }
            do {
                while true {
                    let (batch, stopping) = shared.withLockedValue { ($0.queue.nextBatch(), $0.stopping) }
                    if batch.isEmpty {
                        if stopping { try? await current.close(); return }
                        _ = await wakeups.next()
                        if Task.isCancelled { return }
                        continue
                    }
                    logger.trace("PostgreSQL broker storing a batch", metadata: ["count": "\(batch.count)"])
                    let query = sql.publish(node: configuration.node, batch: batch)
                    try await withDeadline(on: current) { [logger] in
                        let rows = try await current.query(query, logger: logger)
                        for try await _ in rows {}
                    }
                    shared.withLockedValue { $0.queue.committed(batch.count) }
                    logger.trace("PostgreSQL broker stored a batch", metadata: ["count": "\(batch.count)"])
                }
            } catch {
                logger.trace("PostgreSQL broker could not store a batch", metadata: ["error": "\(Self.describe(error))"])
                try? await current.close()
                connection = nil
                let reason = "storing publications: \(Self.describe(error))"
                shared.withLockedValue {
                    $0.writerConnection = nil
                    $0.writerDown = reason
                }
                updateState()
                if Task.isCancelled { return }
                if !(await sleep(attempt: attempt)) { return }
                attempt += 1
            }
        }
    }

    // MARK: - Reader

    /// LISTENs, then reads everything after the last id it saw (catching up), then reads again
    /// whenever a NOTIFY names an id it has not seen. On a lost connection: reconnect, LISTEN,
    /// catch up.
    func runReader(first: PostgresConnection, delivery: WebSocketBrokerDelivery) async {
        var connection: PostgresConnection? = first
        var attempt = 0
        while !Task.isCancelled && !isStopping {
            if connection == nil {
                do {
                    let fresh = try await connect()
                    connection = fresh
                    shared.withLockedValue {
                        $0.readerConnection = fresh
                        $0.reader = .catchingUp
                    }
                    updateState()
                } catch {
                    shared.withLockedValue { $0.reader = .down("reading publications: \(Self.describe(error))") }
                    updateState()
                    if !(await sleep(attempt: attempt)) { return }
                    attempt += 1
                    continue
                }
            }
            guard let current = connection else { continue }
            var failure: (any Error)?
            do {
                try await current.listen(on: sql.channel) { notifications in
                    try await self.checkGap(on: current)
                    try await self.readAll(on: current, delivery: delivery)
                    self.shared.withLockedValue { $0.reader = .live }
                    self.updateState()
                    attempt = 0
                    for try await notification in notifications {
                        self.logger.trace("PostgreSQL broker notified", metadata: ["note": "\(notification.payload)", "lastSeen": "\(self.lastSeenID)"])
                        if self.skipRead(for: notification.payload, delivery: delivery) { continue }
                        try await self.readAll(on: current, delivery: delivery)
                    }
                }
            } catch {
                failure = error
            }
            try? await current.close()
            connection = nil
            shared.withLockedValue { $0.readerConnection = nil }
            if Task.isCancelled || isStopping { return }
            let reason = failure.map { Self.describe($0) } ?? "the connection closed"
            shared.withLockedValue { $0.reader = .down("reading publications: \(reason)") }
            updateState()
            if !(await sleep(attempt: attempt)) { return }
            attempt += 1
        }
    }

    /// What a NOTIFY says (see `PostgresBrokerSQL.schema`): the newest id, the id before the
    /// batch, the publishing node and the batch's topics (the last three absent when they would
    /// not fit in a notification).
    struct Note: Decodable {
        var l: Int64
        var p: Int64?
        var n: String?
        var t: [String]?
    }

    /// Whether a notification needs no read: its rows were read already, or they are the only
    /// rows after the last one seen and none is for this node (its own, or of topics without a
    /// subscriber here); then the last id seen moves past them. A node without subscribers of a
    /// topic thus pays a notification for its publications, not a query.
    func skipRead(for payload: String, delivery: WebSocketBrokerDelivery) -> Bool {
        guard let note = try? JSONDecoder().decode(Note.self, from: Data(payload.utf8)) else {
            if let id = Int64(payload) { return id <= lastSeenID }
            return false
        }
        return shared.withLockedValue { shared in
            if note.l <= shared.lastSeen { return true }
            guard note.p == shared.lastSeen, let node = note.n, let topics = note.t else { return false }
            guard node == configuration.node || !topics.contains(where: delivery.hasSubscribers) else { return false }
            shared.lastSeen = note.l
            shared.readsSkipped += 1
            return true
        }
    }

    /// Reads and delivers every row after the last id seen, in id order.
    func readAll(on connection: PostgresConnection, delivery: WebSocketBrokerDelivery) async throws {
        while true {
            let after = lastSeenID
            let query = sql.fetch(after: after, node: configuration.node, topics: delivery.topics, limit: Self.fetchLimit)
            // Read whole, then delivered: the deadline covers the database, not the delivery.
            let rows = try await withDeadline(on: connection) { [logger] in
                var rows: [(Int64, Bool, String, Int16, ByteBuffer?)] = []
                for try await row in try await connection.query(query, logger: logger).decode((Int64, Bool, String, Int16, ByteBuffer?).self) {
                    rows.append(row)
                }
                return rows
            }
            let count = rows.count
            shared.withLockedValue { $0.reads += 1 }
            var last = after
            for (id, own, topic, opcode, payload) in rows {
                last = id
                guard !own, let payload else { continue }
                let message: WebSocketMessage = opcode == 1 ? .utf8(String(buffer: payload)) : .binary(payload)
                delivery.deliver(WebSocketBrokerPublication(topic: topic, message: message))
            }
            shared.withLockedValue { $0.lastSeen = max($0.lastSeen, last) }
            logger.trace("PostgreSQL broker read", metadata: ["after": "\(after)", "rows": "\(count)"])
            if count < Self.fetchLimit { return }
        }
    }

    /// Reports a gap when retention deleted rows this node has not read.
    func checkGap(on connection: PostgresConnection) async throws {
        let query = sql.deletedThrough
        let deleted = try await withDeadline(on: connection) { [logger] in
            var values: [Int64] = []
            for try await value in try await connection.query(query, logger: logger).decode(Int64.self) { values.append(value) }
            return values
        }
        for value in deleted { noteDeleted(through: value) }
    }

    func noteDeleted(through deleted: Int64) {
        let gap = shared.withLockedValue { shared -> Gap? in
            guard deleted > shared.lastSeen, deleted > shared.gapReportedThrough else { return nil }
            let gap = Gap(afterID: max(shared.lastSeen, shared.gapReportedThrough), throughID: deleted)
            shared.gapReportedThrough = deleted
            return gap
        }
        if let gap { report(gap) }
    }

    // MARK: - Retention

    /// Deletes expired rows every quarter of the retention (between 1 s and 1 min), on the
    /// reader's connection, and notices a gap of this node's.
    func runRetention() async {
        let quarter = configuration.retention / 4
        let interval = min(max(quarter, .seconds(1)), .seconds(60))
        let seconds = PostgresBrokerBackoff.seconds(configuration.retention)
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: interval)
            } catch {
                return
            }
            guard let connection = shared.withLockedValue({ $0.readerConnection }) else { continue }
            do {
                // Also the reader connection's health check: past the deadline it is closed, and
                // the reader reconnects (a silent network would otherwise leave it waiting).
                let query = sql.deleteExpired(olderThan: seconds)
                let deleted = try await withDeadline(on: connection) { [logger] in
                    var values: [Int64] = []
                    for try await value in try await connection.query(query, logger: logger).decode(Int64.self) { values.append(value) }
                    return values
                }
                for value in deleted { noteDeleted(through: value) }
            } catch {
                // The reader notices a lost connection; the next round tries again.
                logger.debug("PostgreSQL broker: retention failed", metadata: ["error": "\(Self.describe(error))"])
            }
        }
    }
}
