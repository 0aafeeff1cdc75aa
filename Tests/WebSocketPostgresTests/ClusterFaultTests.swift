import Foundation
import NIOConcurrencyHelpers
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import Testing
import WebSocket
@testable import WebSocketPostgres

// Faults a deployment has (issue 30), each against a real PostgreSQL 15 and counted message by
// message at every subscriber: the Subscriber checker fails on a duplicate or an order fault,
// and every test compares its counts with what was published. In ClusterTests' suite, so that
// they run one at a time with the rest (the machine is small).
extension ClusterTests {
    @Test("a node restarted three times under the same name: every publication of every incarnation reaches the other node once, in order (before: the restarted node's sequence numbers collided with its predecessor's and all were dropped)")
    func restartUnderTheSameName() async throws {
        let postgres = try await ThrowawayPostgres.start()
        defer { postgres.destroy() }
        let b = try await ClusterNode.start("b", postgres: postgres)
        let remote = try await b.subscriber("room")
        let perRun = 50
        var incarnations: Set<UUID> = []
        for run in 0..<4 {
            let a = try await ClusterNode.start("a", postgres: postgres)
            incarnations.insert(a.broker.incarnation)  // after-fix API
            for index in (run * perRun)..<((run + 1) * perRun) {
                try a.server.publish(TestMessage.make("a", index, kind: index % 5 == 0 ? 1 : 3), to: "room")
            }
            try await waitUntil(30, "run \(run)'s \(perRun) at node b (has \(remote.received(from: "a")))") {
                remote.received(from: "a") == (run + 1) * perRun
            }
            await a.server.shutDown()
        }
        #expect(incarnations.count == 4, "each start is another incarnation")  // after-fix API
        #expect(remote.faults.isEmpty, "\(remote.faults.prefix(5))")
        #expect(remote.count == 4 * perRun)
        #expect(try postgres.psql("SELECT count(*) FROM websocket_publications") == "\(4 * perRun)")
        #expect(try postgres.psql("SELECT count(DISTINCT incarnation) FROM websocket_publications WHERE node = 'a'") == "4")  // after-fix API
        await b.server.shutDown()
    }

    @Test("a table of the first version (UNIQUE (node, seq)) is migrated: its rows stay, and a node restarted under an old name is not dropped")
    func migratesTheFirstVersionsTable() async throws {
        let postgres = try await ThrowawayPostgres.start()
        defer { postgres.destroy() }
        try postgres.psql("""
            CREATE TABLE websocket_publications (
                id bigserial PRIMARY KEY, node text NOT NULL, seq bigint NOT NULL, topic text NOT NULL,
                opcode smallint NOT NULL, payload bytea NOT NULL,
                published_at timestamptz NOT NULL DEFAULT clock_timestamp(), UNIQUE (node, seq));
            INSERT INTO websocket_publications (node, seq, topic, opcode, payload)
                SELECT 'a', s, 'room', 1, 'old'::bytea FROM generate_series(1, 10) s;
            INSERT INTO websocket_publications (node, seq, topic, opcode, payload)
                SELECT 'b', s, 'room', 1, 'old'::bytea FROM generate_series(1, 10) s;
            """)
        let b = try await ClusterNode.start("b", postgres: postgres)
        let a = try await ClusterNode.start("a", postgres: postgres)
        let remote = try await b.subscriber("room")
        for index in 0..<20 { try a.server.publish(TestMessage.make("a", index, kind: 3), to: "room") }
        try await waitUntil(30, "the 20 at node b") { remote.received(from: "a") == 20 }
        #expect(remote.faults.isEmpty, "\(remote.faults.prefix(5))")
        #expect(try postgres.psql("SELECT count(*) FROM websocket_publications") == "40")
        await a.server.shutDown()
        await b.server.shutDown()
    }

