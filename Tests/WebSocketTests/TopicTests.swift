import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import WebSocket

/// Topics (publish/subscribe), end to end: our clients to our server on 127.0.0.1, every wait
/// bounded and on an event, never a fixed sleep.
@Suite("Topics", .timeLimit(.minutes(1)))
struct TopicTests {
    /// A server whose connections subscribe to the topic their path names (`/room` → "room";
    /// `/` subscribes to nothing) and run `onMessage` for what they receive.
    struct Fixture {
        let server: TestServer
        let accepted: Expectation<WebSocketConnection>

        static func start(
            group: (any EventLoopGroup)? = nil,
            _ configure: (inout WebSocketServer.Configuration) -> Void = { _ in },
            onMessage: @escaping @Sendable (WebSocketConnection, WebSocketMessage) -> Void = { _, _ in }
        ) async throws -> Fixture {
            var configuration = WebSocketServer.Configuration()
            configure(&configuration)
            let server = WebSocketServer(configuration: configuration, eventLoopGroup: group ?? MultiThreadedEventLoopGroup.singleton)
            let accepted = Expectation<WebSocketConnection>()
            server.onRequest { request in
                guard let connection = try? request.accept() else { return }
                let topic = String(request.resourceURL.path.dropFirst())
                if !topic.isEmpty { _ = try? connection.subscribe(to: topic) }
                connection.onMessage { onMessage(connection, $0) }
                accepted.fulfill(connection)
            }
            let address = try await server.listen(host: "127.0.0.1", port: 0)
            return Fixture(server: TestServer(server: server, port: address.port!), accepted: accepted)
        }

        /// Connects `count` clients to `path`; returns each with what it receives.
        func clients(_ count: Int, path: String, configuration: WebSocketClient.Configuration = .init()) async throws -> [(WebSocketConnection, Collected<WebSocketMessage>, WebSocketConnection)] {
            var result: [(WebSocketConnection, Collected<WebSocketMessage>, WebSocketConnection)] = []
            for _ in 0..<count {
                let client = try await WebSocketClient(configuration: configuration).connect(url: "ws://127.0.0.1:\(server.port)\(path)")
                let received = Collected<WebSocketMessage>()
                client.onMessage { received.append($0) }
                result.append((client, received, try await accepted.value(10, "the server's end of a connection")))
            }
            return result
        }
    }

    /// Waits (bounded) until `received` holds `count` messages.
    static func waitFor(_ count: Int, in received: Collected<WebSocketMessage>, _ what: String) async throws -> [WebSocketMessage] {
        try await withTimeout(20, what) {
            while received.all.count < count { try await Task.sleep(for: .milliseconds(2)) }
            return received.all
        }
    }

    static func texts(_ messages: [WebSocketMessage]) -> [String] {
        messages.map { message in
            switch message {
            case .utf8(let text): text
            case .binary(let bytes): "binary:\(bytes.readableBytes)"
            }
        }
    }

    @Test("subscribe, publish to everyone, counts, topic lists, unsubscribe")
    func basics() async throws {
        let fixture = try await Fixture.start()
        defer { Task { await fixture.server.stop() } }
        let clients = try await fixture.clients(3, path: "/room")
        let server = fixture.server.server
        #expect(server.subscriberCount(of: "room") == 3)
        #expect(server.subscriberCount(of: "other") == 0)
        #expect(server.topics == ["room"])
        #expect(clients[0].2.topics == ["room"])
        #expect(try clients[0].2.subscribe(to: "room") == false, "a second subscribe to the same topic")
        #expect(try clients[0].2.subscribe(to: "news"))
        #expect(server.topics == ["news", "room"])
        #expect(clients[0].2.topics == ["news", "room"])

        #expect(try server.publish("hello", to: "room") == 3)
        #expect(try server.publish(ByteBuffer(bytes: [1, 2, 3]), to: "room") == 3)
        #expect(try server.publish(.utf8("news"), to: "news") == 1)
        #expect(try server.publish("nobody", to: "empty") == 0)
        for (index, client) in clients.enumerated() {
            let expected = index == 0 ? ["hello", "binary:3", "news"] : ["hello", "binary:3"]
            #expect(Self.texts(try await Self.waitFor(expected.count, in: client.1, "client \(index)'s messages")) == expected)
        }

        #expect(clients[0].2.unsubscribe(from: "news"))
        #expect(!clients[0].2.unsubscribe(from: "news"))
        #expect(server.topics == ["room"])
        #expect(try server.publish("gone", to: "news") == 0)
        #expect(clients[0].2.unsubscribe(from: "room"))
        #expect(server.subscriberCount(of: "room") == 2)
        #expect(clients[0].2.topics.isEmpty)
    }

