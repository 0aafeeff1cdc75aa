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

    @Test("the decode budget: past 1 MiB decoded in a turn delivery holds until the next turn; while the consumer lags, until it catches up")
    func decodeBudget() {
        var flow = Self.flow()
        let message = 300 * 1024
        // Three messages fit (900 KiB and their overheads); the fourth spends the budget, once.
        let first3 = [flow.decoded(message), flow.decoded(message), flow.decoded(message)]
        #expect(first3 == [false, false, false])
        let fourth = flow.decoded(message)
        #expect(fourth)
        #expect(flow.holdsDelivery && flow.holdsReads)
        let again = flow.decoded(1)
        #expect(!again)  // reported once per turn
        // The reads' end does not lift it: the next turn does.
        flow.readsEnded()
        #expect(flow.holdsDelivery)
        let lifted = flow.turnEnded()
        #expect(lifted)
        #expect(!flow.holdsDelivery && flow.decodedBytes == 0)
        let liftedAgain = flow.turnEnded()
        #expect(!liftedAgain)  // nothing to lift
        // A turn that did not spend it starts the next one from zero.
        let turn1 = flow.decoded(900 * 1024)
        flow.readsEnded()
        let turn2 = flow.decoded(900 * 1024)
        #expect(!turn1 && !turn2)
        // Empty messages count too (the per-message overhead).
        flow.readsEnded()
        var spent = false
        for _ in 0..<(Flow.decodeBudget / Flow.perMessageOverhead) { spent = flow.decoded(0) || spent }
        #expect(!spent)
        let oneMore = flow.decoded(0)
        #expect(oneMore)
        let liftedEmpty = flow.turnEnded()
        #expect(liftedEmpty)
        // While the consumer lags, neither the reads' end nor a turn gives a new budget: only
        // its catching up does.
        flow.hold(.consumerLagging)
        let lagging = flow.decoded(2 << 20)
        #expect(lagging)
        flow.readsEnded()
        let liftedWhileLagging = flow.turnEnded()
        #expect(!liftedWhileLagging && flow.holdsDelivery)
        flow.unhold(.consumerLagging)
        #expect(!flow.holdsDelivery && flow.decodedBytes == 0)
        // A message limit near Int.max saturates instead of trapping.
        let huge = [flow.decoded(Int.max), flow.decoded(Int.max)]
        #expect(huge == [true, false])
        let released = flow.releaseAll()
        #expect(released == .none && !flow.holdsDelivery && flow.decodedBytes == 0)
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

/// The configuration space, property-tested: random configurations built from the values that
/// break arithmetic (negative, zero, UInt32's edge, Int's edges) never trap; `listen` refuses
/// exactly the ones `validate()` refuses, and a server that listens answers an echo.
@Suite("Configuration space")
struct ConfigurationSpaceTests {
    /// A deterministic generator (SplitMix64), so a failure repeats with its seed.
    struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static let sizes = [Int.min, -1, 0, 1, 125, 16 * 1024, 64 * 1024, 1 << 20, Int(UInt32.max), Int(UInt32.max) + 1, Int.max]
    static let durations: [Duration] = [.seconds(-1), .zero, .milliseconds(1), .seconds(5), .seconds(Int64.max)]

    static func random(_ rng: inout SplitMix) -> WebSocketServer.Configuration {
        var c = WebSocketServer.Configuration()
        func size() -> Int { sizes.randomElement(using: &rng)! }
        func duration() -> Duration { durations.randomElement(using: &rng)! }
        func maybe(_ change: () -> Void) { if Bool.random(using: &rng) { change() } }
        maybe { c.maxReceivedFrameSize = size() }
        maybe { c.maxReceivedMessageSize = size() }
        maybe { c.maxFragmentsPerMessage = size() }
        maybe { c.fragmentationThreshold = size() }
        maybe { c.maxSendBackpressure = size() }
        maybe { c.maxHandshakeSize = size() }
        maybe { c.maxHeaderCount = size() }
        maybe { c.maxConnections = size() }
        maybe { c.http2MaxConcurrentStreams = size() }
        maybe { c.maxBackpressure = size() }
        maybe { c.closeTimeout = duration() }
        maybe { c.keepaliveInterval = duration() }
        maybe { c.keepaliveGracePeriod = duration() }
        maybe { c.requestTimeout = duration() }
        maybe { c.handshakeTimeout = duration() }
        maybe { c.http2IdleTimeout = duration() }
        return c
    }

    @Test("random configurations: validate() never traps, and refuses exactly the out-of-range ones")
    func validateIsTotal() {
        var rng = SplitMix(state: 29)
        var refused = 0
        for _ in 0..<5_000 {
            let configuration = Self.random(&rng)
            let valid = (try? configuration.validate()) != nil
            let expected =
                configuration.maxReceivedFrameSize >= 0 && configuration.maxReceivedMessageSize >= 0
                && configuration.maxFragmentsPerMessage >= 1 && configuration.fragmentationThreshold >= 0
                && configuration.maxSendBackpressure >= configuration.writeBufferWaterMark.high
                && (1...Int(UInt32.max)).contains(configuration.maxHandshakeSize) && configuration.maxHeaderCount >= 1
                && (configuration.maxConnections ?? 0) >= 0 && (0...Int(UInt32.max)).contains(configuration.http2MaxConcurrentStreams)
                && configuration.maxBackpressure >= 0
                && [configuration.closeTimeout, configuration.keepaliveInterval, configuration.keepaliveGracePeriod,
                    configuration.requestTimeout, configuration.handshakeTimeout, configuration.http2IdleTimeout].allSatisfy { $0 >= .zero }
            #expect(valid == expected)
            if !valid { refused += 1 }
        }
        #expect(refused > 1_000 && refused < 5_000)  // the generator reaches both sides
    }

    @Test("random valid and invalid configurations: listen agrees with validate(), and a valid server echoes")
    func listenAgrees() async throws {
        var rng = SplitMix(state: 7)
        var echoed = 0
        for _ in 0..<24 {
            var configuration = Self.random(&rng)
            configuration.maxConnections = nil  // a cap of 0 would refuse the echo's connection
            // Small limits would refuse the echo's 5-byte message or its handshake: keep the ones
            // that make sense for an echo, the extremes of the rest.
            if configuration.maxReceivedFrameSize >= 0 && configuration.maxReceivedFrameSize < 125 { configuration.maxReceivedFrameSize = 125 }
            if configuration.maxReceivedMessageSize >= 0 && configuration.maxReceivedMessageSize < 125 { configuration.maxReceivedMessageSize = 125 }
            if configuration.maxHandshakeSize >= 0 && configuration.maxHandshakeSize < 1024 { configuration.maxHandshakeSize = 1024 }
            if configuration.maxHeaderCount >= 0 && configuration.maxHeaderCount < 10 { configuration.maxHeaderCount = 10 }
            if configuration.handshakeTimeout == .zero || configuration.handshakeTimeout == .milliseconds(1) { configuration.handshakeTimeout = .seconds(5) }
            if configuration.requestTimeout == .zero || configuration.requestTimeout == .milliseconds(1) { configuration.requestTimeout = .seconds(5) }
            if configuration.keepaliveInterval == .zero || configuration.keepaliveInterval == .milliseconds(1) { configuration.keepaliveInterval = .seconds(20) }
            let valid = (try? configuration.validate()) != nil
            let server = WebSocketServer(configuration: configuration)
            server.onRequest { request in
                guard let connection = try? request.accept() else { return }
                connection.onMessage { connection.send($0) }
            }
            do {
                let port = try await server.listen(host: "127.0.0.1", port: 0).port!
                #expect(valid, "listen accepted a configuration validate() refuses")
                let client = try await WebSocketClient().connect(url: "ws://127.0.0.1:\(port)/")
                let inbox = Expectation<WebSocketMessage>()
                client.onMessage { inbox.fulfill($0) }
                client.sendUTF("hello")
                #expect(try await inbox.value(10, "the echo") == .utf8("hello"))
                echoed += 1
            } catch let error as WebSocketError {
                #expect(!valid && error.code == .invalidArgument, "\(error)")
            }
            await server.shutDown()
        }
        #expect(echoed > 0)
    }
}
