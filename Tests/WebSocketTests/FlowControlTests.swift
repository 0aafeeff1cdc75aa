import NIOCore
import Testing

@testable import WebSocket

/// The connection's flow control as values (issue 29): why reading is held, the Node-style
/// sends' cap and policy, the one pong that waits while the write buffer is full, the keepalive
/// that ends a peer which neither reads nor sends, and the configuration checks. No channel.
@Suite("Flow control and bounds, on values")
struct FlowControlTests {
    typealias Flow = WebSocketFlowControl
    typealias Sink = ConnectionStateMachineTests.Sink

    static func flow(max: Int = 1 << 20, policy: WebSocketServer.BackpressurePolicy = .close(.policyViolation)) -> Flow {
        Flow(maxSendBackpressure: max, sendPolicy: policy, highWaterMark: 64 * 1024)
    }

    @Test("a read asked for while held waits for the last hold to go, then goes once")
    func readHolds() {
        var flow = Self.flow()
        #expect(flow.readRequested() == .read)
        flow.hold(.awaitingListener)
        flow.hold(.outboundFull)
        #expect(flow.holdsDelivery)
        #expect(flow.readRequested() == .none)
        #expect(flow.release(.awaitingListener) == .none)  // the write buffer still full
        #expect(!flow.holdsDelivery && flow.holdsReads)
        #expect(flow.release(.outboundFull) == .read)
        #expect(flow.readIfWanted() == .none)  // once
        // A hold released with no read wanted reads nothing.
        flow.hold(.pausedByUser)
        #expect(flow.release(.pausedByUser) == .none)
        // unhold leaves the decision for later (the held input is delivered first).
        flow.hold(.consumerLagging)
        #expect(flow.readRequested() == .none)
        flow.unhold(.consumerLagging)
        #expect(flow.readIfWanted() == .read)
        // Closing releases everything: the peer must be read until it goes.
        flow.hold(.outboundFull)
        flow.hold(.pausedByUser)
        #expect(flow.readRequested() == .none)
        #expect(flow.releaseAll() == .read)
    }

    @Test("the send cap: below the high watermark every send goes; past the cap the policy")
    func sendCap() {
        var close = Self.flow(max: 100 * 1024)
        // Not full: any size goes (a large message to a healthy reader).
        #expect(close.verdict(forSendOf: 10 << 20) == .send)
        close.outboundFilled()
        // 64 KiB queued at the watermark: 36 KiB more fit under 100 KiB.
        #expect(close.verdict(forSendOf: 30 * 1024) == .send)
        #expect(close.verdict(forSendOf: 6 * 1024) == .send)
        #expect(close.verdict(forSendOf: 1) == .close(code: 1008))
        // Drained: the count starts again.
        _ = close.outboundDrained()
        #expect(close.verdict(forSendOf: 1 << 20) == .send)

        var skip = Self.flow(max: 64 * 1024, policy: .skip)
        skip.outboundFilled()
        #expect(skip.verdict(forSendOf: 1) == .refuse)
        var tryLater = Self.flow(max: 64 * 1024, policy: .close(.tryAgainLater))
        tryLater.outboundFilled()
        #expect(tryLater.verdict(forSendOf: 1) == .close(code: 1013))
        // No overflow at the extremes.
        var huge = Self.flow(max: .max)
        huge.outboundFilled()
        #expect(huge.verdict(forSendOf: .max) == .close(code: 1008))
    }

    @Test("a ping flood while the write buffer is full costs one pong, for the latest ping, given on drain")
    func pongsCoalesce() {
        var flow = Self.flow()
        #expect(flow.pong(for: ByteBuffer(string: "a")) == ByteBuffer(string: "a"))  // writable: at once
        flow.outboundFilled()
        for index in 0..<10_000 {
            #expect(flow.pong(for: ByteBuffer(string: "p\(index)")) == nil)
        }
        #expect(flow.deferredPong == ByteBuffer(string: "p9999"))
        let (action, pong) = flow.outboundDrained()
        #expect(action == .none)
        #expect(pong == ByteBuffer(string: "p9999"))
        // Drained again with nothing waiting: no pong.
        flow.outboundFilled()
        #expect(flow.outboundDrained().pong == nil)
    }