    @Test("connection.publish reaches every other subscriber, not the sender")
    func connectionPublishExcludesSender() async throws {
        let fixture = try await Fixture.start(onMessage: { connection, message in
            _ = try? connection.publish(message, to: "room")
        })
        defer { Task { await fixture.server.stop() } }
        let clients = try await fixture.clients(3, path: "/room")
        clients[0].0.sendUTF("from 0")
        for index in 1...2 {
            #expect(Self.texts(try await Self.waitFor(1, in: clients[index].1, "the message at client \(index)")) == ["from 0"])
        }
        // Then a marker to everyone: the sender's first message must be the marker.
        #expect(try fixture.server.server.publish("marker", to: "room") == 3)
        #expect(Self.texts(try await Self.waitFor(1, in: clients[0].1, "the marker at the sender")) == ["marker"])
        #expect(try clients[0].2.publish("direct", to: "room") == 2)
        #expect(Self.texts(try await Self.waitFor(3, in: clients[1].1, "client 1")) == ["from 0", "marker", "direct"])
    }

    @Test("one publisher's messages arrive in publish order at subscribers on two event loops, from a task and from a connection")
    func orderAcrossEventLoops() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let fixture = try await Fixture.start(group: group, onMessage: { connection, message in
            _ = try? connection.publish(message, to: "room")
        })
        defer {
            Task {
                await fixture.server.stop()
                try? await group.shutdownGracefully()
            }
        }
        let clients = try await fixture.clients(5, path: "/room")
        let loops = Set(clients.map { ObjectIdentifier($0.2.socket.eventLoop) })
        #expect(loops.count == 2, "the subscribers live on both event loops")

        // From a task, off every event loop.
        let count = 2000
        let publisher = Task.detached {
            for index in 0..<count { try fixture.server.server.publish("task \(index)", to: "room") }
        }
        try await publisher.value
        let expected = (0..<count).map { "task \($0)" }
        for (index, client) in clients.enumerated() {
            #expect(Self.texts(try await Self.waitFor(count, in: client.1, "client \(index)")) == expected)
        }

