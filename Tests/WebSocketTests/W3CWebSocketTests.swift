import Foundation
import NIOCore
import NIOPosix
import Testing

@testable import WebSocket

/// Everything a W3CWebSocket reports, in order.
private enum W3CEvent: Sendable, Equatable {
    case open(readyState: Int)
    case message(W3CWebSocket.MessageData)
    case error
    case close(W3CWebSocket.CloseEvent, readyState: Int)
}

/// Creates a socket with every handler recording into the returned expectation.
private func recordingSocket(
    url: String, protocols: [String] = [], clientConfig: WebSocketClient.Configuration = WebSocketClient.Configuration()
) throws -> (W3CWebSocket, Expectation<W3CEvent>) {
    let events = Expectation<W3CEvent>()
    let socket = try W3CWebSocket(url: url, protocols: protocols, clientConfig: clientConfig)
    socket.onopen = { [unowned socket] in events.fulfill(.open(readyState: socket.readyState)) }
    socket.onmessage = { events.fulfill(.message($0.data)) }
    socket.onerror = { _ in events.fulfill(.error) }
    socket.onclose = { [unowned socket] in events.fulfill(.close($0, readyState: socket.readyState)) }
    return (socket, events)
}

/// A port on 127.0.0.1 where nothing listens (bound, then closed).
private func unusedPort() async throws -> Int {
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
    let port = channel.localAddress!.port!
    try await channel.close()
    return port
}

@Suite("W3CWebSocket")
struct W3CWebSocketTests {
    @Test("handlers set after the socket opened still get the open event first, then the messages")
    func lateHandlers() async throws {
        let server = try await TestServer.start(setup: { server in
            server.onRequest { request in
                guard let connection = try? request.accept() else { return }
                connection.sendUTF("first")
            }
        })
        defer { Task { await server.stop() } }
        let socket = try W3CWebSocket(url: server.url)
        try await waitUntil(10, "the socket to open") { socket.readyState == W3CWebSocket.OPEN }
        // The message has arrived, and waits for a listener, before any handler is set.
        let connection = try #require(socket.state.withLockedValue { $0.connection })
        try await waitUntil(10, "the message to arrive") { connection.state.withLockedValue { !$0.pending.isEmpty } }
        let events = Expectation<String>()
        socket.onmessage = { event in
            if case .text(let text) = event.data { events.fulfill("message " + text) }
        }
        socket.onopen = { events.fulfill("open") }
        #expect(try await events.value() == "open")
        #expect(try await events.value() == "message first")
        try socket.close()
    }

    @Test("CONNECTING → OPEN → CLOSING → CLOSED; protocol, url, text and binary messages in both binary types")
    func lifecycle() async throws {
        // The server decides only when the test lets it, so the socket is still connecting below.
        let requests = Expectation<WebSocketRequest>()
        let server = try await TestServer.start(setup: { server in
            server.onRequest { requests.fulfill($0) }
        })
        defer { Task { await server.stop() } }
        let (socket, events) = try recordingSocket(url: server.url + "w3c", protocols: ["chat"])
        #expect(socket.readyState == W3CWebSocket.CONNECTING)
        #expect(socket.url == server.url + "w3c")
        #expect(socket.protocol == "")
        #expect(throws: WebSocketError.self) { try socket.send("too early") }
        let request = try await requests.value()
        #expect(socket.readyState == W3CWebSocket.CONNECTING)
        let serverSide = try request.accept(protocol: request.requestedProtocols.first)
        serverSide.onMessage { serverSide.send($0) }
        #expect(try await events.value() == .open(readyState: W3CWebSocket.OPEN))
        #expect(socket.protocol == "chat")
        #expect(socket.extensions == "")
        #expect(socket.binaryType == .arraybuffer)

        try socket.send("héllo 🌍")
        #expect(try await events.value() == .message(.text("héllo 🌍")))
        try socket.send([1, 2, 3] as [UInt8])
        #expect(try await events.value() == .message(.arrayBuffer([1, 2, 3])))
        socket.binaryType = .bytebuffer
        try socket.send(ByteBuffer(bytes: [4, 5]))
        #expect(try await events.value() == .message(.byteBuffer(ByteBuffer(bytes: [4, 5]))))

        // The server reads nothing until the checks of CLOSING are done: the close handshake
        // cannot complete before them (on a loaded machine it did, between close() and the check).
        serverSide.pause()
        try await barrier(serverSide.socket.eventLoop)
        try socket.close(code: 4000, reason: "w3c bye")
        #expect(socket.readyState == W3CWebSocket.CLOSING)
        #expect(throws: WebSocketError.self) { try socket.send("after close") }
        serverSide.resume()
        let closed = try await events.value()
        #expect(closed == .close(.init(code: 4000, reason: "w3c bye", wasClean: true), readyState: W3CWebSocket.CLOSED))
        #expect(socket.readyState == W3CWebSocket.CLOSED)
        try socket.close()  // no-op once closed
        try await barrier(serverSide.socket.eventLoop)
        try await barrierAllLoops()
        #expect(events.pending().isEmpty)
        #expect(socket.bufferedAmount == 0)
    }

