import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import PostgresNIO
import WebSocket

/// Topics across several servers over PostgreSQL: a ``WebSocket/WebSocketBroker`` that stores
/// every publication in a table and announces it with `NOTIFY`, so that every node delivers it
/// to its own subscribers, and a node that lost its database connection reads what it missed.
///
/// ```swift
/// var configuration = WebSocketServer.Configuration()
/// configuration.broker = WebSocketPostgresBroker(configuration: try .init(url: "postgres://ws@127.0.0.1:5432/ws"))
/// let server = WebSocketServer(configuration: configuration)
/// try await server.listen(port: 8080)   // connects to PostgreSQL first; throws naming the problem
/// ```
///
/// What it guarantees:
/// - The publishing node's own subscribers get a publication at once (it never waits for the
///   database); every other node delivers it exactly once, and one publisher's publications in
///   publish order. Text and binary, any size (PostgreSQL's `bytea`, not NOTIFY's 8,000 bytes).
/// - Publications made while PostgreSQL is unreachable wait in memory (up to
///   ``Configuration/maxQueuedBytes``) and are stored in order after the reconnect; past the
///   bound `publish` throws ``WebSocket/WebSocketError/Code-swift.struct/brokerUnavailable``.
///   A batch whose commit was cut off is sent again and stored once.
/// - A node that reconnects reads every row after the last one it saw. Rows are deleted after
///   ``Configuration/retention``; a node that was away longer reports the gap
///   (``onGap(_:)`` and a log line) instead of skipping it silently.
/// - Reconnects with exponential backoff and jitter; the state (``State``) is observable with
///   ``onStateChange(_:)`` and logged.
/// - Publications that arrive together go in one transaction (one `INSERT` of many rows and one
///   `NOTIFY`), not one round trip each.
/// - A node's identity is its ``incarnation`` (a random UUID per broker), not its
///   ``Configuration/node`` name: a process restarted under the same name neither loses nor
///   duplicates publications, and a batch sent again is stored once.
/// - A publication PostgreSQL refuses to store (rare: topic names with U+0000 are refused by
///   `publish` already) is dropped and reported (``onDropped(_:)``); the ones behind it go on.
/// - An application publishes from its own transaction with SQL (any client, e.g. postgres-nio
///   or psql): `SELECT websocket_publish(topic, payload [, key])` (`<table>_send` for a table
///   other than the default), `payload` `text` (a text message) or `bytea` (binary). The
///   message reaches every node's subscribers if and only if the transaction commits. With a
///   `key`, a second publication with the same key (while the first is in the table, see
///   ``Configuration/retention``) is not stored and the call returns NULL; otherwise it returns
///   the row's id. The call takes the broker's advisory lock until the transaction ends (ids in
///   commit order): publish last, in a short transaction.
/// - Only topics with a local subscriber cost a node a read: each NOTIFY names the batch's
///   topics and the id before it, so a node with no subscriber of them (or that published them)
///   moves past the batch without a query; when it reads, rows of other topics come as id,
///   topic and opcode only (the filter runs in PostgreSQL, on one channel; see the DocC article
///   *Topics* for why not one `LISTEN` per topic).
public final class WebSocketPostgresBroker: WebSocketBroker, Sendable {
    /// Where the broker stands.
    public enum State: Sendable, Equatable, CustomStringConvertible {
        /// Not started, or shut down.
        case stopped
        /// Starting: connecting, creating the table if missing.
        case connecting
        /// Connected, reading what was published while it was away.
        case catchingUp
        /// Connected and up to date.
        case connected
        /// A connection to PostgreSQL is lost; reconnecting. Publications wait in memory.
        case degraded(reason: String)

        public var description: String {
            switch self {
            case .stopped: "stopped"
            case .connecting: "connecting"
            case .catchingUp: "catching up"
            case .connected: "connected"
            case .degraded(let reason): "degraded (\(reason))"
            }
        }
    }

    /// Publications this node could not read: they were deleted (older than the retention)
    /// before it came back. Ids `afterID + 1 ... throughID` are lost to it.
    public struct Gap: Sendable, Equatable, CustomStringConvertible {
        /// The last id this node had read.
        public let afterID: Int64
        /// The last id deleted by retention.
        public let throughID: Int64

        public var description: String {
            "publications after id \(afterID) through id \(throughID) were deleted (older than the retention) before this node read them"
        }
    }

    /// A publication of this node that PostgreSQL refused to store (its other nodes never get
    /// it; this node's subscribers had it already). Topic names with U+0000 are refused by every
    /// server's `publish` before they get here; what is left is rare: a row PostgreSQL refuses
    /// for its size, or a trigger or constraint an operator added to the table.
    public struct Dropped: Sendable, Equatable, CustomStringConvertible {
        /// The publication's topic.
        public let topic: String
        /// Its payload's size.
        public let bytes: Int
        /// PostgreSQL's reason.
        public let reason: String