    @Test("issue 30's outage, counted at every subscriber: 300 mixed messages at about 50/s from node a, PostgreSQL stopped (immediate) at message 100 and started 3 s later; the servers' default maxBackpressure (1 MiB): each of a's 2 and b's 3 subscribers gets all 300, once, in order")
    func outageCountedAtEverySubscriber() async throws {
        let postgres = try await ThrowawayPostgres.start()
        defer { postgres.destroy() }
        let defaultBackpressure = WebSocketServer.Configuration().maxBackpressure
        let configure = ClusterNode.brokerReconnectDefaults
        let a = try await ClusterNode.start("a", postgres: postgres, maxBackpressure: defaultBackpressure, configure)
        let b = try await ClusterNode.start("b", postgres: postgres, maxBackpressure: defaultBackpressure, configure)
        var subscribers: [Subscriber] = []
        for _ in 0..<2 { subscribers.append(try await a.subscriber("room")) }
        for _ in 0..<3 { subscribers.append(try await b.subscriber("room")) }
        let total = 300
        try await postgres.publishThroughOutage(total: total) { index in
            try a.server.publish(TestMessage.make("a", index), to: "room")
        }
        let all = subscribers
        do {
            try await waitUntil(60, "all \(total) at every subscriber") { all.allSatisfy { $0.received(from: "a") == total } }
        } catch {
            let counts = subscribers.map { $0.received(from: "a") }
            let stored = (try? postgres.psql("SELECT count(*) FROM websocket_publications")) ?? "?"
            Issue.record("received per subscriber \(counts) (a: 2, b: 3), stored \(stored), skipped at a \(a.server.skippedPublishedMessages), at b \(b.server.skippedPublishedMessages)")
        }
        for (index, subscriber) in subscribers.enumerated() {
            #expect(subscriber.faults.isEmpty, "subscriber \(index): \(subscriber.faults.prefix(5))")
            #expect(subscriber.count == total, "subscriber \(index)")
        }
        #expect(try postgres.psql("SELECT count(*) FROM websocket_publications") == "\(total)")
        #expect(b.server.skippedPublishedMessages == 0)
        await a.server.shutDown()
        await b.server.shutDown()
    }

    @Test("issue 30's outage with readers slower than the burst: node b's 3 subscribers read 250 messages/s (5 times the publish rate) and node a's writer stores the outage's 200 publications (about 8 MB) in one go after the restart; with the servers' default maxBackpressure (1 MiB) every message a subscriber lacks is one the server counted as skipped (known issue: some are skipped, see the comment)")
    func outageBurstToReadersSlowerThanTheBurst() async throws {
        let postgres = try await ThrowawayPostgres.start()
        defer { postgres.destroy() }
        let defaultBackpressure = WebSocketServer.Configuration().maxBackpressure
        let configure = ClusterNode.brokerReconnectDefaults
        let a = try await ClusterNode.start("a", postgres: postgres, maxBackpressure: defaultBackpressure, configure)
        let b = try await ClusterNode.start("b", postgres: postgres, maxBackpressure: defaultBackpressure, configure)
        var subscribers: [Subscriber] = []
        var readers: [Task<Void, Never>] = []
        for _ in 0..<2 { subscribers.append(try await a.subscriber("room")) }
        for _ in 0..<3 {
            let (subscriber, reading) = try await b.slowSubscriber("room", pace: .milliseconds(4))
            subscribers.append(subscriber)
            readers.append(reading)
        }
        defer { for reader in readers { reader.cancel() } }
        let total = 300
        try await postgres.publishThroughOutage(total: total) { index in
            // Small text, 20 KB text and 100 KiB binary in turn, as in the issue.
            try a.server.publish(TestMessage.make("a", index, kind: [3, 1, 0][index % 3]), to: "room")
        }
        let all = subscribers
        try? await waitUntil(60, "all \(total) at every subscriber, or some skipped") {
            all.reduce(0) { $0 + $1.received(from: "a") } + b.server.skippedPublishedMessages + a.server.skippedPublishedMessages == all.count * total
        }
        let counts = subscribers.map { $0.received(from: "a") }
        let skipped = b.server.skippedPublishedMessages
        print("outageBurstToReadersSlowerThanTheBurst: received per subscriber \(counts) of \(total) (a: 2, b: 3), skipped at a \(a.server.skippedPublishedMessages), at b \(skipped), stored \((try? postgres.psql("SELECT count(*) FROM websocket_publications")) ?? "?")")
        for (index, subscriber) in subscribers.enumerated() {
            #expect(subscriber.faults.isEmpty, "subscriber \(index): \(subscriber.faults.prefix(5))")
        }
        // The cause of issue 30's 250-256 of 300 at node b: not the broker (every publication is
        // stored, and node b reads and delivers every row), but the topic layer's maxBackpressure
        // skip policy meeting the burst node b delivers when node a's writer stores its outage
        // queue (200 publications, about 8 MB, read in two pages of 4 MiB and handed to the
        // subscribers at once): a subscriber that reads 5 times faster than the publishers
        // publish still falls more than 1 MiB behind the burst. Measured: [300, 300, 272, 272,
        // 264] received, 92 skipped at b. The fix needs the topic layer to let a broker wait for
        // its subscribers' queues (WebSocketBrokerDelivery), which the broker cannot see.
        withKnownIssue("issue 30: a broker's burst meets maxBackpressure's skip policy at the receiving node", isIntermittent: true) {
            for (index, subscriber) in subscribers.enumerated() {
                #expect(subscriber.received(from: "a") == total, "subscriber \(index): \(counts)")
            }
            #expect(skipped == 0)
        }
        // What one did not get, the server counted as skipped: nothing goes missing unreported.
        #expect(subscribers.reduce(0) { $0 + total - $1.received(from: "a") } == skipped + a.server.skippedPublishedMessages)
        #expect(try postgres.psql("SELECT count(*) FROM websocket_publications") == "\(total)")
        await a.server.shutDown()
        await b.server.shutDown()
    }

