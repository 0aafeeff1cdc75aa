import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import Testing

@testable import WebSocket

/// One nanosecond: "just before" a deadline is the deadline less this.
private let tick = TimeAmount.nanoseconds(1)

/// The library's timers on virtual time (see ``VirtualPeer``): each test checks that nothing
/// happens a nanosecond before the deadline and that the action happens at it. No sleeps, so
/// they are exact and unaffected by the machine's load.
@Suite("Keepalive on virtual time")
struct KeepaliveVirtualTimeTests {
    @Test("a silent peer gets a ping after exactly keepaliveInterval, and is dropped (1006) keepaliveGracePeriod after the ping was written")
    func silentPeerPingedThenDropped() async throws {
        try await VirtualPeer.withServer({
            $0.keepaliveInterval = .seconds(20)
            $0.keepaliveGracePeriod = .seconds(10)
        }) { peer, events in
            _ = try await peer.upgrade(events)
            #expect(events.server.connectionCount == 1)
            await peer.advance(by: .seconds(20) - tick)
            #expect(try await peer.frames().isEmpty)
            await peer.advance(by: tick)
            let ping = try await peer.frames()
            #expect(ping.map(\.opcode) == [.ping])
            #expect(ping.allSatisfy { !$0.mask && $0.binaryPayload.readableBytes == 0 })

            await peer.advance(by: .seconds(10) - tick)
            #expect(!peer.isClosed)
            #expect(events.closes.all.isEmpty)
            await peer.advance(by: tick)
            #expect(peer.isClosed)
            await peer.settle()
            #expect(events.closes.all == [CloseEvent(code: 1006, description: "Peer not responding.")])
            // Dropped without a close frame; the server counts it out.
            #expect(try await peer.frames().isEmpty)
            #expect(events.server.connectionCount == 0)
        }
    }

    @Test("a pong within the grace period keeps the connection; the next ping comes keepaliveInterval after the pong")
    func answeredPing() async throws {
        try await VirtualPeer.withServer({
            $0.keepaliveInterval = .seconds(20)
            $0.keepaliveGracePeriod = .seconds(10)
        }) { peer, events in
            _ = try await peer.upgrade(events)
            await peer.advance(by: .seconds(20))
            #expect(try await peer.frames().map(\.opcode) == [.ping])
            await peer.advance(by: .seconds(5))
            try await peer.send(frame: WebSocketFrame(opcode: .pong), masked: true)
            // Past the grace period: kept.
            await peer.advance(by: .seconds(10))
            #expect(!peer.isClosed)
            // Silence since the pong (at 25 s): the next ping at 45 s, not at 40 s.
            await peer.advance(by: .seconds(10) - tick)
            #expect(try await peer.frames().isEmpty)
            await peer.advance(by: tick)
            #expect(try await peer.frames().map(\.opcode) == [.ping])
            #expect(events.closes.all.isEmpty)
        }
    }

    @Test("a peer that keeps sending data (and never answers pings) is never pinged nor dropped")
    func dataResetsTheTimer() async throws {
        try await VirtualPeer.withServer({
            $0.keepaliveInterval = .seconds(20)
            $0.keepaliveGracePeriod = .seconds(10)
        }) { peer, events in
            let connection = try await peer.upgrade(events)
            let messages = Collected<WebSocketMessage>()
            connection.onMessage { messages.append($0) }
            // A message every 19 s for 10 minutes: each comes before the interval is over.
            for _ in 0..<32 {
                await peer.advance(by: .seconds(19))
                try await peer.send(frame: WebSocketFrame(opcode: .binary, binaryPayload: ByteBuffer(bytes: [1])), masked: true)
            }
            #expect(messages.all.count == 32)
            #expect(try await peer.frames().isEmpty, "no ping: the peer was never silent for keepaliveInterval")
            #expect(!peer.isClosed)
            // Then silence: a ping after exactly the interval.
            await peer.advance(by: .seconds(20) - tick)
            #expect(try await peer.frames().isEmpty)
            await peer.advance(by: tick)
            #expect(try await peer.frames().map(\.opcode) == [.ping])
        }
    }

    @Test("with dropConnectionOnKeepaliveTimeout false, an unanswered peer is pinged every interval and kept")
    func noDropWhenDisabled() async throws {
        try await VirtualPeer.withServer({
            $0.keepaliveInterval = .seconds(20)
            $0.dropConnectionOnKeepaliveTimeout = false
        }) { peer, events in
            _ = try await peer.upgrade(events)
            for _ in 0..<5 {
                await peer.advance(by: .seconds(20) - tick)
                #expect(try await peer.frames().isEmpty)
                await peer.advance(by: tick)
                #expect(try await peer.frames().map(\.opcode) == [.ping])
            }
            #expect(!peer.isClosed)
            #expect(events.closes.all.isEmpty)
        }
    }

    @Test("with keepalive off, a silent peer is never pinged")
    func keepaliveOff() async throws {
        try await VirtualPeer.withServer({ $0.keepalive = false }) { peer, events in
            _ = try await peer.upgrade(events)
            await peer.advance(by: .seconds(3600))
            #expect(try await peer.frames().isEmpty)
            #expect(!peer.isClosed)
        }
    }
}