    @Test("close() checks its arguments like a browser: code 1000 or 3000-4999, reason at most 123 bytes")
    func closeArguments() async throws {
        let server = try await TestServer.echo()
        defer { Task { await server.stop() } }
        let (socket, events) = try recordingSocket(url: server.url)
        #expect(try await events.value() == .open(readyState: W3CWebSocket.OPEN))
        for code in [0, 999, 1001, 1005, 1006, 1011, 2999, 5000] {
            #expect(throws: WebSocketError.self, "code \(code)") { try socket.close(code: code) }
        }
        do {
            try socket.close(code: 1001)
        } catch let error as WebSocketError {
            #expect(error.code == .invalidCloseCode)
            #expect(error.message.contains("InvalidAccessError"))
        }
        let tooLong = String(repeating: "é", count: 62)  // 124 bytes
        do {
            try socket.close(code: 1000, reason: tooLong)
            Issue.record("a 124-byte reason was accepted")
        } catch let error as WebSocketError {
            #expect(error.code == .invalidArgument)
            #expect(error.message.contains("SyntaxError"))
        }
        #expect(socket.readyState == W3CWebSocket.OPEN)
        let longest = String(repeating: "é", count: 61) + "x"  // 123 bytes
        try socket.close(code: 4999, reason: longest)
        #expect(try await events.value() == .close(.init(code: 4999, reason: longest, wasClean: true), readyState: W3CWebSocket.CLOSED))
        // The checks come before the state check, as in browsers.
        #expect(throws: WebSocketError.self) { try socket.close(code: 1001) }
        try socket.close(code: 3000)
    }

    @Test("close() with no arguments sends 1000; the server closing with 4001 gives onclose 4001")
    func closeCodes() async throws {
        let serverSide = Expectation<WebSocketConnection>()
        let closes = Expectation<CloseEvent>()
        let server = try await TestServer.echo()
        server.server.onConnect { serverSide.fulfill($0) }
        server.server.onClose { _, code, description in closes.fulfill(CloseEvent(code: code, description: description)) }
        defer { Task { await server.stop() } }

        let (first, firstEvents) = try recordingSocket(url: server.url)
        #expect(try await firstEvents.value() == .open(readyState: W3CWebSocket.OPEN))
        try first.close()
        #expect(try await closes.value().code == 1000)
        #expect(try await firstEvents.value() == .close(.init(code: 1000, reason: "Normal connection closure", wasClean: true), readyState: W3CWebSocket.CLOSED))
        _ = try await serverSide.value()

        let (second, secondEvents) = try recordingSocket(url: server.url)
        #expect(try await secondEvents.value() == .open(readyState: W3CWebSocket.OPEN))
        try await serverSide.value().close(reasonCode: 4001, description: "server bye")
        #expect(try await secondEvents.value() == .close(.init(code: 4001, reason: "server bye", wasClean: true), readyState: W3CWebSocket.CLOSED))
        #expect(second.readyState == W3CWebSocket.CLOSED)
    }

