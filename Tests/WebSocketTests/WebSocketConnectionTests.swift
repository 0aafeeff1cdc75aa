import NIOConcurrencyHelpers
import NIOCore
import Testing

@testable import WebSocket

/// `WebSocketConnection` over real sockets on 127.0.0.1: our client against our server, and a
/// raw peer where the test must control the bytes.
@Suite("WebSocketConnection")
struct WebSocketConnectionTests {
    /// A server that hands each accepted connection to the test.
    static func serverWithConnections(
        _ configure: (inout WebSocketServer.Configuration) -> Void = { _ in }
    ) async throws -> (TestServer, Expectation<WebSocketConnection>) {
        let accepted = Expectation<WebSocketConnection>()
        let server = try await TestServer.start(configure) { server in
            server.onRequest { request in
                if let connection = try? request.accept(protocol: request.requestedProtocols.first) {
                    accepted.fulfill(connection)
                }
            }
        }
        return (server, accepted)
    }

    @Test("our client and our server exchange text and binary, with the connection's properties set")
    func echo() async throws {
        let server = try await TestServer.echo()
        defer { Task { await server.stop() } }
        let connection = try await WebSocketClient().connect(url: server.url + "path?x=1", protocols: ["Chat", "other"])
        #expect(connection.protocol == "chat")
        #expect(connection.webSocketVersion == 13)
        #expect(connection.extensions.isEmpty)
        #expect(connection.remoteAddress == "127.0.0.1")
        #expect(connection.connected)
        #expect(connection.closeReasonCode == -1)
        #expect(connection.closeDescription == nil)
        #expect(connection.role == .client)

        let bytes = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let received = try await withTimeout(5) {
            var iterator = connection.messages.makeAsyncIterator()
            try await connection.write("héllo 世界 😀")
            let text = try await iterator.next()
            try await connection.write(ByteBuffer(bytes: bytes))
            let binary = try await iterator.next()
            return [text, binary]
        }
        #expect(received == [.utf8("héllo 世界 😀"), .binary(ByteBuffer(bytes: bytes))])
        try connection.close()
    }

    @Test("a client-initiated close fires close once on both ends with 1000")
    func clientClose() async throws {
        let (server, accepted) = try await Self.serverWithConnections()
        defer { Task { await server.stop() } }
        let client = try await WebSocketClient().connect(url: server.url)
        let serverSide = try await accepted.value()
        let serverClosed = Expectation<(Int, String)>()
        let clientClosed = Expectation<(Int, String)>()
        serverSide.onClose { serverClosed.fulfill(($0, $1)) }
        client.onClose { clientClosed.fulfill(($0, $1)) }
        try client.close()
        #expect(!client.connected)
        let (serverCode, serverDescription) = try await serverClosed.value()
        let (clientCode, clientDescription) = try await clientClosed.value()
        #expect(serverCode == 1000 && clientCode == 1000)
        #expect(serverDescription == "Normal connection closure")
        #expect(clientDescription == "Normal connection closure")
        #expect(client.closeReasonCode == 1000)
        #expect(serverSide.closeReasonCode == 1000)
        // No second close event: once both loops ran what was queued, it would have fired.
        try await barrier(serverSide.socket.eventLoop)
        try await barrier(client.socket.eventLoop)
        #expect(serverClosed.pending().isEmpty)
        #expect(clientClosed.pending().isEmpty)
    }

    @Test("a server-initiated close with a custom 4000 code and description reaches both ends")
    func serverCustomClose() async throws {
        let (server, accepted) = try await Self.serverWithConnections()
        defer { Task { await server.stop() } }
        let client = try await WebSocketClient().connect(url: server.url)
        let serverSide = try await accepted.value()
        let clientClosed = Expectation<(Int, String)>()
        let serverClosed = Expectation<(Int, String)>()
        client.onClose { clientClosed.fulfill(($0, $1)) }
        serverSide.onClose { serverClosed.fulfill(($0, $1)) }
        try serverSide.close(reasonCode: 4000, description: "game over")
        let (code, description) = try await clientClosed.value()
        #expect(code == 4000 && description == "game over")
        let (serverCode, serverDescription) = try await serverClosed.value()
        #expect(serverCode == 4000 && serverDescription == "game over")
    }