    @Test("keepalive: a ping never written, with nothing received and the write buffer not shrinking, drops the peer")
    func keepaliveUnwrittenPing() {
        let t0 = ConnectionStateMachineTests.t0
        func machine() -> WebSocketConnectionStateMachine {
            ConnectionStateMachineTests.machine(.server) {
                $0.keepaliveInterval = .seconds(20)
                $0.keepaliveGracePeriod = .seconds(10)
            }
        }
        var sink = Sink()
        // Stuck: 1 MiB waited when the ping was queued, as much 20 s later.
        var stuck = machine()
        #expect(stuck.keepaliveFired(at: t0 + .seconds(20), outboundBytes: 1 << 20) == .ping(rescheduleAt: t0 + .seconds(40)))
        #expect(stuck.keepaliveFired(at: t0 + .seconds(39), outboundBytes: 1 << 20) != .drop)  // not yet an interval
        #expect(stuck.keepaliveFired(at: t0 + .seconds(40), outboundBytes: (1 << 20) + 6) == .drop)
        #expect(stuck.dropUnresponsive(into: &sink) == [.recordClose(code: 1006, description: "Peer not responding."), .releaseReadHolds, .closeSocket])
        // Reading slowly: the buffer shrank, so the grace period waits for the ping's write.
        var slow = machine()
        _ = slow.keepaliveFired(at: t0 + .seconds(20), outboundBytes: 1 << 20)
        #expect(slow.keepaliveFired(at: t0 + .seconds(40), outboundBytes: 1 << 19) != .drop)
        // Sending: any byte received since the ping keeps it.
        var talking = machine()
        _ = talking.keepaliveFired(at: t0 + .seconds(20), outboundBytes: 1 << 20)
        talking.bytesReceived(at: t0 + .seconds(25))
        #expect(talking.keepaliveFired(at: t0 + .seconds(40), outboundBytes: 1 << 20) != .drop)
        // Written: the grace period rules, as before.
        var written = machine()
        _ = written.keepaliveFired(at: t0 + .seconds(20), outboundBytes: 1 << 20)
        _ = written.keepalivePingWritten(at: t0 + .seconds(21))
        #expect(written.keepaliveFired(at: t0 + .seconds(40), outboundBytes: 1 << 20) != .drop)
        // Unknown buffer (an HTTP/2 stream): never dropped for it.
        var unknown = machine()
        _ = unknown.keepaliveFired(at: t0 + .seconds(20))
        #expect(unknown.keepaliveFired(at: t0 + .seconds(40)) != .drop)
        // Without dropConnectionOnKeepaliveTimeout: never.
        var lenient = ConnectionStateMachineTests.machine(.server) {
            $0.keepaliveInterval = .seconds(20)
            $0.dropConnectionOnKeepaliveTimeout = false
        }
        _ = lenient.keepaliveFired(at: t0 + .seconds(20), outboundBytes: 1 << 20)
        #expect(lenient.keepaliveFired(at: t0 + .seconds(40), outboundBytes: 1 << 20) != .drop)
    }

    @Test("a message limit of Int.max: the second fragment's length check does not overflow")
    func receiverLimitsAtTheExtremes() {
        var receiver = WebSocketReceiver(
            options: .init(
                expectMaskedFrames: true, maxFrameSize: .max, maxMessageSize: .max, maxFragments: 10,
                assembleFragments: true, codecs: []))
        var bytes = ByteBuffer()
        for (opcode, fin) in [(WebSocketOpcode.text, false), (.continuation, false), (.continuation, true)] {
            bytes.writeImmutableBuffer(ConnectionStateMachineTests.fromPeer(of: .server, opcode, ByteBuffer(string: "ab"), fin: fin))
        }
        #expect(receiver.next(from: &bytes) == .message(.utf8("ababab")))
        // A header claiming 2^62 bytes reserves no more than a bounded buffer up front.
        var header = ByteBuffer(bytes: [0x82, 0xFF, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4])
        #expect(receiver.next(from: &header) == nil)
    }