    @Test("a connection that cannot be opened: onerror, then onclose 1006, readyState CLOSED")
    func connectFailure() async throws {
        let port = try await unusedPort()
        let events = Expectation<W3CEvent>()
        let errors = Expectation<WebSocketError?>()
        // Each handler is set once, right after init (the refusal can come before or between).
        let socket = try W3CWebSocket(url: "ws://127.0.0.1:\(port)/")
        socket.onerror = { event in
            errors.fulfill(event.error as? WebSocketError)
            events.fulfill(.error)
        }
        socket.onclose = { [unowned socket] in events.fulfill(.close($0, readyState: socket.readyState)) }
        #expect(try await events.value() == .error)
        let error = try await errors.value()
        #expect(error?.code == .connectionRefused)
        #expect(error?.message.contains("refused") == true)
        #expect(try await events.value() == .close(.init(code: 1006, reason: "connection failed", wasClean: false), readyState: W3CWebSocket.CLOSED))
        #expect(socket.readyState == W3CWebSocket.CLOSED)
    }

    @Test("a refused connection's error and close reach handlers set after it failed, in order, readyState CLOSED")
    func failureBeforeHandlers() async throws {
        let port = try await unusedPort()
        let socket = try W3CWebSocket(url: "ws://127.0.0.1:\(port)/")
        // The failure happens before any handler is set, as it can just after init.
        try await waitUntil(10, "the connection to fail") { socket.readyState == W3CWebSocket.CLOSED }
        let events = Expectation<W3CEvent>()
        let errors = Expectation<WebSocketError?>()
        socket.onerror = { event in
            errors.fulfill(event.error as? WebSocketError)
            events.fulfill(.error)
        }
        socket.onclose = { [unowned socket] in events.fulfill(.close($0, readyState: socket.readyState)) }
        #expect(try await events.value() == .error)
        #expect(try await errors.value()?.code == .connectionRefused)
        #expect(try await events.value() == .close(.init(code: 1006, reason: "connection failed", wasClean: false), readyState: W3CWebSocket.CLOSED))
        // Delivered once: setting the handlers again brings nothing more.
        socket.onerror = { _ in events.fulfill(.error) }
        socket.onclose = { [unowned socket] in events.fulfill(.close($0, readyState: socket.readyState)) }
        try await barrier(socket.eventLoop)
        #expect(events.pending().isEmpty)
    }

    @Test("a handshake the server refuses (403): error and close reach handlers set after it failed")
    func rejectionBeforeHandlers() async throws {
        let server = try await TestServer.start(setup: { server in
            server.onRequest { $0.reject(status: 403, reason: "not you") }
        })
        defer { Task { await server.stop() } }
        let socket = try W3CWebSocket(url: server.url)
        try await waitUntil(10, "the handshake to be refused") { socket.readyState == W3CWebSocket.CLOSED }
        let events = Expectation<W3CEvent>()
        let errors = Expectation<WebSocketError?>()
        // onclose first: each event goes to the first handler of its kind, whenever it is set.
        socket.onclose = { [unowned socket] in events.fulfill(.close($0, readyState: socket.readyState)) }
        #expect(try await events.value() == .close(.init(code: 1006, reason: "connection failed", wasClean: false), readyState: W3CWebSocket.CLOSED))
        socket.onerror = { event in
            errors.fulfill(event.error as? WebSocketError)
            events.fulfill(.error)
        }
        #expect(try await events.value() == .error)
        let error = try await errors.value()
        #expect(error?.code == .unexpectedStatus)
        #expect(error?.response?.statusCode == 403)
    }

