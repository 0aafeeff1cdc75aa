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
    /// The payload bytes read per query by the reader (one row more than fits always comes).
    static let fetchBytes = 4 << 20

    // MARK: - Writer

    /// Stores batches from the front of the queue, one transaction each, until the broker stops
    /// with an empty queue. A batch leaves the queue only once stored; after a lost connection
    /// it goes again, first (the table's `UNIQUE (incarnation, node, seq)` stores it once).
    ///
    /// A batch PostgreSQL refuses for its data (``isRefusal(_:)``: the same rows would fail
    /// again, and the queue behind them would wait for ever) is sent again one publication at a
    /// time; the one refused alone is dropped and reported (``onDropped(_:)``, an error log line),
    /// and the others are stored in order.
    func runWriter(first: PostgresConnection) async {
        var connection: PostgresConnection? = first
        var attempt = 0
        // How many publications at the queue's front go one at a time (a refused batch's).
        var isolating = 0
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
                    let (batch, stopping) = shared.withLockedValue { ($0.queue.nextBatch(maxCount: isolating > 0 ? 1 : nil), $0.stopping) }
                    if batch.isEmpty {
                        if stopping { try? await current.close(); return }
                        _ = await wakeups.next()
                        if Task.isCancelled { return }
                        continue
                    }
                    logger.trace("PostgreSQL broker storing a batch", metadata: ["count": "\(batch.count)"])
                    let query = sql.publish(node: configuration.node, incarnation: incarnation, batch: batch)
                    do {
                        try await withDeadline(on: current) { [logger] in
                            let rows = try await current.query(query, logger: logger)
                            for try await _ in rows {}
                        }
                    } catch where Self.isRefusal(error) && !current.isClosed {
                        if batch.count > 1 {
                            logger.warning("PostgreSQL broker: a batch was refused; storing its publications one at a time", metadata: [
                                "count": "\(batch.count)", "error": "\(Self.describe(error))"])
                            isolating = batch.count
                            continue
                        }
                        drop(batch.first!, reason: Self.describe(error))
                        isolating = max(0, isolating - 1)
                        continue
                    }
                    shared.withLockedValue { $0.queue.committed(batch.count) }
                    isolating = max(0, isolating - batch.count)
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

    /// Whether PostgreSQL refused a batch for what it holds (a data exception, an integrity
    /// violation, a limit exceeded: SQLSTATE classes 22, 23 and 54), so that sending it again
    /// as it is would fail again; not a lost connection or a server shutting down.
    static func isRefusal(_ error: any Error) -> Bool {
        guard let error = error as? PSQLError, error.code == .server,
              let state = error.serverInfo?[.sqlState] else { return false }
        return state.hasPrefix("22") || state.hasPrefix("23") || state.hasPrefix("54")
    }

    /// Takes the queue's first publication out unstored: PostgreSQL refused it alone.
    func drop(_ item: PostgresBrokerItem, reason: String) {
        let handlers = shared.withLockedValue { shared -> [@Sendable (Dropped) -> Void] in
            shared.queue.committed(1)
            shared.dropped += 1
            return shared.droppedHandlers
        }
        let dropped = Dropped(topic: item.topic, bytes: item.payload.readableBytes, reason: reason)
        logger.error("PostgreSQL broker dropped a publication PostgreSQL refused", metadata: [
            "topic": "\(item.topic.debugDescription.prefix(200))", "bytes": "\(dropped.bytes)", "error": "\(reason)"])
        for handler in handlers { handler(dropped) }
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
                    try await self.follow(notifications, on: current, delivery: delivery)
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

    /// What wakes the reader once it is live.
    enum ReaderEvent: Sendable {
        case note(String)
        /// The confirmation timer (``confirmInterval``).
        case tick
        /// The notifications ended: the connection is lost.
        case ended((any Error)?)
    }

    /// How long rows whose read a notification made unnecessary may stay unread: then one read
    /// confirms them (so that the last id seen always comes from rows read, and a node without
    /// subscribers still moves on before retention deletes what it skipped).
    static let confirmInterval: Duration = .milliseconds(250)
    /// After this many notifications that needed no read, one read confirms them.
    static let confirmEvery = 1000

    /// Reads as the notifications say, one read at a time: the notifications and the
    /// confirmation timer come in one stream.
    func follow(_ notifications: PostgresNotificationSequence, on connection: PostgresConnection, delivery: WebSocketBrokerDelivery) async throws {
        let (events, sink) = AsyncStream.makeStream(of: ReaderEvent.self)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    for try await notification in notifications { sink.yield(.note(notification.payload)) }
                    sink.yield(.ended(nil))
                } catch {
                    sink.yield(.ended(error))
                }
            }
            group.addTask {
                while (try? await Task.sleep(for: Self.confirmInterval)) != nil { sink.yield(.tick) }
            }
            defer { group.cancelAll() }
            for await event in events {
                switch event {
                case .note(let payload):
                    logger.trace("PostgreSQL broker notified", metadata: ["note": "\(payload)", "lastSeen": "\(lastSeenID)"])
                    if skipRead(for: payload, delivery: delivery) && !needsConfirmation(now: false) { continue }
                case .tick:
                    if !needsConfirmation(now: true) { continue }
                case .ended(let error):
                    throw error ?? ConnectionClosed()
                }
                try await readAll(on: connection, delivery: delivery)
            }
        }
    }

    /// Whether rows a notification said need no read should be read now: ``confirmEvery`` such
    /// notifications since the last read, or (`now`, on the timer) any.
    func needsConfirmation(now: Bool) -> Bool {
        shared.withLockedValue { shared in
            guard shared.skippedThrough > shared.lastSeen else { return false }
            return now || shared.unconfirmedSkips >= Self.confirmEvery
        }
    }

    /// What a NOTIFY says (see `PostgresBrokerSQL.schema`): the newest id, the id before the
    /// batch, the publishing incarnation and the batch's topics (the last three absent when they
    /// would not fit in a notification).
    struct Note: Decodable {
        var l: Int64
        var p: Int64?
        var i: UUID?
        var t: [String]?
    }

    /// Whether a notification needs no read now: its rows were read already, or they follow
    /// the rows read (or skipped) so far and none is for this node (its own, or of topics
    /// without a subscriber here). A node without subscribers of a topic thus pays a
    /// notification for its publications, not a query each.
    ///
    /// A notification is no proof: any login to the database may send one on the channel. So
    /// it never moves the last id seen (only rows read do, ``readAll(on:delivery:)``); what it
    /// claims is kept apart (`skippedThrough`), and read within ``confirmInterval``. A forged
    /// one can make a node read more, or later, but not skip a row.
    func skipRead(for payload: String, delivery: WebSocketBrokerDelivery) -> Bool {
        guard let note = try? JSONDecoder().decode(Note.self, from: Data(payload.utf8)) else {
            if let id = Int64(payload) { return id <= lastSeenID }
            return false
        }
        return shared.withLockedValue { shared in
            if note.l <= shared.lastSeen { return true }
            guard let previous = note.p, previous == max(shared.lastSeen, shared.skippedThrough), note.l > previous,
                  let publisher = note.i, let topics = note.t else { return false }
            guard publisher == incarnation || !topics.contains(where: delivery.hasSubscribers) else { return false }
            shared.skippedThrough = note.l
            shared.unconfirmedSkips += 1
            shared.readsSkipped += 1
            return true
        }
    }

    /// Reads and delivers every row after the last id seen, in id order, a page at a time
    /// (``fetchLimit`` rows, ``fetchBytes`` of payloads).
    ///
    /// A page brings payloads of the topics subscribed when its query was made, but PostgreSQL
    /// takes its snapshot when the query runs: a subscription made in between (the query waiting
    /// behind a lock, or a slow turn of the reader's task) can want a row committed after it that
    /// came without its payload. The page is then delivered up to that row, and read again from
    /// there with the topics of now: the row is not passed over (a CI run once lost the first
    /// publications of a node's first subscriber that way).
    func readAll(on connection: PostgresConnection, delivery: WebSocketBrokerDelivery) async throws {
        while true {
            let after = lastSeenID
            let topics = delivery.topics
            let query = sql.fetch(
                after: after, incarnation: incarnation, topics: topics, limit: Self.fetchLimit, maxBytes: Self.fetchBytes)
            // Read whole, then delivered: the deadline covers the database, not the delivery.
            let (rows, pageRows) = try await withDeadline(on: connection) { [logger] in
                var rows: [(Int64, Bool, String, Int16, ByteBuffer?)] = []
                var pageRows: Int64 = 0
                for try await (id, own, topic, opcode, payload, page) in try await connection.query(query, logger: logger)
                    .decode((Int64, Bool, String, Int16, ByteBuffer?, Int64).self) {
                    rows.append((id, own, topic, opcode, payload))
                    pageRows = page
                }
                return (rows, pageRows)
            }
            let count = rows.count
            let bytes = rows.reduce(0) { $0 + ($1.4?.readableBytes ?? 0) }
            shared.withLockedValue {
                $0.reads += 1
                $0.largestRead = max($0.largestRead, bytes)
            }
            var last = after
            var delivered = 0
            var readAgain = false
            for (id, own, topic, opcode, payload) in rows {
                if !own && payload == nil && delivery.hasSubscribers(topic) && !topics.contains(topic) {
                    // Unwanted when the query was made, wanted now (payloads are never NULL; a
                    // topic the query asked for is never read again, so this cannot loop).
                    readAgain = true
                    break
                }
                last = id
                guard !own, let payload else { continue }
                let message: WebSocketMessage = opcode == 1 ? .utf8(String(buffer: payload)) : .binary(payload)
                delivered += delivery.deliver(WebSocketBrokerPublication(topic: topic, message: message)) > 0 ? 1 : 0
            }
            shared.withLockedValue {
                $0.lastSeen = max($0.lastSeen, last)
                // What notifications claimed is forgotten: the rows read are the truth.
                $0.skippedThrough = $0.lastSeen
                $0.unconfirmedSkips = 0
                if readAgain { $0.readsAgain += 1 }
            }
            logger.trace("PostgreSQL broker read", metadata: [
                "after": "\(after)", "rows": "\(count)", "delivered": "\(delivered)", "topics": "\(topics.count)", "readAgain": "\(readAgain)"])
            if readAgain { continue }
            if count == 0 || (pageRows < Self.fetchLimit && count == pageRows) { return }
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