    @Test("close with a code that may not go on the wire throws")
    func invalidCloseCode() async throws {
        let (server, accepted) = try await Self.serverWithConnections()
        defer { Task { await server.stop() } }
        let client = try await WebSocketClient().connect(url: server.url)
        _ = try await accepted.value()
        for code in [999, 1004, 1005, 1006, 1015, 2000, 5000] {
            #expect(throws: WebSocketError.self) { try client.close(reasonCode: code) }
        }
        #expect(throws: WebSocketError.self) { try client.close(description: String(repeating: "x", count: 124)) }
        #expect(client.connected)
        #expect(throws: WebSocketError.self) { try client.ping(ByteBuffer(repeating: 0, count: 126)) }
        try client.close()
    }

    @Test("a close frame without a code is reported as 1005, and answered with 1000")
    func closeWithoutCode() async throws {
        let (server, accepted) = try await Self.serverWithConnections()
        defer { Task { await server.stop() } }
        let raw = try await RawClient.connected(port: server.port)
        let serverSide = try await accepted.value()
        let closed = Expectation<(Int, String)>()
        serverSide.onClose { closed.fulfill(($0, $1)) }
        try await raw.send(frame: WebSocketFrame(opcode: .connectionClose))
        #expect(try await raw.readCloseCode() == 1000)
        try await raw.waitForEOF()
        let (code, description) = try await closed.value()
        #expect(code == 1005)
        #expect(description == "Reason not provided")
    }

    @Test("a socket that dies without a close frame is reported as 1006")
    func abnormalClose() async throws {
        let (server, accepted) = try await Self.serverWithConnections()
        defer { Task { await server.stop() } }
        let raw = try await RawClient.connected(port: server.port)
        let serverSide = try await accepted.value()
        let closed = Expectation<(Int, String)>()
        serverSide.onClose { closed.fulfill(($0, $1)) }
        await raw.close()
        let (code, _) = try await closed.value()
        #expect(code == 1006)
        #expect(!serverSide.connected)
        try await barrier(serverSide.socket.eventLoop)
        #expect(closed.pending().isEmpty)
    }

    @Test("drop sends a close frame (1002 by default) and closes without waiting")
    func drop() async throws {
        let (server, accepted) = try await Self.serverWithConnections { $0.closeTimeout = .seconds(30) }
        defer { Task { await server.stop() } }
        let raw = try await RawClient.connected(port: server.port)
        let serverSide = try await accepted.value()
        let closed = Expectation<(Int, String)>()
        serverSide.onClose { closed.fulfill(($0, $1)) }
        serverSide.drop()
        #expect(try await raw.readCloseCode() == 1002)
        // The output side is shut at once (the peer sees EOF) though closeTimeout is 30 s.
        try await raw.waitForEOF(timeout: 2)
        await raw.close()
        let (code, description) = try await closed.value()
        #expect(code == 1002 && description == "Protocol error")
    }

    @Test("drop with skipCloseFrame closes the socket without a close frame")
    func dropSkippingFrame() async throws {
        let (server, accepted) = try await Self.serverWithConnections()
        defer { Task { await server.stop() } }
        let raw = try await RawClient.connected(port: server.port)
        let serverSide = try await accepted.value()
        serverSide.drop(reasonCode: 1008, skipCloseFrame: true)
        #expect(try await raw.readFrame() == nil)
        #expect(serverSide.closeReasonCode == 1008)
    }

    @Test("sendFrame: a server never masks, whatever the frame says")
    func sendFrameMasking() async throws {
        let (server, accepted) = try await Self.serverWithConnections()
        defer { Task { await server.stop() } }
        let raw = try await RawClient.connected(port: server.port)
        let serverSide = try await accepted.value()
        serverSide.sendFrame(WebSocketFrame(mask: true, maskingKey: WebSocketMaskingKey(1, 2, 3, 4), opcode: .binary, binaryPayload: ByteBuffer(bytes: [9, 9])))
        let frame = try #require(try await raw.readFrame())
        #expect(!frame.mask && frame.binaryPayload == ByteBuffer(bytes: [9, 9]))
    }

    @Test("sends after close report notConnected through their completion")
    func sendAfterClose() async throws {
        let (server, accepted) = try await Self.serverWithConnections()
        defer { Task { await server.stop() } }
        let client = try await WebSocketClient().connect(url: server.url)
        _ = try await accepted.value()
        try client.close()
        await #expect(throws: WebSocketError.self) { try await client.write("too late") }
    }