    @Test("a connection that opened and closed before any handler was set: open, then close, readyState CLOSED")
    func openAndCloseBeforeHandlers() async throws {
        let server = try await TestServer.start(setup: { server in
            server.onRequest { request in
                guard let connection = try? request.accept() else { return }
                try? connection.close(reasonCode: 4001, description: "early bye")
            }
        })
        defer { Task { await server.stop() } }
        let socket = try W3CWebSocket(url: server.url)
        try await waitUntil(10, "the socket to open and close") { socket.readyState == W3CWebSocket.CLOSED }
        let events = Expectation<W3CEvent>()
        socket.onopen = { [unowned socket] in events.fulfill(.open(readyState: socket.readyState)) }
        socket.onerror = { _ in events.fulfill(.error) }
        socket.onclose = { [unowned socket] in events.fulfill(.close($0, readyState: socket.readyState)) }
        #expect(try await events.value() == .open(readyState: W3CWebSocket.CLOSED))
        #expect(try await events.value() == .close(.init(code: 4001, reason: "early bye", wasClean: true), readyState: W3CWebSocket.CLOSED))
        try await barrier(socket.eventLoop)
        #expect(events.pending().isEmpty)
    }

    @Test("onmessage alone, set before the socket opened, gets the messages (no onopen needed)")
    func onmessageWithoutOnopen() async throws {
        let requests = Expectation<WebSocketRequest>()
        let server = try await TestServer.start(setup: { server in
            server.onRequest { requests.fulfill($0) }
        })
        defer { Task { await server.stop() } }
        let socket = try W3CWebSocket(url: server.url)
        let messages = Expectation<String>()
        socket.onmessage = { event in messages.fulfill(event.data.text ?? "binary") }
        let request = try await requests.value()
        #expect(socket.readyState == W3CWebSocket.CONNECTING)
        let serverSide = try request.accept()
        serverSide.sendUTF("pushed")
        #expect(try await messages.value() == "pushed")
        try socket.close()
    }

    @Test("a server that drops the connection: onerror, then onclose 1006")
    func abnormalClose() async throws {
        let server = try await TestServer.echo()
        let serverSide = Expectation<WebSocketConnection>()
        server.server.onConnect { serverSide.fulfill($0) }
        defer { Task { await server.stop() } }
        let (_, events) = try recordingSocket(url: server.url)
        #expect(try await events.value() == .open(readyState: W3CWebSocket.OPEN))
        try await serverSide.value().drop(skipCloseFrame: true)
        #expect(try await events.value() == .error)
        #expect(try await events.value() == .close(.init(code: 1006, reason: WebSocketCloseReason.description(for: 1006), wasClean: false), readyState: W3CWebSocket.CLOSED))
    }

    @Test("close() while CONNECTING abandons the attempt: CLOSING, then onerror and onclose 1006")
    func closeWhileConnecting() async throws {
        let raw = try await RawHTTPServer.start { _ in nil }
        defer { Task { await raw.stop() } }
        let (socket, events) = try recordingSocket(url: "ws://127.0.0.1:\(raw.port)/")
        try await withTimeout(5) { while raw.heads.all.isEmpty { try await Task.sleep(for: .milliseconds(5)) } }
        #expect(socket.readyState == W3CWebSocket.CONNECTING)
        try socket.close()
        // CLOSING at once; the abandoned attempt ends on the event loop, which on a slow machine
        // (sanitizers) can already have made it CLOSED by the time this thread looks.
        #expect([W3CWebSocket.CLOSING, W3CWebSocket.CLOSED].contains(socket.readyState))
        #expect(try await events.value(2) == .error)
        #expect(try await events.value(2) == .close(.init(code: 1006, reason: "connection failed", wasClean: false), readyState: W3CWebSocket.CLOSED))
    }

