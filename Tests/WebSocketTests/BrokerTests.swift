import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import WebSocket

/// The broker abstraction (`WebSocketServer.Configuration.broker`) with a broker written as a
/// user would write one: it records what the server hands it and delivers what the test says
/// another node published. Our clients to our server on 127.0.0.1.
@Suite("Broker", .timeLimit(.minutes(1)))
struct BrokerTests {
    /// A broker that records; `refuse` makes `publish` throw, `failStart` makes `start` throw.
    final class RecordingBroker: WebSocketBroker, @unchecked Sendable {
        private let lock = NIOLock()
        private var _published: [WebSocketBrokerPublication] = []
        private var _delivery: WebSocketBrokerDelivery?
        private var _starts = 0
        private var _shutDowns = 0
        private var _refuse = false
        private var _failStart = false
        var refuse: Bool { get { lock.withLock { _refuse } } set { lock.withLock { _refuse = newValue } } }
        var failStart: Bool { get { lock.withLock { _failStart } } set { lock.withLock { _failStart = newValue } } }

        var published: [WebSocketBrokerPublication] { lock.withLock { _published } }
        var delivery: WebSocketBrokerDelivery? { lock.withLock { _delivery } }
        var starts: Int { lock.withLock { _starts } }
        var shutDowns: Int { lock.withLock { _shutDowns } }

        func start(delivering: WebSocketBrokerDelivery) async throws {
            try lock.withLock {
                _starts += 1
                if _failStart { throw TestFailure("the store is down") }
                _delivery = delivering
            }
        }

        func publish(_ publication: WebSocketBrokerPublication) throws(WebSocketError) {
            lock.lock()
            defer { lock.unlock() }
            if _refuse { throw WebSocketError(.brokerUnavailable, "queue full") }
            _published.append(publication)
        }

        func shutDown() async {
            lock.withLock { _shutDowns += 1 }
        }
    }

    struct TestFailure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    static func start(_ broker: RecordingBroker) async throws -> TopicTests.Fixture {
        try await TopicTests.Fixture.start({ $0.broker = broker }, onMessage: { connection, message in
            _ = try? connection.publish(message, to: "room")
        })
    }

    @Test("the default broker is the local one: nothing to start, topics stay in the process")
    func defaultIsLocal() {
        let configuration = WebSocketServer.Configuration()
        #expect(configuration.broker is WebSocketLocalBroker)
        #expect(WebSocketServer().topicRegistry.broker == nil)
    }

    @Test("listen starts the broker once; shutDown stops it after the connections closed")
    func lifecycle() async throws {
        let broker = RecordingBroker()
        let fixture = try await Self.start(broker)
        #expect(broker.starts == 1)
        try await fixture.server.server.listen(host: "127.0.0.1", port: 0)
        #expect(broker.starts == 1, "a second listen does not start it again")
        try await fixture.server.server.startBroker()
        #expect(broker.starts == 1)
        #expect(broker.delivery != nil)
        _ = try await fixture.clients(1, path: "/room")
        #expect(broker.shutDowns == 0)
        await fixture.server.stop()
        #expect(broker.shutDowns == 1)
        #expect(fixture.server.server.connectionCount == 0)
    }

    @Test("run() as a Service starts the broker also with no listeners (a server inside Hummingbird), and stops it on cancellation")
    func serviceWithoutListeners() async throws {
        let broker = RecordingBroker()
        let server = WebSocketServer(configuration: { var c = WebSocketServer.Configuration(); c.broker = broker; return c }())
        #expect(server.listeners.isEmpty)
        let run = Task { try await server.run() }
        let deadline = ContinuousClock.now + .seconds(10)
        while broker.starts == 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        #expect(broker.starts == 1)
        #expect(broker.delivery != nil)
        run.cancel()
        _ = await run.result
        #expect(broker.shutDowns == 1)
    }

    @Test("a broker that cannot start fails listen with its message; a later listen tries again")
    func failedStart() async throws {
        let broker = RecordingBroker()
        broker.failStart = true
        let server = WebSocketServer(configuration: { var c = WebSocketServer.Configuration(); c.broker = broker; return c }())
        let error = await #expect(throws: WebSocketError.self) { try await server.listen(host: "127.0.0.1", port: 0) }
        #expect(error?.code == .brokerUnavailable)
        #expect(error?.message.contains("the store is down") == true)
        #expect(server.localAddresses.isEmpty, "nothing listens")
        broker.failStart = false
        try await server.listen(host: "127.0.0.1", port: 0)
        #expect(broker.starts == 2)
        await server.shutDown()
    }