        public var description: String {
            "a publication to \(topic.debugDescription) (\(bytes) bytes) was refused by PostgreSQL and dropped: \(reason)"
        }
    }

    /// The configuration it was created with.
    public let configuration: Configuration
    /// This broker's identity in the table, a random UUID made with it: with its sequence
    /// numbers (1, 2, ... in publish order) the key that stores a batch sent twice once, and how
    /// a node recognises its own rows. A process restarted under the same
    /// ``Configuration/node`` name is another incarnation, so its publications never collide
    /// with those of the one before (see the DocC article *Topics*, "Node identity").
    public let incarnation: UUID
    let logger: Logger
    let sql: PostgresBrokerSQL
    let backoff: PostgresBrokerBackoff

    enum ReaderState: Equatable {
        case down(String)
        case catchingUp
        case live
    }

    struct Shared {
        var queue: PostgresBrokerQueue
        var started = false
        var stopping = false
        var stopped = false
        var writerDown: String?
        var reader = ReaderState.catchingUp
        var state = State.stopped
        /// The highest id read (rows, never a notification's word).
        var lastSeen: Int64 = 0
        /// The highest id notifications said needs no read here (unconfirmed), and how many such
        /// notifications came since the last read.
        var skippedThrough: Int64 = 0
        var unconfirmedSkips = 0
        var gapReportedThrough: Int64 = 0
        var delivery: WebSocketBrokerDelivery?
        var readerConnection: PostgresConnection?
        var writerConnection: PostgresConnection?
        var tasks: [Task<Void, Never>] = []
        var writerTask: Task<Void, Never>?
        var stateHandlers: [@Sendable (State) -> Void] = []
        var gapHandlers: [@Sendable (Gap) -> Void] = []
        var droppedHandlers: [@Sendable (Dropped) -> Void] = []
        var dropped = 0
        var connectionIDs = 0
        /// Reads of the table, and notifications that needed none (for tests and diagnostics).
        var reads = 0
        var readsSkipped = 0
        /// Pages read again because a topic was subscribed while their query was on its way.
        var readsAgain = 0
        /// The most payload bytes one read brought (the catch-up's bound).
        var largestRead = 0
    }

    let shared: NIOLockedValueBox<Shared>
    let wakeups: AsyncStream<Void>
    let wake: AsyncStream<Void>.Continuation