    @Test("bad URLs and subprotocol lists throw from the initializer")
    func badArguments() {
        #expect(throws: WebSocketError.self) { try W3CWebSocket(url: "http://example.test/") }
        #expect(throws: WebSocketError.self) { try W3CWebSocket(url: "ws://") }
        #expect(throws: WebSocketError.self) { try W3CWebSocket(url: "ws://127.0.0.1:1/", protocols: ["a,b"]) }
        #expect(throws: WebSocketError.self) { try W3CWebSocket(url: "ws://127.0.0.1:1/", protocols: ["x", "x"]) }
    }

    @Test("bufferedAmount rises while the server does not read and falls to 0 when it reads again")
    func bufferedAmount() async throws {
        let received = Expectation<Int>()
        let serverSide = Expectation<WebSocketConnection>()
        let server = try await TestServer.start(setup: { server in
            server.onRequest { request in
                guard let connection = try? request.accept() else { return }
                connection.pause()
                connection.onMessage { received.fulfill($0.binaryData?.readableBytes ?? 0) }
                serverSide.fulfill(connection)
            }
        })
        defer { Task { await server.stop() } }
        let (socket, events) = try recordingSocket(url: server.url)
        #expect(try await events.value() == .open(readyState: W3CWebSocket.OPEN))
        #expect(socket.bufferedAmount == 0)
        let connection = try await serverSide.value()

        let message = ByteBuffer(repeating: 0xA5, count: 256 * 1024)
        let count = 64  // 16 MiB: more than the kernel buffers of both ends hold
        for _ in 0..<count { try socket.send(message) }
        #expect(socket.bufferedAmount > 0)
        #expect(socket.bufferedAmount <= count * message.readableBytes)
        // It stays up while the server does not read. (A check that something does not happen:
        // no event tells when the writes would have completed, so it looks after a while; a slow
        // machine can only make the count higher.)
        try await Task.sleep(for: .milliseconds(300))
        let stuck = socket.bufferedAmount
        #expect(stuck > 1 << 20, "only \(stuck) bytes still buffered: the socket took everything")

        connection.resume()
        try await withTimeout(30, "bufferedAmount to fall to 0") {
            while socket.bufferedAmount > 0 { try await Task.sleep(for: .milliseconds(10)) }
        }
        for _ in 0..<count { #expect(try await received.value(10, "the server's messages") == message.readableBytes) }
        try socket.close()
        _ = try await events.value()
    }

    @Test("wss:// with the client configuration trusting the test CA; extensions lists permessage-deflate when agreed")
    func tlsAndExtensions() async throws {
        let tls = try await TLSTestServer.start()
        defer { Task { await tls.stop() } }
        let (socket, events) = try recordingSocket(url: "wss://localhost:\(tls.port)/", clientConfig: try ClientTLSFiles.clientTrustingTestCA())
        #expect(try await events.value() == .open(readyState: W3CWebSocket.OPEN))
        try socket.send("secure")
        #expect(try await events.value() == .message(.text("secure")))
        try socket.close()
        #expect(try await events.value() == .close(.init(code: 1000, reason: "Normal connection closure", wasClean: true), readyState: W3CWebSocket.CLOSED))

        let deflating = try await TestServer.echo { $0.perMessageDeflate = PerMessageDeflate.Options() }
        defer { Task { await deflating.stop() } }
        var configuration = WebSocketClient.Configuration()
        configuration.perMessageDeflate = PerMessageDeflate.Options()
        let (compressed, compressedEvents) = try recordingSocket(url: deflating.url, clientConfig: configuration)
        #expect(try await compressedEvents.value() == .open(readyState: W3CWebSocket.OPEN))
        #expect(compressed.extensions.hasPrefix("permessage-deflate"))
        let text = String(repeating: "squeeze ", count: 10_000)
        try compressed.send(text)
        #expect(try await compressedEvents.value() == .message(.text(text)))
        try compressed.close()
    }
}
