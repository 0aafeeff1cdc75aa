import CompressNIO
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOPosix
import Testing

@testable import WebSocket

/// How published messages are delivered: one write per connection per drain, slow subscribers
/// (skip or close), permessage-deflate of both kinds in one topic, TLS and HTTP/2.
@Suite("Topic delivery", .timeLimit(.minutes(2)))
struct TopicDeliveryTests {
    typealias Fixture = TopicTests.Fixture

    /// A server connection on an `EmbeddedChannel`, subscribed to `topic` of `server`.
    static func embeddedSubscriber(_ server: WebSocketServer, topic: String, loop: EmbeddedEventLoop) throws -> (EmbeddedChannel, WebSocketConnection) {
        let channel = EmbeddedChannel(loop: loop)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
        let connection = WebSocketConnection(
            channel: channel, role: .server, options: server.configuration.connectionOptions, protocol: nil,
            extensions: [], remoteAddress: "127.0.0.1", webSocketVersion: 13, logger: server.logger, path: "/",
            topicRegistry: server.topicRegistry)
        try channel.pipeline.syncOperations.addHandler(connection.channelHandler)
        #expect(try connection.subscribe(to: topic))
        return (channel, connection)
    }

    /// The frames in `buffer`.
    static func frames(in buffer: ByteBuffer) throws -> [WebSocketFrame] {
        var rest = buffer
        var frames: [WebSocketFrame] = []
        while rest.readableBytes > 0 {
            guard let frame = try WebSocketFrame.parse(from: &rest) else { break }
            frames.append(frame)
        }
        return frames
    }

    @Test("messages published within one event-loop tick reach a connection in one write and one flush")
    func oneWritePerTick() throws {
        let server = WebSocketServer()
        let loop = EmbeddedEventLoop()
        let (channel, _) = try Self.embeddedSubscriber(server, topic: "room", loop: loop)
        let (other, _) = try Self.embeddedSubscriber(server, topic: "room", loop: loop)
        for index in 0..<10 { #expect(try server.publish("message \(index)", to: "room") == 2) }
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil, "nothing is written before the loop runs its drain")
        loop.run()
        for subscriber in [channel, other] {
            let written = try #require(try subscriber.readOutbound(as: ByteBuffer.self))
            #expect(try subscriber.readOutbound(as: ByteBuffer.self) == nil, "one write for all ten messages")
            #expect(try Self.frames(in: written).map { String(buffer: $0.binaryPayload) } == (0..<10).map { "message \($0)" })
        }
        _ = try? channel.finish()
        _ = try? other.finish()
    }

    @Test("a publication is framed once: every subscriber's write shares the same bytes")
    func framedOnce() throws {
        let server = WebSocketServer()
        let loop = EmbeddedEventLoop()
        let (first, _) = try Self.embeddedSubscriber(server, topic: "room", loop: loop)
        let (second, _) = try Self.embeddedSubscriber(server, topic: "room", loop: loop)
        #expect(try server.publish(ByteBuffer(bytes: Array(repeating: 7, count: 300)), to: "room") == 2)
        loop.run()
        let a = try #require(try first.readOutbound(as: ByteBuffer.self))
        let b = try #require(try second.readOutbound(as: ByteBuffer.self))
        #expect(a == b)
        let sameStorage = a.withUnsafeReadableBytes { pa in b.withUnsafeReadableBytes { pb in pa.baseAddress == pb.baseAddress } }
        #expect(sameStorage, "both writes point at one copy of the frame")
        _ = try? first.finish()
        _ = try? second.finish()
    }