    @Test("PostgreSQL stopped (immediate) for longer than node a's outage queue holds (maxQueuedBytes 256 KiB): publish throws brokerUnavailable past it, never drops silently; after the restart every accepted publication reaches node b once, in order, none of the refused ones anywhere, and publishing works again")
    func outageLongerThanTheQueue() async throws {
        let postgres = try await ThrowawayPostgres.start()
        defer { postgres.destroy() }
        let a = try await ClusterNode.start("a", postgres: postgres) { $0.maxQueuedBytes = 256 << 10 }
        let b = try await ClusterNode.start("b", postgres: postgres)
        let local = try await a.subscriber("room")
        let remote = try await b.subscriber("room")
        for index in 0..<10 { try a.server.publish(TestMessage.make("a", index, kind: 1), to: "room") }
        try await waitUntil(30, "the first 10 at node b") { remote.received(from: "a") == 10 }
        try postgres.stopServer(immediate: true)
        try await waitUntil(30, "node a degraded") { if case .degraded = a.broker.state { true } else { false } }
        // 20 KB each: about 13 fit in 256 KiB. Publish 40 while PostgreSQL is down.
        var accepted: [Int] = Array(0..<10)
        var refused: [Int] = []
        for index in 10..<50 {
            do {
                try a.server.publish(TestMessage.make("a", index, kind: 1), to: "room")
                accepted.append(index)
            } catch {
                #expect(error.code == .brokerUnavailable, "\(error)")
                refused.append(index)
            }
        }
        let queuedWhileDown = a.broker.queuedBytes
        try postgres.startServer()
        let acceptedCount = accepted.count
        try await waitUntil(60, "the accepted ones at node b (has \(remote.received(from: "a")) of \(acceptedCount))") {
            remote.received(from: "a") == acceptedCount
        }
        // And it takes publications again once the queue drained.
        try await waitUntil(30, "node a's queue to drain") { a.broker.queuedCount == 0 }
        try a.server.publish(TestMessage.make("a", 50, kind: 1), to: "room")
        accepted.append(50)
        try await waitUntil(30, "the one after at node b") { remote.has("a", 50) }
        print("outageLongerThanTheQueue: \(accepted.count - 11) of 40 accepted during the outage (\(queuedWhileDown) bytes queued), \(refused.count) refused with brokerUnavailable; node b got \(remote.received(from: "a")) of \(accepted.count) accepted, node a's subscriber \(local.received(from: "a")); stored \((try? postgres.psql("SELECT count(*) FROM websocket_publications")) ?? "?")")
        #expect(!refused.isEmpty && refused.count < 40, "some fit, the rest were refused: \(refused.count)")
        #expect(queuedWhileDown <= 256 << 10)
        for subscriber in [local, remote] {
            #expect(subscriber.faults.isEmpty, "\(subscriber.faults.prefix(5))")
            #expect(subscriber.received(from: "a") == accepted.count)
            #expect(accepted.allSatisfy { subscriber.has("a", $0) } && !refused.contains { subscriber.has("a", $0) })
        }
        #expect(try postgres.psql("SELECT count(*) FROM websocket_publications") == "\(accepted.count)")
        await a.server.shutDown()
        await b.server.shutDown()
    }