@Suite("closeTimeout on virtual time")
struct CloseTimeoutVirtualTimeTests {
    @Test("the server waits exactly closeTimeout for the peer's close frame, then closes the socket (one close event, its own code)")
    func serverCloseTimeout() async throws {
        try await VirtualPeer.withServer({ $0.closeTimeout = .seconds(5) }) { peer, events in
            let connection = try await peer.upgrade(events)
            try connection.close(reasonCode: 4001, description: "")
            await peer.settle()
            #expect(try await peer.closeCode() == 4001)
            await peer.advance(by: .seconds(5) - tick)
            #expect(!peer.isClosed)
            #expect(events.closes.all.isEmpty)
            await peer.advance(by: tick)
            #expect(peer.isClosed)
            await peer.settle()
            #expect(events.closes.all == [CloseEvent(code: 4001, description: "")])
            #expect(events.server.connectionCount == 0)
        }
    }

    @Test("the server closes the socket as soon as the peer's close frame answers its own: no wait")
    func serverCloseAnswered() async throws {
        try await VirtualPeer.withServer({ $0.closeTimeout = .seconds(5) }) { peer, events in
            let connection = try await peer.upgrade(events)
            try connection.close(reasonCode: 4001, description: "bye")
            await peer.settle()
            #expect(try await peer.closeCode() == 4001)
            await peer.advance(by: .seconds(1))
            #expect(!peer.isClosed)
            var payload = ByteBuffer()
            payload.writeInteger(UInt16(4001))
            try await peer.send(frame: WebSocketFrame(opcode: .connectionClose, binaryPayload: payload), masked: true)
            #expect(peer.isClosed)
            #expect(events.closes.all == [CloseEvent(code: 4001, description: "bye")])
        }
    }

    @Test("drop() shuts the output at once whatever closeTimeout is")
    func dropDoesNotWait() async throws {
        try await VirtualPeer.withServer({ $0.closeTimeout = .seconds(30) }) { peer, events in
            let connection = try await peer.upgrade(events)
            connection.drop()
            await peer.settle()
            #expect(try await peer.closeCode() == 1002)
            // (The test channel has no half-close: shutting the output closes it.)
            #expect(peer.isClosed)
            #expect(events.closes.all == [CloseEvent(code: 1002, description: "Protocol error")])
        }
    }

    @Test("async close(code:) reports a timed-out handshake after exactly closeTimeout")
    func asyncCloseTimesOut() async throws {
        try await VirtualPeer.withServer({ $0.closeTimeout = .seconds(5) }) { peer, events in
            let connection = try await peer.upgrade(events)
            let results = Collected<WebSocketConnection.CloseResult>()
            let closing = Task {
                let result = try await connection.close(code: .normal)
                results.append(result)
                return result
            }
            // The close frame goes out from the event loop.
            try await withTimeout(10, "the close frame") {
                while try await peer.frames().isEmpty { await peer.settle(); try await Task.sleep(for: .milliseconds(1)) }
            }
            await peer.advance(by: .seconds(5) - tick)
            #expect(results.all.isEmpty)
            #expect(!peer.isClosed)
            await peer.advance(by: tick)
            // (Polled, not awaited: a close that never returns must fail the test, not hang it.)
            try await waitUntil(10, "close(code:) to return") { !results.all.isEmpty }
            #expect(results.all == [WebSocketConnection.CloseResult(code: .normal, description: "Normal connection closure", handshakeCompleted: false)])
            _ = closing
        }
    }

    @Test("a client whose close the server never answers closes the socket after exactly closeTimeout")
    func clientCloseTimeout() async throws {
        try await VirtualPeer.withClient({ $0.closeTimeout = .seconds(3) }) { peer, connection in
            let closes = Collected<CloseEvent>()
            connection.onClose { closes.append(CloseEvent(code: $0, description: $1)) }
            try connection.close(reasonCode: 4002, description: "no answer")
            await peer.settle()
            let frames = try await peer.frames()
            #expect(frames.map(\.opcode) == [.connectionClose])
            #expect(frames.allSatisfy { $0.mask }, "a client masks its frames")
            await peer.advance(by: .seconds(3) - tick)
            #expect(!peer.isClosed)
            #expect(closes.all.isEmpty)
            await peer.advance(by: tick)
            #expect(peer.isClosed)
            await peer.settle()
            #expect(closes.all == [CloseEvent(code: 4002, description: "no answer")])
        }
    }

    @Test("after the close handshake the client waits for the server to close TCP, at most closeTimeout from the server's close frame")
    func clientWaitsForServerTCPClose() async throws {
        try await VirtualPeer.withClient({ $0.closeTimeout = .seconds(3) }) { peer, connection in
            let closes = Collected<CloseEvent>()
            connection.onClose { closes.append(CloseEvent(code: $0, description: $1)) }
            try connection.close()
            await peer.settle()
            #expect(try await peer.closeCode() == 1000)
            await peer.advance(by: .seconds(2))
            var payload = ByteBuffer()
            payload.writeInteger(UInt16(1000))
            try await peer.send(frame: WebSocketFrame(opcode: .connectionClose, binaryPayload: payload), masked: false)
            // The handshake is complete, but the client leaves closing TCP to the server...
            await peer.advance(by: .seconds(3) - tick)
            #expect(!peer.isClosed)
            // ...for closeTimeout counted from the server's close frame (not from our own).
            await peer.advance(by: tick)
            #expect(peer.isClosed)
            await peer.settle()
            #expect(closes.all == [CloseEvent(code: 1000, description: "Normal connection closure")])
        }
    }
}