        // From a connection on one loop to subscribers on both.
        for (_, received, _) in clients { _ = received }
        let sender = clients[0]
        let others = clients.dropFirst().filter { $0.2.socket.eventLoop !== sender.2.socket.eventLoop }
        #expect(!others.isEmpty)
        for index in 0..<500 { sender.0.sendUTF("conn \(index)") }
        let fromConnection = (0..<500).map { "conn \($0)" }
        for client in clients.dropFirst() {
            let all = Self.texts(try await Self.waitFor(count + 500, in: client.1, "the connection's messages"))
            #expect(Array(all.dropFirst(count)) == fromConnection)
        }
    }

    @Test("a message published after subscribe returns arrives; one published after unsubscribe returns does not")
    func subscriptionBoundaries() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let fixture = try await Fixture.start(group: group)
        defer {
            Task {
                await fixture.server.stop()
                try? await group.shutdownGracefully()
            }
        }
        let clients = try await fixture.clients(2, path: "/")
        let server = fixture.server.server
        for round in 0..<200 {
            let (_, received, connection) = clients[round % 2]
            let before = received.all.count
            #expect(try connection.subscribe(to: "t"))
            #expect(try server.publish("in \(round)", to: "t") == 1)
            #expect(connection.unsubscribe(from: "t"))
            #expect(try server.publish("out \(round)", to: "t") == 0)
            // The control topic comes after both: when its message is in, "out" would be too.
            #expect(try connection.subscribe(to: "control"))
            #expect(try server.publish("control \(round)", to: "control") == 1)
            #expect(connection.unsubscribe(from: "control"))
            let got = Self.texts(Array(try await Self.waitFor(before + 2, in: received, "round \(round)").dropFirst(before)))
            #expect(got == ["in \(round)", "control \(round)"])
        }
    }

    @Test("a closing connection leaves its topics before its close event; subscribing it then returns false")
    func closingLeavesTopics() async throws {
        let fixture = try await Fixture.start()
        defer { Task { await fixture.server.stop() } }
        let clients = try await fixture.clients(2, path: "/room")
        let serverSide = clients[0].2
        #expect(try serverSide.subscribe(to: "second"))
        let seenAtClose = Expectation<(Set<String>, Int, Int)>()
        serverSide.onClose { _, _ in
            seenAtClose.fulfill((serverSide.topics, fixture.server.server.subscriberCount(of: "room"), fixture.server.server.subscriberCount(of: "second")))
        }
        try clients[0].0.close()
        let (topics, room, second) = try await seenAtClose.value(10, "the close event")
        #expect(topics.isEmpty)
        #expect(room == 1)
        #expect(second == 0)
        #expect(try serverSide.subscribe(to: "room") == false)
        #expect(serverSide.topics.isEmpty)
        #expect(try fixture.server.server.publish("after", to: "room") == 1)
        #expect(Self.texts(try await Self.waitFor(1, in: clients[1].1, "the other subscriber")) == ["after"])
    }

    @Test("topic names: 1,024 bytes of UTF-8 at most (counted in bytes), a clear error beyond, nothing subscribed; a client's connection cannot subscribe or publish")
    func topicNames() async throws {
        let fixture = try await Fixture.start()
        defer { Task { await fixture.server.stop() } }
        let clients = try await fixture.clients(1, path: "/")
        let connection = clients[0].2
        #expect(try connection.subscribe(to: String(repeating: "a", count: 1024)))
        let tooLong = String(repeating: "é", count: 513)  // 1,026 bytes, 513 characters
        let error = #expect(throws: WebSocketError.self) { try connection.subscribe(to: tooLong) }
        #expect(error?.code == .invalidArgument)
        #expect(error?.message.contains("1024") == true)
        #expect(connection.topics.count == 1)
        let publishError = #expect(throws: WebSocketError.self) { try fixture.server.server.publish("x", to: tooLong) }
        #expect(publishError?.code == .invalidArgument)
        #expect(throws: WebSocketError.self) { try clients[0].0.subscribe(to: "room") }
        let clientError = #expect(throws: WebSocketError.self) { try clients[0].0.publish("x", to: "room") }
        #expect(clientError?.code == .invalidArgument)
    }

    @Test("a published message larger than maxReceivedMessageSize goes out, fragmented by the server's settings")
    func largeMessagesAreFragmented() async throws {
        let fixture = try await Fixture.start { configuration in
            configuration.maxReceivedMessageSize = 1000
            configuration.fragmentationThreshold = 16 * 1024
        }
        defer { Task { await fixture.server.stop() } }
        let raw = try await RawClient.connected(port: fixture.server.port, path: "/room")
        _ = try await fixture.accepted.value()
        let payload = ByteBuffer(bytes: (0..<40_000).map { UInt8(truncatingIfNeeded: $0) })
        #expect(try fixture.server.server.publish(payload, to: "room") == 1)
        var frames: [WebSocketFrame] = []
        while frames.last?.fin != true, let frame = try await raw.readFrame(timeout: 10) { frames.append(frame) }
        #expect(frames.map(\.opcode) == [.binary, .continuation, .continuation])
        #expect(frames.map(\.binaryPayload.readableBytes) == [16384, 16384, 7232])
        #expect(frames.map(\.fin) == [false, false, true])
        var joined = ByteBuffer()
        for frame in frames { joined.writeImmutableBuffer(frame.binaryPayload) }
        #expect(joined == payload)
        await raw.close()
    }
}