    @Test("outgoing messages over fragmentationThreshold are split into frames")
    func fragmentOut() async throws {
        let (server, accepted) = try await Self.serverWithConnections { $0.fragmentationThreshold = 10 }
        defer { Task { await server.stop() } }
        let raw = try await RawClient.connected(port: server.port)
        let serverSide = try await accepted.value()
        try await serverSide.write("abcdefghijklmnopqrstuvwxy")
        let frames = [try await raw.readFrame(), try await raw.readFrame(), try await raw.readFrame()].compactMap { $0 }
        #expect(frames.map(\.opcode) == [.text, .continuation, .continuation])
        #expect(frames.map(\.fin) == [false, false, true])
        #expect(frames.map(\.length) == [10, 10, 5])
        #expect(frames.allSatisfy { !$0.mask })
    }

    @Test("fragmented incoming messages are assembled")
    func fragmentIn() async throws {
        let server = try await TestServer.echo()
        defer { Task { await server.stop() } }
        let raw = try await RawClient.connected(port: server.port)
        try await raw.send(frame: WebSocketFrame(fin: false, opcode: .text, binaryPayload: ByteBuffer(string: "Hel")))
        try await raw.send(frame: WebSocketFrame(opcode: .ping, binaryPayload: ByteBuffer(string: "p")))
        try await raw.send(frame: WebSocketFrame(fin: false, opcode: .continuation, binaryPayload: ByteBuffer(string: "lo ")))
        try await raw.send(frame: WebSocketFrame(fin: true, opcode: .continuation, binaryPayload: ByteBuffer(string: "😀")))
        let pong = try #require(try await raw.readFrame())
        #expect(pong.opcode == .pong && pong.binaryPayload == ByteBuffer(string: "p"))
        let echo = try #require(try await raw.readFrame())
        #expect(echo.opcode == .text && echo.fin && echo.binaryPayload == ByteBuffer(string: "Hello 😀"))
    }

    @Test("with assembleFragments false, frames are emitted one by one")
    func frameEvents() async throws {
        let (server, accepted) = try await Self.serverWithConnections { $0.assembleFragments = false }
        defer { Task { await server.stop() } }
        let raw = try await RawClient.connected(port: server.port)
        let serverSide = try await accepted.value()
        let frames = Expectation<WebSocketFrame>()
        serverSide.onFrame { frames.fulfill($0) }
        try await raw.send(frame: WebSocketFrame(fin: false, opcode: .binary, binaryPayload: ByteBuffer(bytes: [1, 2])))
        try await raw.send(frame: WebSocketFrame(fin: true, opcode: .continuation, binaryPayload: ByteBuffer(bytes: [3])))
        let first = try await frames.value()
        let second = try await frames.value()
        #expect(first.opcode == .binary && !first.fin && first.binaryPayload == ByteBuffer(bytes: [1, 2]))
        #expect(second.opcode == .continuation && second.fin && second.binaryPayload == ByteBuffer(bytes: [3]))
    }

    @Test("a ping is answered with the same payload unless a ping handler cancels")
    func pingCancel() async throws {
        let (server, accepted) = try await Self.serverWithConnections()
        defer { Task { await server.stop() } }
        let raw = try await RawClient.connected(port: server.port)
        let serverSide = try await accepted.value()
        let pings = Expectation<ByteBuffer>()
        let cancelNext = NIOLockedValueBox(false)
        serverSide.onPing { cancel, data in
            if cancelNext.withLockedValue({ $0 }) { cancel() }
            pings.fulfill(data)
        }
        try await raw.send(frame: WebSocketFrame(opcode: .ping, binaryPayload: ByteBuffer(string: "one")))
        #expect(try await pings.value() == ByteBuffer(string: "one"))
        let pong = try #require(try await raw.readFrame())
        #expect(pong.opcode == .pong && pong.binaryPayload == ByteBuffer(string: "one"))
        cancelNext.withLockedValue { $0 = true }
        try await raw.send(frame: WebSocketFrame(opcode: .ping, binaryPayload: ByteBuffer(string: "two")))
        #expect(try await pings.value() == ByteBuffer(string: "two"))
        try await serverSide.write("after")
        let next = try #require(try await raw.readFrame())
        #expect(next.opcode == .text, "the cancelled ping must not be answered")
    }

    @Test("a frame over maxReceivedFrameSize closes with 1009 before its payload is sent")
    func frameTooBigOverSocket() async throws {
        let (server, accepted) = try await Self.serverWithConnections { $0.maxReceivedFrameSize = 1000 }
        defer { Task { await server.stop() } }
        let raw = try await RawClient.connected(port: server.port)
        _ = try await accepted.value()
        // Header only: 16-bit length 5000, masked; no payload follows.
        try await raw.send([0x82, 0xFE, 0x13, 0x88, 1, 2, 3, 4])
        #expect(try await raw.readCloseCode() == 1009)
    }

