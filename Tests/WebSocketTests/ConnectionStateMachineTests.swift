import NIOCore
import Testing

@testable import WebSocket

/// The connection's protocol as a value: bytes, calls and explicit times in, frames and effects
/// out. No channel, no socket, no clock.
@Suite("Connection state machine")
struct ConnectionStateMachineTests {
    /// Collects what the state machine writes, as parsed frames.
    struct Sink: WebSocketFrameSink {
        var frames: [WebSocketFrame] = []

        mutating func write(_ header: WebSocketFrameHeader, payload: ByteBuffer) {
            var bytes = ByteBuffer()
            header.write(to: &bytes)
            bytes.writeMaskedPayload(payload.readableBytesView, key: header.maskingKey)
            write(serialized: bytes)
        }

        mutating func write(serialized frame: ByteBuffer) {
            var bytes = frame
            frames.append(try! WebSocketFrame.parse(from: &bytes)!)
        }

        /// (opcode, fin, payload text) of each frame.
        var summary: [String] {
            frames.map { "\($0.opcode) fin=\($0.fin) \($0.binaryPayload.readableBytes)" }
        }
    }

    static let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)
    static let key = WebSocketMaskingKey(1, 2, 3, 4)

    static func options(_ change: (inout WebSocketConnectionOptions) -> Void = { _ in }) -> WebSocketConnectionOptions {
        var options = WebSocketServer.Configuration().connectionOptions
        change(&options)
        return options
    }

    static func machine(_ role: WebSocketRole, _ change: (inout WebSocketConnectionOptions) -> Void = { _ in }) -> WebSocketConnectionStateMachine {
        WebSocketConnectionStateMachine(role: role, options: options(change), codecs: [], now: t0, makeMaskingKey: { key })
    }

    /// A frame from the peer of `role` (masked when the peer is a client).
    static func fromPeer(of role: WebSocketRole, _ opcode: WebSocketOpcode, _ payload: ByteBuffer, fin: Bool = true) -> ByteBuffer {
        WebSocketFrame(fin: fin, mask: role == .server, maskingKey: role == .server ? key : nil, opcode: opcode, binaryPayload: payload).serialized()
    }

    static func closePayload(_ code: UInt16, _ reason: String) -> ByteBuffer {
        var payload = ByteBuffer()
        payload.writeInteger(code)
        payload.writeString(reason)
        return payload
    }

    /// Every inbound action in `bytes`.
    static func feed(_ machine: inout WebSocketConnectionStateMachine, _ bytes: ByteBuffer, _ sink: inout Sink) -> [WebSocketConnectionStateMachine.Inbound] {
        var buffer = bytes
        var actions: [WebSocketConnectionStateMachine.Inbound] = []
        while let action = machine.nextInbound(from: &buffer, into: &sink) { actions.append(action) }
        return actions
    }

    @Test("close() writes our close frame and starts the close timer; a second close does nothing")
    func closeFromOpen() throws {
        var machine = Self.machine(.server)
        var sink = Sink()
        let effects = machine.close(code: 4000, description: "bye", into: &sink)
        #expect(effects == [.recordClose(code: 4000, description: "bye"), .startCloseTimer(.seconds(5))])
        #expect(machine.closeState == .closeSent)
        #expect(sink.frames.count == 1)
        var payload = sink.frames[0].binaryPayload
        #expect(payload.readInteger(as: UInt16.self) == 4000)
        #expect(payload.readString(length: payload.readableBytes) == "bye")
        #expect(machine.close(code: 1000, description: "", into: &sink).isEmpty)
        #expect(sink.frames.count == 1)
        #expect(machine.closeTimerFired() == [.closeSocket])
        #expect(!machine.handshakeCompleted)
    }

    @Test("the server answers the peer's close frame with the same code and closes the socket")
    func peerClosesServer() {
        var machine = Self.machine(.server)
        var sink = Sink()
        let actions = Self.feed(&machine, Self.fromPeer(of: .server, .connectionClose, Self.closePayload(4001, "done")), &sink)
        #expect(actions == [.peerClosed(code: 4001, reason: "done", effects: [.recordClose(code: 4001, description: "done"), .closeSocket])])
        #expect(sink.frames.map(\.opcode) == [.connectionClose])
        #expect(sink.frames[0].binaryPayload.getInteger(at: sink.frames[0].binaryPayload.readerIndex, as: UInt16.self) == 4001)
        #expect(machine.handshakeCompleted)
        // Nothing after the peer's close frame is read (RFC 6455 §5.5.1: it sends nothing more).
        #expect(Self.feed(&machine, Self.fromPeer(of: .server, .text, ByteBuffer(string: "late")), &sink).isEmpty)
    }

    @Test("the client waits for the server to close the TCP connection, at most closeTimeout")
    func peerClosesClient() {
        var machine = Self.machine(.client) { $0.closeTimeout = .seconds(2) }
        var sink = Sink()
        let actions = Self.feed(&machine, Self.fromPeer(of: .client, .connectionClose, ByteBuffer()), &sink)
        #expect(
            actions == [
                .peerClosed(
                    code: 1005, reason: "",
                    effects: [.recordClose(code: 1005, description: "Reason not provided"), .startCloseTimer(.seconds(2)), .releaseReadHolds])
            ])
        // A close without a code is answered with 1000; the client masks it.
        #expect(sink.frames[0].mask && sink.frames[0].maskingKey == Self.key)
        #expect(sink.frames[0].binaryPayload.getInteger(at: sink.frames[0].binaryPayload.readerIndex, as: UInt16.self) == 1000)
    }

    @Test("after our close frame, the peer's close completes the handshake and cancels the timer")
    func closeThenPeerClose() {
        var machine = Self.machine(.server)
        var sink = Sink()
        _ = machine.close(code: 1000, description: "", into: &sink)
        // Messages still arrive while we wait for the peer's close frame.
        #expect(
            Self.feed(&machine, Self.fromPeer(of: .server, .text, ByteBuffer(string: "in flight")), &sink)
                == [.deliver(.message(.utf8("in flight")))])
        let actions = Self.feed(&machine, Self.fromPeer(of: .server, .connectionClose, Self.closePayload(1000, "")), &sink)
        #expect(actions == [.peerClosed(code: 1000, reason: "", effects: [.cancelCloseTimer, .closeSocket])])
        #expect(sink.frames.count == 1, "no second close frame")
        #expect(machine.handshakeCompleted)
    }

    @Test("a protocol error fails the connection: close frame, output shut, then wait for the peer")
    func protocolError() {
        var machine = Self.machine(.server) { $0.closeTimeout = .seconds(3) }
        var sink = Sink()
        // An unmasked frame from a client.
        let unmasked = WebSocketFrame(opcode: .text, binaryPayload: ByteBuffer(string: "x")).serialized()
        let actions = Self.feed(&machine, unmasked, &sink)
        guard case .failed(let error, let effects) = actions.first else {
            Issue.record("expected a failure, got \(actions)")
            return
        }
        #expect(error.closeCode == 1002)
        #expect(effects == [.recordClose(code: 1002, description: error.reason), .releaseReadHolds, .closeOutput, .startCloseTimer(.seconds(3))])
        #expect(machine.closeState == .dropping)
        #expect(sink.frames.map(\.opcode) == [.connectionClose])
        // Sending is refused from now on.
        #expect(machine.sendMessage(opcode: .text, payload: ByteBuffer(string: "no"), compress: true, allocator: .init(), into: &sink)?.code == .notConnected)
    }

    @Test("drop without a close frame closes the socket at once; a code not valid on the wire is sent as 1002")
    func drop() {
        var machine = Self.machine(.server)
        var sink = Sink()
        #expect(machine.drop(code: 1006, description: "gone", skipCloseFrame: true, into: &sink) == [.recordClose(code: 1006, description: "gone"), .releaseReadHolds, .closeSocket])
        #expect(sink.frames.isEmpty)
        #expect(machine.drop(code: 1000, description: "", skipCloseFrame: false, into: &sink).isEmpty, "a second drop does nothing")

        var other = Self.machine(.server)
        _ = other.drop(code: 1005, description: "x", skipCloseFrame: false, into: &sink)
        #expect(sink.frames[0].binaryPayload.getInteger(at: sink.frames[0].binaryPayload.readerIndex, as: UInt16.self) == 1002)
        let first = other.socketClosed()
        let second = other.socketClosed()
        #expect(first && !second, "the socket closes once")
    }

    @Test("messages over fragmentationThreshold go out in fragments; a client masks each with a fresh key")
    func fragmentation() {
        var machine = Self.machine(.client) { $0.fragmentationThreshold = 4 }
        var sink = Sink()
        #expect(machine.sendMessage(opcode: .text, payload: ByteBuffer(string: "0123456789"), compress: true, allocator: .init(), into: &sink) == nil)
        #expect(sink.summary == ["text fin=false 4", "continuation fin=false 4", "continuation fin=true 2"])
        #expect(sink.frames.allSatisfy { $0.mask })
        #expect(String(buffer: sink.frames.map(\.binaryPayload).reduce(into: ByteBuffer()) { $0.writeImmutableBuffer($1) }) == "0123456789")

        var whole = Self.machine(.server) { $0.fragmentationThreshold = 4; $0.fragmentOutgoingMessages = false }
        var wholeSink = Sink()
        _ = whole.sendMessage(opcode: .binary, payload: ByteBuffer(string: "0123456789"), compress: true, allocator: .init(), into: &wholeSink)
        #expect(wholeSink.summary == ["binary fin=true 10"])
        #expect(!wholeSink.frames[0].mask)
    }

    @Test("pings are answered unless a handler cancelled the pong or we are closing")
    func pings() {
        var machine = Self.machine(.server)
        var sink = Sink()
        let actions = Self.feed(&machine, Self.fromPeer(of: .server, .ping, ByteBuffer(string: "p")), &sink)
        #expect(actions == [.ping(ByteBuffer(string: "p"))])
        machine.answerPing(ByteBuffer(string: "p"), cancelled: false, into: &sink)
        machine.answerPing(ByteBuffer(string: "q"), cancelled: true, into: &sink)
        #expect(sink.frames.map(\.opcode) == [.pong])
        _ = machine.close(code: 1000, description: "", into: &sink)
        machine.answerPing(ByteBuffer(string: "r"), cancelled: false, into: &sink)
        #expect(sink.frames.map(\.opcode) == [.pong, .connectionClose])
    }

    @Test("keepalive: a ping after keepaliveInterval of silence, grace measured from the write")
    func keepalive() {
        var machine = Self.machine(.server) {
            $0.keepaliveInterval = .seconds(20)
            $0.keepaliveGracePeriod = .seconds(10)
        }
        var sink = Sink()
        let t0 = Self.t0
        #expect(machine.firstKeepaliveDeadline == t0 + .seconds(20))
        // Traffic at t0+15 s: at t0+20 s the next check moves to t0+35 s.
        machine.bytesReceived(at: t0 + .seconds(15))
        #expect(machine.keepaliveFired(at: t0 + .seconds(20)) == .reschedule(t0 + .seconds(35)))
        // Silence until t0+35 s: a ping.
        #expect(machine.keepaliveFired(at: t0 + .seconds(35)) == .ping(rescheduleAt: t0 + .seconds(55)))
        machine.writeKeepalivePing(into: &sink)
        #expect(sink.frames.map(\.opcode) == [.ping])
        // While that ping is unanswered no second one goes out.
        guard case .reschedule = machine.keepaliveFired(at: t0 + .seconds(55)) else {
            Issue.record("a second ping while one is outstanding")
            return
        }
        // The ping sat behind a large send and was written at t0+50 s: the grace ends at t0+60 s.
        #expect(machine.keepalivePingWritten(at: t0 + .seconds(50)) == t0 + .seconds(60))
        // Nothing arrived since the write: dropped, without a close frame.
        let effects = machine.keepaliveGraceEnded(pingWrittenAt: t0 + .seconds(50), into: &sink)
        #expect(effects == [.recordClose(code: 1006, description: "Peer not responding."), .releaseReadHolds, .closeSocket])
        #expect(sink.frames.count == 1)
        #expect(machine.keepaliveFired(at: t0 + .seconds(70)) == .stop)
    }

    @Test("keepalive: an answer within the grace period keeps the connection")
    func keepaliveAnswered() {
        var machine = Self.machine(.client) {
            $0.keepaliveInterval = .seconds(1)
            $0.keepaliveGracePeriod = .seconds(1)
        }
        var sink = Sink()
        let t0 = Self.t0
        #expect(machine.keepaliveFired(at: t0 + .seconds(1)) == .ping(rescheduleAt: t0 + .seconds(2)))
        #expect(machine.keepalivePingWritten(at: t0 + .seconds(1)) == t0 + .seconds(2))
        machine.bytesReceived(at: t0 + .milliseconds(1500))
        #expect(machine.keepaliveGraceEnded(pingWrittenAt: t0 + .seconds(1), into: &sink).isEmpty)
        #expect(machine.closeState == .open)
        // Without dropConnectionOnKeepaliveTimeout there is no grace period at all.
        var lenient = Self.machine(.server) { $0.keepaliveInterval = .seconds(1); $0.dropConnectionOnKeepaliveTimeout = false }
        _ = lenient.keepaliveFired(at: t0 + .seconds(1))
        #expect(lenient.keepalivePingWritten(at: t0 + .seconds(1)) == nil)
        #expect(lenient.keepaliveFired(at: t0 + .seconds(2)) == .ping(rescheduleAt: t0 + .seconds(3)))
    }

    @Test("user frames: a server never masks, a client always does, whatever the frame says")
    func userFrames() {
        var server = Self.machine(.server)
        var sink = Sink()
        _ = server.sendFrame(WebSocketFrame(mask: true, opcode: .binary, binaryPayload: ByteBuffer(bytes: [1])), allocator: .init(), into: &sink)
        var client = Self.machine(.client)
        _ = client.sendFrame(WebSocketFrame(mask: false, opcode: .binary, binaryPayload: ByteBuffer(bytes: [1])), allocator: .init(), into: &sink)
        #expect(sink.frames.map(\.mask) == [false, true])
        _ = client.drop(code: 1002, description: "", skipCloseFrame: true, into: &sink)
        #expect(client.sendFrame(WebSocketFrame(opcode: .ping), allocator: .init(), into: &sink)?.code == .notConnected)
    }
}