    /// Creates a broker; it connects when the server starts it (its first `listen`).
    /// - Parameters:
    ///   - configuration: the database and the behaviour when it is unreachable.
    ///   - logger: where state changes, gaps and errors are logged.
    public init(configuration: Configuration, logger: Logger = Logger(label: "websocket.postgres")) {
        self.configuration = configuration
        self.logger = logger
        self.incarnation = UUID()
        self.sql = PostgresBrokerSQL(table: configuration.table)
        self.backoff = PostgresBrokerBackoff(
            initial: configuration.reconnectInitialDelay, maximum: configuration.reconnectMaxDelay, jitter: 0.5)
        self.shared = NIOLockedValueBox(Shared(queue: PostgresBrokerQueue(
            maxBytes: configuration.maxQueuedBytes, maxBatchCount: configuration.maxBatchCount,
            maxBatchBytes: configuration.maxBatchBytes)))
        (wakeups, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    // MARK: - Observing

    /// The current state.
    public var state: State { shared.withLockedValue { $0.state } }

    /// The bytes of publications waiting to be stored (they grow while PostgreSQL is
    /// unreachable, up to ``Configuration/maxQueuedBytes``).
    public var queuedBytes: Int { shared.withLockedValue { $0.queue.bytes } }

    /// The number of publications waiting to be stored.
    public var queuedCount: Int { shared.withLockedValue { $0.queue.count } }

    /// How many reads of the table this node made, and how many notifications needed none.
    var readCounts: (reads: Int, skipped: Int) { shared.withLockedValue { ($0.reads, $0.readsSkipped) } }

    /// The most payload bytes one read of the table brought.
    var largestRead: Int { shared.withLockedValue { $0.largestRead } }
    /// Pages read again because a topic was subscribed while their query was on its way (see
    /// `readAll(on:delivery:)`).
    var readsAgain: Int { shared.withLockedValue { $0.readsAgain } }

    /// The highest publication id this node has read from the table.
    public var lastSeenID: Int64 { shared.withLockedValue { $0.lastSeen } }

    /// Registers a handler for state changes (also logged: info when connected, warning when
    /// degraded). Runs on a task of the broker; keep it short.
    public func onStateChange(_ handler: @escaping @Sendable (State) -> Void) {
        shared.withLockedValue { $0.stateHandlers.append(handler) }
    }

    /// Registers a handler for gaps: publications this node could not read because retention
    /// deleted them before it came back (also logged as an error).
    public func onGap(_ handler: @escaping @Sendable (Gap) -> Void) {
        shared.withLockedValue { $0.gapHandlers.append(handler) }
    }

    /// Registers a handler for publications PostgreSQL refused to store (``Dropped``; also
    /// logged as an error). The writer stores the publications behind one refused row: one bad
    /// publication never blocks the others.
    public func onDropped(_ handler: @escaping @Sendable (Dropped) -> Void) {
        shared.withLockedValue { $0.droppedHandlers.append(handler) }
    }

    /// How many publications PostgreSQL refused to store since the broker was made.
    public var droppedCount: Int { shared.withLockedValue { $0.dropped } }

    // MARK: - WebSocketBroker

    /// Connects to PostgreSQL (two connections: one stores, one listens and reads), creates the
    /// table, function and retention row when missing, and starts reading from the newest id.
    /// Throws ``WebSocket/WebSocketError/Code-swift.struct/brokerUnavailable`` naming the
    /// problem (unreachable host, authentication, missing database, ...), or
    /// ``WebSocket/WebSocketError/Code-swift.struct/invalidArgument`` for a bad configuration.
    public func start(delivering delivery: WebSocketBrokerDelivery) async throws {
        try configuration.validate()
        let alreadyStarted = shared.withLockedValue { shared -> Bool in
            if shared.started && !shared.stopped { return true }
            shared.started = true
            shared.stopping = false
            shared.stopped = false
            shared.state = .connecting
            shared.delivery = delivery
            return false
        }
        if alreadyStarted {
            throw WebSocketError(.invalidArgument, "This PostgreSQL broker runs already: give each server its own broker")
        }
        let writer: PostgresConnection
        let reader: PostgresConnection
        do {
            writer = try await connect()
            do {
                reader = try await connect()
            } catch {
                try? await writer.close()
                throw error
            }
            do {
                try await writer.withTransaction(logger: logger) { connection in
                    for statement in sql.schema {
                        try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                    }
                }
                let rows = try await writer.query(sql.position, logger: logger)
                var newest: Int64 = 0
                for try await (id, _) in rows.decode((Int64, Int64).self) { newest = id }
                shared.withLockedValue {
                    $0.lastSeen = newest
                    $0.skippedThrough = newest
                    $0.gapReportedThrough = newest
                }
            } catch {
                try? await writer.close()
                try? await reader.close()
                throw error
            }
        } catch {
            shared.withLockedValue {
                $0.started = false
                $0.state = .stopped
            }
            let described = Self.describe(error)
            logger.error("PostgreSQL broker could not start", metadata: ["target": "\(configuration.target)", "error": "\(described)"])
            throw WebSocketError(.brokerUnavailable, "The PostgreSQL broker could not start: \(configuration.target): \(described)")
        }
        shared.withLockedValue {
            $0.writerConnection = writer
            $0.readerConnection = reader
            $0.writerDown = nil
            $0.reader = .catchingUp
        }
        updateState()
        let writerTask = Task { await self.runWriter(first: writer) }
        let readerTask = Task { await self.runReader(first: reader, delivery: delivery) }
        let retentionTask = Task { await self.runRetention() }
        shared.withLockedValue {
            $0.writerTask = writerTask
            $0.tasks = [readerTask, retentionTask]
        }
        logger.info("PostgreSQL broker started", metadata: ["target": "\(configuration.target)", "node": "\(configuration.node)", "incarnation": "\(incarnation)", "table": "\(configuration.table)"])
    }

    /// Queues a publication of this node for the table (its own subscribers have it already).
    /// Throws ``WebSocket/WebSocketError/Code-swift.struct/brokerUnavailable`` when the queue
    /// holds ``Configuration/maxQueuedBytes`` already (PostgreSQL is unreachable or too slow), or
    /// when the broker is not running.
    public func publish(_ publication: WebSocketBrokerPublication) throws(WebSocketError) {
        enum Outcome { case queued, full(Int, State), notRunning }
        let outcome = shared.withLockedValue { shared -> Outcome in
            guard shared.started && !shared.stopping else { return .notRunning }
            switch shared.queue.enqueue(publication) {
            case .queued: return .queued
            case .full(let bytes): return .full(bytes, shared.state)
            }
        }
        switch outcome {
        case .queued:
            wake.yield()
        case .full(let bytes, let state):
            throw WebSocketError(.brokerUnavailable, "Not published: \(bytes) bytes of publications wait for PostgreSQL already (maxQueuedBytes \(configuration.maxQueuedBytes)); the broker is \(state)")
        case .notRunning:
            throw WebSocketError(.brokerUnavailable, "Not published: the PostgreSQL broker is not running (start the server with listen, or it was shut down)")
        }
    }

    /// Stores what is still queued (waiting at most ``Configuration/shutdownTimeout``; what is
    /// left after it is logged as an error with its count), then closes the connections.
    public func shutDown() async {
        let writer = shared.withLockedValue { shared -> Task<Void, Never>? in
            shared.stopping = true
            return shared.writerTask
        }
        wake.yield()
        if let writer {
            let finished = await withTaskGroup(of: Bool.self) { group in
                group.addTask { await writer.value; return true }
                group.addTask { [timeout = configuration.shutdownTimeout] in
                    try? await Task.sleep(for: timeout)
                    return false
                }
                let first = await group.next() ?? false
                if !first {
                    writer.cancel()
                    let connection = shared.withLockedValue { $0.writerConnection }
                    try? await connection?.close()
                }
                group.cancelAll()
                return first
            }
            if !finished {
                let left = shared.withLockedValue { $0.queue.count }
                logger.error("PostgreSQL broker shut down with publications not stored", metadata: ["count": "\(left)", "target": "\(configuration.target)"])
            }
        }
        let (tasks, reader, writerConnection) = shared.withLockedValue { shared in
            (shared.tasks, shared.readerConnection, shared.writerConnection)
        }
        for task in tasks { task.cancel() }
        try? await reader?.close()
        try? await writerConnection?.close()
        for task in tasks { await task.value }
        shared.withLockedValue {
            $0.stopped = true
            $0.tasks = []
            $0.writerTask = nil
            $0.readerConnection = nil
            $0.writerConnection = nil
        }
        updateState()
        logger.info("PostgreSQL broker stopped", metadata: ["node": "\(configuration.node)"])
    }

    // MARK: - Connections and state

    func connect() async throws -> PostgresConnection {
        var postgres = configuration.postgres
        postgres.options.connectTimeout = .nanoseconds(configuration.connectTimeout.components.seconds * 1_000_000_000
            + configuration.connectTimeout.components.attoseconds / 1_000_000_000)
        let id = shared.withLockedValue { $0.connectionIDs += 1; return $0.connectionIDs }
        var postgresLogger = logger
        postgresLogger.logLevel = max(logger.logLevel, .critical)
        return try await PostgresConnection.connect(configuration: postgres, id: id, logger: postgresLogger)
    }

    /// Recomputes the state from the two connections' and tells the handlers if it changed.
    func updateState() {
        let (state, handlers) = shared.withLockedValue { shared -> (State?, [@Sendable (State) -> Void]) in
            let state: State
            if shared.stopped || !shared.started {
                state = .stopped
            } else if let reason = shared.writerDown {
                state = .degraded(reason: reason)
            } else {
                switch shared.reader {
                case .down(let reason): state = .degraded(reason: reason)
                case .catchingUp: state = .catchingUp
                case .live: state = .connected
                }
            }
            guard state != shared.state else { return (nil, []) }
            shared.state = state
            return (state, shared.stateHandlers)
        }
        guard let state else { return }
        switch state {
        case .degraded(let reason):
            logger.warning("PostgreSQL broker degraded", metadata: ["reason": "\(reason)", "queued": "\(queuedBytes)"])
        default:
            logger.info("PostgreSQL broker \(state)", metadata: ["node": "\(configuration.node)"])
        }
        for handler in handlers { handler(state) }
    }

    func report(_ gap: Gap) {
        let handlers = shared.withLockedValue { $0.gapHandlers }
        logger.error("PostgreSQL broker: gap", metadata: ["after": "\(gap.afterID)", "through": "\(gap.throughID)", "detail": "\(gap)"])
        for handler in handlers { handler(gap) }
    }

    var isStopping: Bool { shared.withLockedValue { $0.stopping } }

    /// Sleeps the reconnect delay of `attempt`; false when cancelled.
    func sleep(attempt: Int) async -> Bool {
        let delay = backoff.delay(attempt: attempt, random: Double.random(in: 0..<1))
        do {
            try await Task.sleep(for: delay)
            return true
        } catch {
            return false
        }
    }

    /// A person's account of a PostgreSQL error: the server's message when there is one.
    static func describe(_ error: any Error) -> String {
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] {
                let state = error.serverInfo?[.sqlState].map { " (SQLSTATE \($0))" } ?? ""
                return message + state
            }
            if let underlying = error.underlying {
                let text = "\(underlying)"
                if error.code == .connectionError {
                    if text.contains("Connection refused") { return "connection refused (nothing listens there: is PostgreSQL running, on that port?)" }
                    if text.lowercased().contains("timeout") || text.lowercased().contains("timed out") { return "connecting timed out" }
                    return "cannot connect: \(text)"
                }
                return "\(error.code): \(text)"
            }
            return "\(error.code)"
        }
        if let error = error as? PostgresTransactionError {
            if let failure = error.closureError ?? error.beginError ?? error.commitError {
                return describe(failure)
            }
        }
        return "\(error)"
    }
}