    // MARK: Configuration

    static func serverError(_ change: (inout WebSocketServer.Configuration) -> Void) -> String? {
        var configuration = WebSocketServer.Configuration()
        change(&configuration)
        do {
            try configuration.validate()
            return nil
        } catch {
            #expect(error.code == .invalidArgument)
            return error.message
        }
    }

    @Test("server configuration values out of range throw naming the field; the defaults pass")
    func serverConfiguration() {
        #expect(Self.serverError { _ in } == nil)
        let cases: [(String, (inout WebSocketServer.Configuration) -> Void)] = [
            ("maxReceivedFrameSize", { $0.maxReceivedFrameSize = -1 }),
            ("maxReceivedMessageSize", { $0.maxReceivedMessageSize = -5 }),
            ("maxFragmentsPerMessage", { $0.maxFragmentsPerMessage = 0 }),
            ("fragmentationThreshold", { $0.fragmentationThreshold = -1 }),
            ("maxSendBackpressure", { $0.maxSendBackpressure = 1000 }),
            ("closeTimeout", { $0.closeTimeout = .seconds(-1) }),
            ("keepaliveInterval", { $0.keepaliveInterval = .seconds(-1) }),
            ("keepaliveGracePeriod", { $0.keepaliveGracePeriod = .milliseconds(-1) }),
            ("maxHandshakeSize", { $0.maxHandshakeSize = Int(UInt32.max) + 1 }),
            ("maxHandshakeSize", { $0.maxHandshakeSize = 0 }),
            ("maxHeaderCount", { $0.maxHeaderCount = 0 }),
            ("maxConnections", { $0.maxConnections = -1 }),
            ("http2MaxConcurrentStreams", { $0.http2MaxConcurrentStreams = Int(UInt32.max) + 1 }),
            ("maxBackpressure", { $0.maxBackpressure = -1 }),
            ("requestTimeout", { $0.requestTimeout = .seconds(-3) }),
            ("handshakeTimeout", { $0.handshakeTimeout = .seconds(-3) }),
            ("http2IdleTimeout", { $0.http2IdleTimeout = .seconds(-3) }),
        ]
        for (field, change) in cases {
            let message = Self.serverError(change)
            #expect(message?.contains("WebSocketServer.Configuration.\(field)") == true, "\(field): \(message ?? "accepted")")
        }
        // The extremes that are meaningful are accepted.
        #expect(Self.serverError { $0.maxReceivedFrameSize = .max; $0.maxReceivedMessageSize = .max } == nil)
        #expect(Self.serverError { $0.keepaliveInterval = .seconds(Int64.max) } == nil)
    }

    @Test("listen and connect refuse a bad configuration with the field's name instead of trapping")
    func listenAndConnectValidate() async throws {
        var configuration = WebSocketServer.Configuration()
        configuration.maxReceivedFrameSize = -1
        let server = WebSocketServer(configuration: configuration)
        await #expect(throws: WebSocketError.self) { try await server.listen(host: "127.0.0.1", port: 0) }
        #expect(server.localAddresses.isEmpty)

        var clientConfiguration = WebSocketClient.Configuration()
        clientConfiguration.maxReceivedMessageSize = -1
        do {
            _ = try await WebSocketClient(configuration: clientConfiguration).connect(url: "ws://127.0.0.1:9/")
            Issue.record("connect should throw")
        } catch let error as WebSocketError {
            #expect(error.code == .invalidArgument)
            #expect(error.message.contains("WebSocketClient.Configuration.maxReceivedMessageSize"), "\(error.message)")
        }
        clientConfiguration = WebSocketClient.Configuration()
        clientConfiguration.webSocketVersion = 7
        #expect(throws: WebSocketError.self) { try clientConfiguration.validate() }
    }
}