    @Test("a topic name with U+0000: subscribe and publish throw invalidArgument on every server (broker or not), and the publications after it reach the other node (before: accepted, and the writer retried the batch PostgreSQL refused for ever)")
    func nulTopic() async throws {
        let postgres = try await ThrowawayPostgres.start()
        defer { postgres.destroy() }
        let a = try await ClusterNode.start("a", postgres: postgres)
        let b = try await ClusterNode.start("b", postgres: postgres)
        let remote = try await b.subscriber("room")
        for index in 0..<10 { try a.server.publish(TestMessage.make("a", index, kind: 3), to: "room") }
        let refusal = #expect(throws: WebSocketError.self) { try a.server.publish("poison", to: "lobby\u{0}") }
        #expect(refusal?.code == .invalidArgument)
        #expect(refusal?.message.contains("U+0000") == true, "\(refusal?.message ?? "")")
        // A local server (no broker) refuses it too: the rule is the same for every broker.
        let local = WebSocketServer()
        #expect(throws: WebSocketError.self) { try local.publish("poison", to: "\u{0}") }
        for index in 10..<20 { try a.server.publish(TestMessage.make("a", index, kind: 3), to: "room") }
        try await waitUntil(30, "the 20 at node b (has \(remote.received(from: "a")))") { remote.received(from: "a") == 20 }
        #expect(remote.faults.isEmpty, "\(remote.faults.prefix(5))")
        #expect(a.broker.state == .connected)
        await a.server.shutDown()
        await b.server.shutDown()
    }

    @Test("a row PostgreSQL refuses (a trigger raises a data exception for one topic) in the middle of a batch: it is dropped and reported, the 40 around it are stored and delivered once, in order (before: the batch was retried for ever and nothing after it went out)")
    func poisonRowIsIsolated() async throws {
        let postgres = try await ThrowawayPostgres.start()
        defer { postgres.destroy() }
        let a = try await ClusterNode.start("a", postgres: postgres)
        let b = try await ClusterNode.start("b", postgres: postgres)
        let remote = try await b.subscriber("room")
        let dropped = NIOLockedValueBox<[String]>([])
        a.broker.onDropped { item in dropped.withLockedValue { $0.append(item.topic) } }  // after-fix API
        try postgres.psql("""
            CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.topic = 'poison' THEN RAISE EXCEPTION 'refused by the test' USING ERRCODE = '22021'; END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER poison BEFORE INSERT ON websocket_publications FOR EACH ROW EXECUTE FUNCTION poison();
            """)
        // One batch: published in one go, before the writer wakes.
        for index in 0..<20 { try a.server.publish(TestMessage.make("a", index, kind: 3), to: "room") }
        try a.server.publish("bad", to: "poison")
        for index in 20..<40 { try a.server.publish(TestMessage.make("a", index, kind: 3), to: "room") }
        try await waitUntil(30, "the 40 at node b (has \(remote.received(from: "a")))") { remote.received(from: "a") == 40 }
        #expect(remote.faults.isEmpty, "\(remote.faults.prefix(5))")
        #expect(try postgres.psql("SELECT count(*) FROM websocket_publications") == "40")
        try await waitUntil(10, "the drop reported") { dropped.withLockedValue { $0 } == ["poison"] }  // after-fix API
        #expect(a.broker.droppedCount == 1)  // after-fix API
        #expect(a.broker.queuedCount == 0)
        // And it goes on: the next publication is stored in a batch of its own.
        try a.server.publish(TestMessage.make("a", 40, kind: 3), to: "room")
        try await waitUntil(30, "one more at node b") { remote.has("a", 40) }
        await a.server.shutDown()
        await b.server.shutDown()
    }