    @Test("every publication of this node goes to the broker, its own subscribers get it at once; the sender excluded locally only")
    func publicationsReachTheBroker() async throws {
        let broker = RecordingBroker()
        let fixture = try await Self.start(broker)
        defer { Task { await fixture.server.stop() } }
        let clients = try await fixture.clients(2, path: "/room")
        #expect(try fixture.server.server.publish("from the server", to: "room") == 2)
        #expect(try fixture.server.server.publish(ByteBuffer(bytes: [1, 2]), to: "nobody") == 0)
        clients[0].0.sendUTF("from client 0")
        #expect(TopicTests.texts(try await TopicTests.waitFor(2, in: clients[1].1, "client 1")) == ["from the server", "from client 0"])
        #expect(TopicTests.texts(try await TopicTests.waitFor(1, in: clients[0].1, "client 0")) == ["from the server"])
        #expect(broker.published == [
            WebSocketBrokerPublication(topic: "room", message: .utf8("from the server")),
            WebSocketBrokerPublication(topic: "nobody", message: .binary(ByteBuffer(bytes: [1, 2]))),
            WebSocketBrokerPublication(topic: "room", message: .utf8("from client 0")),
        ], "a topic without local subscribers still goes to the other nodes")
    }

    @Test("a publication the broker delivers reaches this node's subscribers and does not go back to the broker")
    func deliveriesFromOtherNodes() async throws {
        let broker = RecordingBroker()
        let fixture = try await Self.start(broker)
        defer { Task { await fixture.server.stop() } }
        let clients = try await fixture.clients(2, path: "/room")
        let delivery = try #require(broker.delivery)
        #expect(delivery.hasSubscribers("room"))
        #expect(!delivery.hasSubscribers("other"))
        #expect(delivery.topics == ["room"])
        #expect(delivery.deliver(WebSocketBrokerPublication(topic: "room", message: .utf8("from node B"))) == 2)
        #expect(delivery.deliver(WebSocketBrokerPublication(topic: "room", message: .binary(ByteBuffer(bytes: [9])))) == 2)
        #expect(delivery.deliver(WebSocketBrokerPublication(topic: "other", message: .utf8("nobody here"))) == 0)
        for client in clients {
            #expect(try await TopicTests.waitFor(2, in: client.1, "the deliveries") == [.utf8("from node B"), .binary(ByteBuffer(bytes: [9]))])
        }
        #expect(broker.published.isEmpty)
    }

    @Test("a publication the broker refuses fails with brokerUnavailable and reaches nobody")
    func refusal() async throws {
        let broker = RecordingBroker()
        let fixture = try await Self.start(broker)
        defer { Task { await fixture.server.stop() } }
        let clients = try await fixture.clients(2, path: "/room")
        broker.refuse = true
        let error = #expect(throws: WebSocketError.self) { try fixture.server.server.publish("lost?", to: "room") }
        #expect(error?.code == .brokerUnavailable)
        let fromConnection = #expect(throws: WebSocketError.self) { try clients[0].2.publish("lost?", to: "room") }
        #expect(fromConnection?.code == .brokerUnavailable)
        broker.refuse = false
        #expect(try fixture.server.server.publish("marker", to: "room") == 2)
        for client in clients {
            #expect(TopicTests.texts(try await TopicTests.waitFor(1, in: client.1, "the marker")) == ["marker"], "the refused ones never arrived")
        }
        #expect(broker.published.map(\.message) == [.utf8("marker")])
    }

    @Test("a topic name over 1,024 bytes throws before the broker sees it")
    func invalidTopic() async throws {
        let broker = RecordingBroker()
        let fixture = try await Self.start(broker)
        defer { Task { await fixture.server.stop() } }
        let error = #expect(throws: WebSocketError.self) { try fixture.server.server.publish("x", to: String(repeating: "t", count: 1025)) }
        #expect(error?.code == .invalidArgument)
        #expect(broker.published.isEmpty)
    }
}
