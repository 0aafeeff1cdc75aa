import NIOCore
import Testing
import WebSocket

@testable import WebSocketPostgres

/// The broker's pure parts, with values: the outage queue, the reconnect delays, the URL and the
/// configuration checks.
@Suite("PostgreSQL broker values")
struct BrokerValueTests {
    static func publication(_ size: Int, topic: String = "t") -> WebSocketBrokerPublication {
        WebSocketBrokerPublication(topic: topic, message: .binary(ByteBuffer(repeating: 1, count: size)))
    }

    @Test("the queue refuses past maxBytes (but always takes one into an empty queue), numbers in order, batches by count and bytes, and keeps a batch until committed")
    func queue() {
        var queue = PostgresBrokerQueue(maxBytes: 1000, maxBatchCount: 3, maxBatchBytes: 500)
        #expect(queue.enqueue(Self.publication(5000)) == .queued(seq: 1), "one large publication into an empty queue")
        #expect(queue.enqueue(Self.publication(10)) == .full(queuedBytes: 5000 + 1 + 64))
        queue.committed(1)
        #expect(queue.isEmpty && queue.bytes == 0)
        for _ in 0..<5 { if case .full = queue.enqueue(Self.publication(100)) { Issue.record("refused within the bound") } }
        // 5 x 165 = 825 bytes; a sixth (990) fits, a seventh does not.
        #expect(queue.enqueue(Self.publication(100)) == .queued(seq: 7))
        #expect(queue.enqueue(Self.publication(100)) == .full(queuedBytes: 990))
        #expect(queue.count == 6)
        let first = queue.nextBatch()
        #expect(first.map(\.seq) == [2, 3, 4], "at most 3 per batch")
        #expect(queue.nextBatch().map(\.seq) == [2, 3, 4], "still there until committed (sent again after a failure)")
        #expect(queue.nextBatch(maxCount: 1).map(\.seq) == [2], "one at a time: a refused batch isolated")
        #expect(queue.nextBatch(maxCount: 10).map(\.seq) == [2, 3, 4], "never past maxBatchCount")
        queue.committed(3)
        #expect(queue.nextBatch().map(\.seq) == [5, 6, 7])
        queue.committed(3)
        #expect(queue.isEmpty && queue.bytes == 0)
        // By bytes: 300 + 300 > 500, so one per batch.
        _ = queue.enqueue(Self.publication(300))
        _ = queue.enqueue(Self.publication(300))
        #expect(queue.nextBatch().count == 1)
    }

    @Test("a text publication is stored as opcode 1 with its UTF-8 bytes, binary as opcode 2")
    func items() {
        let text = PostgresBrokerItem(seq: 1, publication: WebSocketBrokerPublication(topic: "room", message: .utf8("héllo")))
        #expect(text.opcode == 1)
        #expect(text.payload == ByteBuffer(string: "héllo"))
        let binary = PostgresBrokerItem(seq: 2, publication: Self.publication(3, topic: "room"))
        #expect(binary.opcode == 2)
        #expect(binary.payload.readableBytes == 3)
    }

    @Test("reconnect delays double from the initial one, stop at the cap, and jitter only shortens them")
    func backoff() {
        let backoff = PostgresBrokerBackoff(initial: .milliseconds(100), maximum: .seconds(5), jitter: 0.5)
        #expect(backoff.delay(attempt: 0, random: 0) == .milliseconds(100))
        #expect(backoff.delay(attempt: 1, random: 0) == .milliseconds(200))
        #expect(backoff.delay(attempt: 5, random: 0) == .milliseconds(3200))
        #expect(backoff.delay(attempt: 6, random: 0) == .seconds(5))
        #expect(backoff.delay(attempt: 10_000, random: 0) == .seconds(5))
        #expect(backoff.delay(attempt: 0, random: 0.999_999) > .milliseconds(50))
        #expect(backoff.delay(attempt: 0, random: 1) == .milliseconds(50))
        #expect(backoff.delay(attempt: 6, random: 1) == .milliseconds(2500))
    }

    @Test("URLs: user, password, host, port, database and sslmode are read; what is missing or wrong is named")
    func urls() throws {
        let full = try WebSocketPostgresBroker.Configuration(url: "postgres://ws:s%40cret@db.local:6543/chat")
        #expect(full.postgres.username == "ws")
        #expect(full.postgres.password == "s@cret")
        #expect(full.postgres.host == "db.local")
        #expect(full.postgres.port == 6543)
        #expect(full.postgres.database == "chat")
        #expect(!full.postgres.tls.isAllowed)
        let short = try WebSocketPostgresBroker.Configuration(url: "postgresql://ws@127.0.0.1/ws?sslmode=require")
        #expect(short.postgres.port == 5432)
        #expect(short.postgres.password == nil)
        #expect(short.postgres.tls.isEnforced)
        let cases: [(String, String)] = [
            ("mysql://ws@h/db", "Not a PostgreSQL URL"),
            ("postgres://h/db", "names no user"),
            ("postgres://ws@h", "names no database"),
            ("postgres://ws@h/db?sslmode=verify-full", "sslmode=verify-full"),
        ]
        for (url, expected) in cases {
            let error = #expect(throws: WebSocketError.self) { try WebSocketPostgresBroker.Configuration(url: url) }
            #expect(error?.code == .invalidArgument)
            #expect(error?.message.contains(expected) == true, "\(url): \(error?.message ?? "")")
        }
    }

    @Test("the table name must be a plain identifier (it is spliced into SQL); other settings must be positive")
    func validation() throws {
        #expect(PostgresBrokerSQL.isValidIdentifier("websocket_publications"))
        #expect(PostgresBrokerSQL.isValidIdentifier("_t1"))
        for bad in ["", "1abc", "Upper", "a-b", "a b", "a;drop", String(repeating: "a", count: 49), "é"] {
            #expect(!PostgresBrokerSQL.isValidIdentifier(bad), "\(bad)")
        }
        var configuration = try WebSocketPostgresBroker.Configuration(url: "postgres://ws@h/db")
        configuration.retention = .zero
        #expect(throws: WebSocketError.self) { try configuration.validate() }
        configuration.retention = .seconds(1)
        configuration.maxQueuedBytes = 0
        #expect(throws: WebSocketError.self) { try configuration.validate() }
    }

    @Test("a broker that was not started refuses publications with a clear error")
    func notStarted() throws {
        let broker = WebSocketPostgresBroker(configuration: try .init(url: "postgres://ws@127.0.0.1/db"))
        #expect(broker.state == .stopped)
        let error = #expect(throws: WebSocketError.self) { try broker.publish(Self.publication(1)) }
        #expect(error?.code == .brokerUnavailable)
        #expect(error?.message.contains("not running") == true)
    }
}