    @Test("a topic subscribed while node b's read of the table waits (a lock holds it after its query was made without the topic): the publication committed then is delivered, not passed over (before: its row came without its payload and the node moved past it; a CI run lost a node's first publications that way)")
    func subscribedWhileAReadWaits() async throws {
        let postgres = try await ThrowawayPostgres.start()
        defer { postgres.destroy() }
        let b = try await ClusterNode.start("b", postgres: postgres)
        try await waitUntil(30, "node b connected (\(b.broker.state))") { b.broker.state == .connected }
        // A session of the application's holds the table; node b, woken by a notification, makes
        // its query (no topic subscribed there yet) and waits behind the lock.
        var logger = Logger(label: "test.session")
        logger.logLevel = .critical
        let session = try await PostgresConnection.connect(
            on: MultiThreadedEventLoopGroup.singleton.next(), configuration: postgres.configuration, id: 1, logger: logger)
        // Closed whatever happens (postgres-nio traps on a connection dropped unclosed).
        do {
            _ = try await session.query("BEGIN", logger: logger)
            _ = try await session.query("LOCK TABLE websocket_publications IN ACCESS EXCLUSIVE MODE", logger: logger)
            let readsBefore = b.broker.readCounts.reads
            try postgres.psql(#"SELECT pg_notify('websocket_publications', '{"l": 1000000}')"#)
            try await waitUntil(30, "node b's read waiting for the lock") {
                try postgres.psql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%page_rows%'") == "1"
            }
            #expect(b.broker.readCounts.reads == readsBefore, "the read returned before the lock was released")
            // Subscribed now; then the session publishes and commits, which lets node b's query run:
            // its snapshot has the row, its topics did not.
            let remote = try await b.subscriber("room")
            _ = try await session.query("SELECT websocket_publish('room', 'sql/0/small')", logger: logger)
            _ = try await session.query("COMMIT", logger: logger)
            try await waitUntil(10, "the publication at node b (has \(remote.count), \(b.broker.readsAgain) pages read again, last id \(b.broker.lastSeenID))") {
                remote.has("sql", 0)
            }
            #expect(remote.count == 1 && remote.faults.isEmpty, "\(remote.count) received, \(remote.faults.prefix(5))")
            #expect(b.broker.readsAgain >= 1)
        } catch {
            try? await session.close()
            throw error
        }
        try await session.close()
        await b.server.shutDown()
    }

    @Test("forged NOTIFYs on the broker's channel from a login with no privilege on the table (an id far ahead, with and without the id before, a bare number): the node's last id seen stays what it read, and the 20 publications after reach it")
    func forgedNotify() async throws {
        let postgres = try await ThrowawayPostgres.start()
        defer { postgres.destroy() }
        let a = try await ClusterNode.start("a", postgres: postgres)
        let b = try await ClusterNode.start("b", postgres: postgres)
        let remote = try await b.subscriber("room")
        // What node b had, should a wait time out (a CI run once timed out on the first 5 and
        // said no more).
        func seen() -> String {
            "has \(remote.received(from: "a")), faults \(remote.faults.prefix(5)), connected \(remote.connection.connected) (\(remote.connection.closeDescription ?? "")), \(b.server.subscriberCount(of: "room")) subscribed; b \(b.broker.state), last id \(b.broker.lastSeenID), \(b.broker.readCounts.reads) reads; a \(a.broker.state), \(a.broker.queuedCount) queued"
        }
        for index in 0..<5 { try a.server.publish(TestMessage.make("a", index, kind: 3), to: "room") }
        try await waitUntil(30, "the first 5 at node b (\(seen()))") { remote.received(from: "a") >= 5 }
        #expect(remote.received(from: "a") == 5 && remote.faults.isEmpty, "\(seen())")
        // Node b publishes one too: its identity is in the table and in every notification
        // (anyone may LISTEN), so a forger can claim a batch is b's own.
        try b.server.publish(TestMessage.make("b", 0, kind: 3), to: "other")
        try await waitUntil(10, "node b's publication stored") { b.broker.queuedCount == 0 }
        let newest = Int64(try postgres.psql("SELECT max(id) FROM websocket_publications"))!
        try await waitUntil(10, "node b past the 6") { b.broker.lastSeenID == newest }
        let identity = (try? postgres.psql("SELECT incarnation FROM websocket_publications WHERE node = 'b'")) ?? ""
        try postgres.psql("CREATE ROLE mallory LOGIN PASSWORD 'x'")
        let readsBefore = b.broker.readCounts.reads
        let far: Int64 = 9_000_000_000
        for note in [
            // "This batch is node b's own" (b would not read it): the node name and the identity.
            #"{"l": \#(far), "p": \#(newest), "n": "b", "i": "\#(identity.isEmpty ? "00000000-0000-0000-0000-000000000001" : identity)", "t": ["room"]}"#,
            // "Of no topic here".
            #"{"l": \#(far + 1), "p": \#(far), "n": "c", "i": "00000000-0000-0000-0000-000000000001", "t": ["nobody"]}"#,
            #"{"l": \#(far)}"#,
            "\(far)",
        ] {
            try postgres.psql("SET ROLE mallory; SELECT pg_notify('websocket_publications', '\(note)')")
        }
        // The forgeries reached node b: it read the table for them (and found nothing new).
        try? await waitUntil(10, "node b to read for the forgeries") { b.broker.readCounts.reads > readsBefore }
        #expect(b.broker.lastSeenID <= newest, "moved by a notification alone: \(b.broker.lastSeenID)")
        for index in 5..<25 { try a.server.publish(TestMessage.make("a", index, kind: 3), to: "room") }
        try await waitUntil(30, "the 20 after the forgeries at node b (\(seen()))") { remote.received(from: "a") >= 25 }
        #expect(remote.received(from: "a") == 25 && remote.faults.isEmpty, "\(seen())")
        let last = Int64(try postgres.psql("SELECT max(id) FROM websocket_publications"))!
        try await waitUntil(10, "node b at the last row") { b.broker.lastSeenID == last }
        await a.server.shutDown()
        await b.server.shutDown()
    }

    @Test("catch-up of 100 MiB (1,000 rows of 100 KiB) after node b lost the database: every row delivered once, in order, none skipped, and no read of the table brings more than 4 MiB and a row (before: the 1,000 rows in one read, 100 MiB)")
    func catchUpIsBoundedInMemory() async throws {
        let postgres = try await ThrowawayPostgres.start()
        defer { postgres.destroy() }
        try postgres.psql("CREATE ROLE wsb LOGIN SUPERUSER PASSWORD '\(ThrowawayPostgres.password)'")
        let a = try await ClusterNode.start("a", postgres: postgres)
        let b = try await ClusterNode.start("b", postgres: postgres) { $0.postgres.username = "wsb" }
        let remote = try await b.subscriber("room")
        try postgres.psql("ALTER ROLE wsb NOLOGIN")
        try postgres.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'wsb'")
        try await waitUntil(30, "node b degraded") { if case .degraded = b.broker.state { true } else { false } }
        let total = 1000
        for index in 0..<total {
            // Paced by node a's queue (64 MiB): wait while it holds 32 MiB.
            if a.broker.queuedBytes > 32 << 20 {
                try await waitUntil(60, "node a's queue to drain") { a.broker.queuedBytes < 8 << 20 }
            }
            try a.server.publish(TestMessage.make("a", index, kind: 0), to: "room")
        }
        try await waitUntil(60, "node a to store the 1,000") { a.broker.queuedCount == 0 }
        #expect(try postgres.psql("SELECT sum(octet_length(payload)) FROM websocket_publications") == "\(total * 100 * 1024)")
        let readsBefore = b.broker.readCounts.reads
        try postgres.psql("ALTER ROLE wsb LOGIN")
        try await waitUntil(120, "the 1,000 at node b (has \(remote.received(from: "a")), skipped \(b.server.skippedPublishedMessages))") {
            remote.received(from: "a") == total || b.server.skippedPublishedMessages > 0
        }
        #expect(b.server.skippedPublishedMessages == 0)
        #expect(remote.received(from: "a") == total)
        #expect(remote.faults.isEmpty, "\(remote.faults.prefix(5))")
        // In pages: 100 MiB in reads of at most 4 MiB and a row is 25 reads or more (before: one).
        #expect(b.broker.readCounts.reads - readsBefore >= 25, "\(b.broker.readCounts.reads - readsBefore) reads for 100 MiB")
        #expect(b.broker.largestRead <= WebSocketPostgresBroker.fetchBytes + 100 * 1024, "largest read \(b.broker.largestRead) bytes")  // after-fix API
        await a.server.shutDown()
        await b.server.shutDown()
    }

    @Test("websocket_publish from the application's own transaction (psql, another client): committed -> delivered once on every node, text and binary; rolled back -> never; the same key twice -> once")
    func publishFromSQL() async throws {
        let postgres = try await ThrowawayPostgres.start()
        defer { postgres.destroy() }
        let a = try await ClusterNode.start("a", postgres: postgres)
        let b = try await ClusterNode.start("b", postgres: postgres)
        let subscribers = [try await a.subscriber("room"), try await b.subscriber("room")]
        func text(_ index: Int) -> String {
            guard case .utf8(let text) = TestMessage.make("sql", index, kind: 3) else { fatalError() }
            return text
        }
        try postgres.psql("CREATE TABLE orders (id int PRIMARY KEY)")
        // Committed, with the application's own write.
        try postgres.psql("BEGIN; INSERT INTO orders VALUES (1); SELECT websocket_publish('room', '\(text(0))'); COMMIT;")
        // Rolled back: never delivered.
        try postgres.psql("BEGIN; INSERT INTO orders VALUES (2); SELECT websocket_publish('room', '\(text(1))'); ROLLBACK;")
        // Failed: the transaction is aborted, nothing delivered.
        _ = try? postgres.psql("BEGIN; SELECT websocket_publish('room', '\(text(2))'); INSERT INTO orders VALUES (1); COMMIT;")
        // With a key, twice: once.
        let first = try postgres.psql("SELECT websocket_publish('room', '\(text(3))', 'order-3')")
        let second = try postgres.psql("SELECT websocket_publish('room', '\(text(3))', 'order-3')")
        #expect(!first.isEmpty && second.isEmpty, "first \(first), second \(second) (NULL: already stored)")
        // Binary: a bytea payload, TestMessage's 100 KiB kind (its header, then the fill byte
        // 4 * 31 + 3 = 0x7f).
        try postgres.psql("SELECT websocket_publish('room', convert_to('sql/4/', 'UTF8') || decode(repeat('7f', 102400 - 6), 'hex'))")
        // The last one, in order after the others: when it is in, the others had their chance.
        try postgres.psql("SELECT websocket_publish('room', '\(text(5))')")
        try await waitUntil(30, "the last one at both nodes") { subscribers.allSatisfy { $0.has("sql", 5) } }
        for (index, subscriber) in subscribers.enumerated() {
            #expect(subscriber.faults.isEmpty, "subscriber \(index): \(subscriber.faults.prefix(5))")
            #expect(subscriber.has("sql", 0) && subscriber.has("sql", 3) && subscriber.has("sql", 4), "subscriber \(index)")
            #expect(!subscriber.has("sql", 1), "rolled back, yet delivered at \(index)")
            #expect(!subscriber.has("sql", 2), "failed, yet delivered at \(index)")
            #expect(subscriber.count == 4, "subscriber \(index): \(subscriber.count)")
        }
        #expect(try postgres.psql("SELECT opcode FROM websocket_publications WHERE node = 'sql' ORDER BY id") == "1\n1\n2\n1")
        await a.server.shutDown()
        await b.server.shutDown()
    }

    @Test("two nodes publish to one topic while a third is shut down and started again under its name, mid-stream: every subscriber on a and b gets both publishers' messages once, in order; c's gets everything published after it is back, once, in order")
    func twoPublishWhileAThirdRestarts() async throws {
        let postgres = try await ThrowawayPostgres.start()
        defer { postgres.destroy() }
        let a = try await ClusterNode.start("a", postgres: postgres)
        let b = try await ClusterNode.start("b", postgres: postgres)
        var c = try await ClusterNode.start("c", postgres: postgres)
        let steady = [try await a.subscriber("room"), try await b.subscriber("room")]
        let before = try await c.subscriber("room")
        let perNode = 600
        let restarted = NIOLockedValueBox<Subscriber?>(nil)
        let restartAt = 200
        try await withThrowingTaskGroup(of: Void.self) { group in
            for node in [a, b] {
                group.addTask {
                    for index in 0..<perNode {
                        if index == restartAt + 100 {
                            // The rest goes out once node c is back with its subscriber: on a fast
                            // run both publishers finished before it joined, and it got nothing.
                            try await waitUntil(60, "node c back with its subscriber") { restarted.withLockedValue { $0 != nil } }
                        }
                        try node.server.publish(TestMessage.make(node.name, index, kind: index % 7 == 0 ? 1 : 3), to: "room")
                        if index % 50 == 49 {
                            // Flow control (a round at every steady subscriber), as threeNodes does.
                            try await waitUntil(60, "\(node.name)'s round at a and b") { steady.allSatisfy { $0.received(from: node.name) > index } }
                        }
                    }
                }
            }
            // Node c restarts while they publish.
            try await waitUntil(60, "the stream under way") { steady.allSatisfy { $0.received(from: "a") >= restartAt && $0.received(from: "b") >= restartAt } }
            await c.server.shutDown()
            c = try await ClusterNode.start("c", postgres: postgres)
            let again = try await c.subscriber("room")
            restarted.withLockedValue { $0 = again }
            try await group.waitForAll()
        }
        try await waitUntil(60, "every message at a and b") { steady.allSatisfy { $0.count == 2 * perNode } }
        let again = try #require(restarted.withLockedValue { $0 })
        try await waitUntil(60, "the last of each at c") { again.has("a", perNode - 1) && again.has("b", perNode - 1) }
        for (index, subscriber) in (steady + [before, again]).enumerated() {
            #expect(subscriber.faults.isEmpty, "subscriber \(index): \(subscriber.faults.prefix(5))")
        }
        for subscriber in steady { #expect(subscriber.received(from: "a") == perNode && subscriber.received(from: "b") == perNode) }
        // At c: from its first message of each publisher, every later one (nothing skipped).
        for publisher in ["a", "b"] {
            let got = again.received(from: publisher)
            let first = perNode - got
            #expect(got > 0 && (first..<perNode).allSatisfy { again.has(publisher, $0) }, "c after the restart: \(got) of \(publisher)'s, from \(first)")
        }
        print("twoPublishWhileAThirdRestarts: a and b's subscribers \(steady.map(\.count)) of \(2 * perNode); c before the restart \(before.count), after \(again.received(from: "a")) of a's and \(again.received(from: "b")) of b's; faults \((steady + [before, again]).map { $0.faults.count })")
        for node in [a, b, c] { await node.server.shutDown() }
    }

    @Test("node a's network to PostgreSQL cut for 10 s (its veth link down: no FIN, no RST) while a and b each publish about 100/s, then restored: every subscriber gets all of both publishers' messages once, in order", .enabled(if: PostgresNetwork.isAvailable, "needs root for a network namespace"))
    func networkCut() async throws {
        let network = try PostgresNetwork.make(links: 2)
        defer { network.destroy() }
        let postgres = try await ThrowawayPostgres.start(namespace: network.name, addresses: network.links.map(\.peerAddress))
        defer { postgres.destroy() }
        func over(_ link: Int) -> (inout WebSocketPostgresBroker.Configuration) -> Void {
            { configuration in
                configuration.postgres = .init(
                    host: network.links[link].peerAddress, port: postgres.port, username: ThrowawayPostgres.user,
                    password: ThrowawayPostgres.password, database: postgres.database, tls: .disable)
                configuration.queryTimeout = .seconds(2)
                configuration.connectTimeout = .seconds(2)
            }
        }
        let a = try await ClusterNode.start("a", postgres: postgres, over(0))
        let b = try await ClusterNode.start("b", postgres: postgres, over(1))
        let atA = try await a.subscriber("room")
        let atB = try await b.subscriber("room")
        let states = StateLog()
        a.broker.onStateChange { states.append("a", $0) }
        let total = 1500
        var restored = false
        for index in 0..<total {
            if index == 200 { try network.cut(0) }
            if index == 1200 { try network.restore(0); restored = true }
            try a.server.publish(TestMessage.make("a", index, kind: index % 50 == 0 ? 1 : 3), to: "room")
            try b.server.publish(TestMessage.make("b", index, kind: index % 50 == 0 ? 1 : 3), to: "room")
            try await Task.sleep(for: .milliseconds(10))   // the publishers' rate: about 100/s each
        }
        #expect(restored)
        #expect(states.sawDegraded("a"), "node a noticed the cut: \(states.sequence("a"))")
        try await waitUntil(90, "everything at both (a: \(atA.count), b: \(atB.count))") { atA.count == 2 * total && atB.count == 2 * total }
        for (name, subscriber) in [("a", atA), ("b", atB)] {
            #expect(subscriber.faults.isEmpty, "at \(name): \(subscriber.faults.prefix(5))")
            #expect(subscriber.received(from: "a") == total && subscriber.received(from: "b") == total, "at \(name)")
        }
        #expect(try postgres.psql("SELECT count(*) FROM websocket_publications") == "\(2 * total)")
        print("networkCut: at a's subscriber \(atA.received(from: "a")) of a's, \(atA.received(from: "b")) of b's; at b's \(atB.received(from: "a")) of a's, \(atB.received(from: "b")) of b's (of \(total) each); faults \(atA.faults.count + atB.faults.count); a's states \(states.sequence("a"))")
        await a.server.shutDown()
        await b.server.shutDown()
    }
}