    @Test("messages that arrive before anyone listens wait for the first listener")
    func lateSubscriber() async throws {
        let written = Expectation<Int>()
        let server = try await TestServer.start(setup: { server in
            server.onRequest { request in
                guard let connection = try? request.accept() else { return }
                for i in 0..<3 { connection.sendUTF("m\(i)") { _ in written.fulfill(i) } }
            }
        })
        defer { Task { await server.stop() } }
        let client = try await WebSocketClient().connect(url: server.url)
        // Every message is out before anyone listens on the client.
        for i in 0..<3 { #expect(try await written.value() == i) }
        try await barrier(client.socket.eventLoop)
        let received = try await withTimeout(5) {
            var messages: [WebSocketMessage] = []
            for try await message in client.messages {
                messages.append(message)
                if messages.count == 3 { break }
            }
            return messages
        }
        #expect(received == [.utf8("m0"), .utf8("m1"), .utf8("m2")])
    }

    @Test("pause stops message events until resume")
    func pauseResume() async throws {
        let (server, accepted) = try await Self.serverWithConnections()
        defer { Task { await server.stop() } }
        let raw = try await RawClient.connected(port: server.port)
        let serverSide = try await accepted.value()
        let messages = Expectation<WebSocketMessage>()
        serverSide.onMessage { messages.fulfill($0) }
        try await raw.send(frame: WebSocketFrame(opcode: .text, binaryPayload: ByteBuffer(string: "before")))
        #expect(try await messages.value() == .utf8("before"))
        serverSide.pause()
        try await barrier(serverSide.socket.eventLoop)
        try await raw.send(frame: WebSocketFrame(opcode: .text, binaryPayload: ByteBuffer(string: "while paused")))
        #expect(await messages.values(during: 0.3).isEmpty)
        serverSide.resume()
        #expect(try await messages.value() == .utf8("while paused"))
    }

    @Test("the messages sequence ends when the connection closes")
    func sequenceEnds() async throws {
        let (server, accepted) = try await Self.serverWithConnections()
        defer { Task { await server.stop() } }
        let client = try await WebSocketClient().connect(url: server.url)
        let serverSide = try await accepted.value()
        try await serverSide.write("last")
        try serverSide.close()
        let all = try await withTimeout(5) {
            var all: [WebSocketMessage] = []
            for try await message in client.messages { all.append(message) }
            return all
        }
        #expect(all == [.utf8("last")])
        #expect(client.closeReasonCode == 1000)
    }

    @Test("drain fires once a write buffer that filled up has emptied")
    func drain() async throws {
        let (server, accepted) = try await Self.serverWithConnections()
        defer { Task { await server.stop() } }
        let raw = try await RawClient.connected(port: server.port)
        let serverSide = try await accepted.value()
        let drained = Expectation<Bool>()
        serverSide.onDrain { drained.fulfill(true) }
        try await raw.setReading(false)
        let chunk = ByteBuffer(repeating: 0x42, count: 1 << 20)
        for _ in 0..<32 { serverSide.sendBytes(chunk, completion: nil) }
        // 32 MiB to a peer that does not read must fill the buffer.
        try await waitUntil(10, "the write buffer to fill") { !serverSide.socket.isWritable }
        try await raw.setReading(true)
        let deadline = ContinuousClock.now + .seconds(10)
        var total = 0
        while total < 32 * ((1 << 20) + 10) && ContinuousClock.now < deadline {
            total += raw.discardReceived()
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(try await drained.value())
    }
}

@Suite("WebSocketConnection close events")
struct CloseEventTests {
    @Test("an onClose registered after the close is called at once with the code")
    func lateCloseHandler() async throws {
        let (server, accepted) = try await WebSocketConnectionTests.serverWithConnections()
        defer { Task { await server.stop() } }
        let client = try await WebSocketClient().connect(url: server.url)
        let serverSide = try await accepted.value()
        try serverSide.close(reasonCode: 4004, description: "late")
        try await waitUntil(5, "the client to close") { client.closeReasonCode != -1 && !client.connected }
        try await withTimeout(5, "the client's socket to close") { try await client.socket.closeFuture.get() }
        try await barrier(client.socket.eventLoop)
        let late = Expectation<(Int, String)>()
        client.onClose { late.fulfill(($0, $1)) }
        let (code, description) = try await late.value()
        #expect(code == 4004 && description == "late")
        try await barrier(client.socket.eventLoop)
        #expect(late.pending().isEmpty)
    }
}