    @Test("a subscriber that never reads skips messages past maxBackpressure (counted), stays open, and holds at most the limit plus one message; a reader gets everything")
    func slowSubscriberSkips() async throws {
        let limit = 256 * 1024
        let fixture = try await Fixture.start { configuration in
            configuration.maxBackpressure = limit
        }
        defer { Task { await fixture.server.stop() } }
        let stalled = try await RawClient.connected(port: fixture.server.port, path: "/room")
        try await stalled.setReading(false)
        let stalledSide = try await fixture.accepted.value()
        let reader = try await fixture.clients(1, path: "/room")[0]
        let server = fixture.server.server
        let message = ByteBuffer(bytes: Array(repeating: 0x5A, count: 16 * 1024))
        let total = 2000  // 32 MiB: far more than the kernel's socket buffers hold
        var maxInFlight = 0
        for start in stride(from: 0, to: total, by: 50) {
            for _ in start..<(start + 50) { #expect(try server.publish(message, to: "room") == 2) }
            // Paced by the reader, so that only the stalled subscriber falls behind.
            _ = try await TopicTests.waitFor(start + 50, in: reader.1, "the reader at \(start + 50)")
            let inFlight = try await stalledSide.socket.eventLoop.submit { stalledSide.handler.publishedBytesInFlight }.get()
            maxInFlight = max(maxInFlight, inFlight)
        }
        #expect(reader.2.skippedPublishedMessages == 0)
        let skipped = stalledSide.skippedPublishedMessages
        #expect(skipped > 0, "the stalled subscriber skipped messages")
        #expect(skipped < total)
        #expect(server.skippedPublishedMessages == skipped)
        #expect(maxInFlight <= limit + message.readableBytes + 2 * 8, "queued at most the limit plus one message")
        #expect(stalledSide.connected, "skipping does not close")
        await stalled.close()
    }

    @Test("with the close policy, a subscriber that never reads is closed with the configured code (1013)")
    func slowSubscriberClosed() async throws {
        let fixture = try await Fixture.start { configuration in
            configuration.maxBackpressure = 64 * 1024
            configuration.backpressurePolicy = .close(.tryAgainLater)
            configuration.closeTimeout = .milliseconds(500)
        }
        defer { Task { await fixture.server.stop() } }
        let stalled = try await RawClient.connected(port: fixture.server.port, path: "/room")
        try await stalled.setReading(false)
        let stalledSide = try await fixture.accepted.value()
        let closed = Expectation<Int>()
        stalledSide.onClose { code, _ in closed.fulfill(code) }
        let message = ByteBuffer(bytes: Array(repeating: 1, count: 16 * 1024))
        var published = 0
        while stalledSide.connected && published < 4000 {
            try server(fixture).publish(message, to: "room")
            published += 1
            if published % 100 == 0 { try await stalledSide.socket.eventLoop.submit {}.get() }
        }
        #expect(!stalledSide.connected, "closed before 64 MiB were published")
        #expect(stalledSide.closeReasonCode == 1013)
        #expect(try await closed.value(10, "the close event after closeTimeout") == 1013)
        #expect(server(fixture).subscriberCount(of: "room") == 0)
        await stalled.close()
    }

    private func server(_ fixture: Fixture) -> WebSocketServer { fixture.server.server }

    @Test("permessage-deflate: subscribers without server context takeover share one compressed copy, the others compress their own, plain ones get it plain; all read the same messages")
    func deflateKinds() async throws {
        let fixture = try await Fixture.start { configuration in
            configuration.perMessageDeflate = PerMessageDeflate.Options()
        }
        defer { Task { await fixture.server.stop() } }
        var shared = WebSocketClient.Configuration()
        shared.perMessageDeflate = PerMessageDeflate.Options()
        shared.perMessageDeflate!.serverNoContextTakeover = true
        var own = WebSocketClient.Configuration()
        own.perMessageDeflate = PerMessageDeflate.Options()
        let clients = try await fixture.clients(2, path: "/room", configuration: shared)
            + fixture.clients(2, path: "/room", configuration: own)
            + fixture.clients(1, path: "/room")
        let kinds = clients.map(\.2.topicFraming)
        guard case .sharedDeflate = kinds[0], case .sharedDeflate = kinds[1] else {
            Issue.record("expected shared deflate framing, got \(kinds)")
            return
        }
        #expect(kinds[2] == .own && kinds[3] == .own && kinds[4] == .plain)

        let messages = (0..<30).map { index in
            index % 10 == 9 ? "short \(index)" : String(repeating: "compressible text \(index) ", count: 20)
        }
        for message in messages { try fixture.server.server.publish(message, to: "room") }
        try fixture.server.server.publish(ByteBuffer(bytes: Array(repeating: 3, count: 5000)), to: "room", compress: false)
        for (index, client) in clients.enumerated() {
            let got = TopicTests.texts(try await TopicTests.waitFor(31, in: client.1, "subscriber \(index)"))
            #expect(got == messages + ["binary:5000"])
        }
    }

    @Test("the shared compressed copy is byte for byte what each such connection's own compressor makes")
    func sharedCompressionMatchesPerConnection() throws {
        var options = PerMessageDeflate.Options()
        options.serverNoContextTakeover = true
        let negotiator = PerMessageDeflate(options)
        let offer = WebSocketExtension(name: "permessage-deflate", parameters: [.init(name: "server_no_context_takeover")])
        let (_, codec) = try #require(negotiator.accept(offers: [offer]))
        let deflate = try #require(codec as? PerMessageDeflateCodec)
        let key = try #require(deflate.sharedKey)
        let payload = ByteBuffer(string: String(repeating: "hello topics ", count: 100))
        let publication = WebSocketPublication(
            .binary(payload), compress: true, sender: nil, framings: [.sharedDeflate(key)], fragmentationThreshold: nil)
        let framed = try Self.frames(in: publication.frames(for: .sharedDeflate(key)))
        #expect(framed.count == 1)
        #expect(framed[0].rsv1)
        for _ in 0..<3 {  // each message on its own: no context kept between them
            let (encoded, bits) = try #require(try deflate.encode(message: payload, opcode: .binary, allowed: true, allocator: ByteBufferAllocator()))
            #expect(bits == 0x40)
            #expect(encoded == framed[0].binaryPayload)
        }
        // A codec that keeps its context cannot share.
        let (_, keeping) = try #require(PerMessageDeflate().accept(offers: [WebSocketExtension(name: "permessage-deflate")]))
        #expect((keeping as? PerMessageDeflateCodec)?.sharedKey == nil)
    }

    @Test("subscribers over ws://, wss:// (HTTP/1.1) and HTTP/2 streams of one server all receive a publication")
    func everyTransport() async throws {
        let fixture = try await Fixture.start { configuration in
            configuration.http2 = true
        }
        defer { Task { await fixture.server.stop() } }
        let tls = try await fixture.server.server.listen(host: "127.0.0.1", port: 0, tlsConfiguration: TestTLS.serverConfiguration())
        var received: [Collected<WebSocketMessage>] = []
        var serverSides: [WebSocketConnection] = []
        for (url, configuration) in [
            ("ws://127.0.0.1:\(fixture.server.port)/room", WebSocketClient.Configuration()),
            ("wss://localhost:\(tls.port!)/room", try HTTP2Tests.clientConfiguration(http2: false)),
            ("wss://localhost:\(tls.port!)/room", try HTTP2Tests.clientConfiguration(http2: true)),
        ] {
            let client = try await WebSocketClient(configuration: configuration).connect(url: url)
            let messages = Collected<WebSocketMessage>()
            client.onMessage { messages.append($0) }
            received.append(messages)
            serverSides.append(try await fixture.accepted.value())
        }
        #expect(serverSides.map(\.isHTTP2) == [false, false, true])
        #expect(try fixture.server.server.publish("everyone", to: "room") == 3)
        for (index, messages) in received.enumerated() {
            #expect(TopicTests.texts(try await TopicTests.waitFor(1, in: messages, "transport \(index)")) == ["everyone"])
        }
    }
}