@Suite("Handshake timeouts on virtual time")
struct HandshakeTimeoutVirtualTimeTests {
    static let request =
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

    @Test("an undecided request is refused with 503 after exactly requestTimeout, with an upgradeError")
    func requestTimeout() async throws {
        try await VirtualPeer.withServer({ $0.requestTimeout = .seconds(10) }, setup: { server, _ in
            server.onRequest { _ in }  // never decides
        }) { peer, events in
            try await peer.send(Self.request)
            await peer.advance(by: .seconds(10) - tick)
            #expect(try await peer.text().isEmpty)
            #expect(!peer.isClosed)
            await peer.advance(by: tick)
            let response = try await peer.text()
            #expect(response.hasPrefix("HTTP/1.1 503"), "\(response)")
            #expect(peer.isClosed)
            #expect(events.upgradeErrors.all.count == 1)
            #expect(events.upgradeErrors.all.first?.contains("not accepted or rejected") == true)
        }
    }

    @Test("a request accepted later, within requestTimeout, is upgraded and the timer does not fire after")
    func requestDecidedInTime() async throws {
        let pending = NIOLockedValueBox<WebSocketRequest?>(nil)
        try await VirtualPeer.withServer({
            $0.requestTimeout = .seconds(10)
            $0.keepalive = false  // (a silent peer would be dropped within the minute below)
        }, setup: { server, _ in
            server.onRequest { request in pending.withLockedValue { $0 = request } }
        }) { peer, events in
            try await peer.send(Self.request)
            await peer.advance(by: .seconds(10) - tick)
            let request = try #require(pending.withLockedValue { $0 })
            let connection = try request.accept()
            events.record(connection)
            await peer.settle()
            #expect(try await peer.httpHead()?.hasPrefix("HTTP/1.1 101") == true)
            await peer.advance(by: .seconds(60))
            #expect(!peer.isClosed)
            #expect(events.upgradeErrors.all.isEmpty)
            #expect(connection.connected)
        }
    }

    @Test("a client that sends its head byte by byte is cut off with 408 at exactly handshakeTimeout (slowloris)")
    func slowloris() async throws {
        try await VirtualPeer.withServer({ $0.handshakeTimeout = .seconds(3) }) { peer, events in
            // A byte every 100 ms: the head is not complete after 3 s.
            let bytes = Array("GET / HTTP/1.1\r\nHost: x\r\nX-Slow: \(String(repeating: "a", count: 40))\r\n".utf8)
            for byte in bytes.prefix(29) {
                try await peer.send([byte])
                await peer.advance(by: .milliseconds(100))
            }
            // 2.9 s so far.
            await peer.advance(by: .milliseconds(100) - tick)
            #expect(try await peer.text().isEmpty)
            #expect(!peer.isClosed)
            await peer.advance(by: tick)
            let response = try await peer.text()
            #expect(response.hasPrefix("HTTP/1.1 408"), "\(response)")
            #expect(peer.isClosed)
            #expect(events.upgradeErrors.all.first?.contains("complete request") == true)
        }
    }

    @Test("a head completed just in time stops handshakeTimeout; requestTimeout governs from then on")
    func headInTime() async throws {
        try await VirtualPeer.withServer({
            $0.handshakeTimeout = .seconds(3)
            $0.requestTimeout = .seconds(10)
        }, setup: { server, _ in
            server.onRequest { _ in }
        }) { peer, events in
            await peer.advance(by: .seconds(3) - tick)
            try await peer.send(Self.request)
            await peer.advance(by: .seconds(10) - tick)
            #expect(try await peer.text().isEmpty, "no 408 after the head was complete")
            await peer.advance(by: tick)
            #expect(try await peer.text().hasPrefix("HTTP/1.1 503"))
        }
    }

    @Test("the client's handshakeTimeout fails the attempt with .timeout after exactly the timeout")
    func clientHandshakeTimeout() async throws {
        let loop = NIOAsyncTestingEventLoop()
        let promise = loop.makePromise(of: WebSocketConnection.self)
        let failures = Collected<WebSocketError>()
        promise.futureResult.whenFailure { failures.append($0 as! WebSocketError) }
        WebSocketClient.armHandshakeTimeout(.seconds(10), for: promise, peer: "127.0.0.1:9")
        await loop.advanceTime(by: .seconds(10) - tick)
        #expect(failures.all.isEmpty)
        await loop.advanceTime(by: tick)
        #expect(failures.all.map(\.code) == [.timeout])
        #expect(failures.all.first?.message.contains("127.0.0.1:9") == true)

        await loop.shutdownGracefully()
    }
}
