import NIOCore
import NIOPosix
import Testing

@testable import WebSocket

/// Regression tests for what the fuzz targets in Fuzz/ found, each named after the target and
/// the input that showed it (the inputs are described here; the fuzzers' artifacts are not
/// kept).
@Suite("Fuzz findings")
struct FuzzRegressionTests {
    /// FuzzHandshake crash-eee9d9f9 (the "reject-split" seed): `reject(reason:)` with "\r\n" in
    /// the reason wrote a second header line. Swift's `Character` "\r\n" is one grapheme, so a
    /// filter on the characters "\r" and "\n" let the pair through: response splitting.
    @Test("FuzzHandshake crash-eee9d9f9: a reject reason or origin with CRLF cannot add header lines")
    func rejectReasonCRLF() async throws {
        let server = try await TestServer.start(setup: { server in
            server.onRequest { request in
                if request.resource == "/reject" {
                    request.reject(status: 403, reason: "no\r\nX-Injected: 1\r\n\r\nbody", extraHeaders: ["X-Other": "kept"])
                } else {
                    _ = try? request.accept(origin: "https://example.com\r\nX-Injected: 2")
                }
            }
        })
        defer { Task { await server.stop() } }

        let rejected = try await RawClient.connect(port: server.port)
        let head = try await rejected.handshake(path: "/reject")
        let lines = head.split(separator: "\r\n")
        #expect(lines.first?.hasPrefix("HTTP/1.1 403") == true, "\(head)")
        #expect(!lines.contains { $0.lowercased().hasPrefix("x-injected") }, "\(head)")
        #expect(lines.contains("X-WebSocket-Reject-Reason: noX-Injected: 1body"), "\(head)")
        await rejected.close()

        let accepted = try await RawClient.connect(port: server.port)
        let acceptHead = try await accepted.handshake(path: "/")
        let acceptLines = acceptHead.split(separator: "\r\n")
        #expect(acceptLines.first?.hasPrefix("HTTP/1.1 101") == true, "\(acceptHead)")
        #expect(!acceptLines.contains { $0.lowercased().hasPrefix("x-injected") }, "\(acceptHead)")
        #expect(acceptLines.contains("Origin: https://example.comX-Injected: 2"), "\(acceptHead)")
        await accepted.close()
    }

    /// FuzzConnection leak-a5fa81f6 (flags 0x12, time passing until the keepalive drops the
    /// connection; any closed connection shows it): LeakSanitizer found the connection handler,
    /// its `ChannelHandlerContext` and the pipeline alive after the channel closed. The handler
    /// kept its context, the context keeps its handler: every closed connection leaked its
    /// handler with its buffers and, with permessage-deflate, its zlib state.
    @Test(
        "FuzzConnection leak-a5fa81f6: a closed connection's handler is freed",
        arguments: [false, true])
    func handlerFreedAfterClose(deflate: Bool) async throws {
        let opened = Expectation<WebSocketConnection>()
        let server = try await TestServer.start({ configuration in
            if deflate { configuration.perMessageDeflate = .init() }
        }) { server in
            server.onRequest { request in
                guard let connection = try? request.accept() else { return }
                connection.onMessage { connection.send($0) }
            }
            server.onConnect { opened.fulfill($0) }
        }
        defer { Task { await server.stop() } }

        let handler = WeakReference()
        let connectionReference = WeakReference()
        try await {
            let client = try await RawClient.connected(
                port: server.port, headers: deflate ? ["Sec-WebSocket-Extensions: permessage-deflate"] : [])
            let connection = try await opened.value()
            #expect(connection.extensions.isEmpty == !deflate)
            connectionReference.object = connection
            let channel = connection.socket
            try await channel.eventLoop.submit {
                handler.object = try channel.pipeline.syncOperations.handler(type: WebSocketConnectionHandler.self)
            }.get()
            #expect(handler.object != nil, "the test did not find the handler")
            try await client.send(frame: WebSocketFrame(opcode: .text, binaryPayload: ByteBuffer(string: "hello")))
            #expect(try await client.readFrame()?.binaryPayload == ByteBuffer(string: "hello"))
            try await client.send(frame: WebSocketFrame(opcode: .connectionClose, binaryPayload: ByteBuffer(bytes: [0x03, 0xE8])))
            #expect(try await client.readCloseCode() == 1000)
            try await client.waitForEOF()
            try await channel.closeFuture.get()
            await client.close()
        }()
        // NIO removes the handlers from a closed pipeline on a later loop tick.
        let deadline = ContinuousClock.now + .seconds(5)
        while (handler.object != nil || connectionReference.object != nil) && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(handler.object == nil, "the connection handler outlived its closed channel")
        #expect(connectionReference.object == nil, "the connection outlived its closed channel")
    }

    /// FuzzConnection crash-f51a296d (flags 0x02: the server calls `close()`, then the peer
    /// sends a text frame with invalid UTF-8): the failure (1007) wrote a second close frame
    /// after the server's own. An endpoint sends one close frame; after it, failing the
    /// connection only closes the socket.
    @Test("FuzzConnection crash-f51a296d: a protocol error after our close frame sends no second close frame")
    func oneCloseFrame() async throws {
        let opened = Expectation<WebSocketConnection>()
        let closes = Collected<Int>()
        let server = try await TestServer.start(setup: { server in
            server.onRequest { request in
                guard let connection = try? request.accept() else { return }
                connection.onMessage { _ in }
                connection.onClose { code, _ in closes.append(code) }
                opened.fulfill(connection)
            }
        })
        defer { Task { await server.stop() } }
        let client = try await RawClient.connected(port: server.port)
        let connection = try await opened.value()
        try connection.close()
        #expect(try await client.readCloseCode() == 1000)
        try await client.send(frame: WebSocketFrame(opcode: .text, binaryPayload: ByteBuffer(bytes: [0x61, 0xAC, 0x62])))
        try await client.waitForEOF()
        var frames: [WebSocketFrame] = []
        while let frame = try await client.readFrame(timeout: 1) { frames.append(frame) }
        #expect(frames.isEmpty, "after its close frame the server sent \(frames.map(\.opcode))")
        try await withTimeout(5) { try await connection.socket.closeFuture.get() }
        try await barrier(connection.socket.eventLoop)
        #expect(closes.all == [1000])
        await client.close()
    }

    /// FuzzInflate crash-cbaa1493 (input 82 69 0a 3d: limit 1 byte, one message of the two
    /// bytes 0a 3d): the 00 00 ff ff tail appended at the end of a message completed a code and
    /// inflated past the limit, because the tail had a limit of its own. A compressed message
    /// now never decodes to more than the limit.
    @Test("FuzzInflate crash-cbaa1493: the end-of-message tail counts against the decoded-size limit")
    func inflateTailWithinLimit() throws {
        guard let (_, codec) = PerMessageDeflate().accept(offers: [WebSocketExtension(name: "permessage-deflate")]) else {
            Issue.record("permessage-deflate declined")
            return
        }
        var input = ByteBuffer(bytes: [0x0A, 0x3D])
        var output = ByteBuffer()
        #expect(throws: WebSocketProtocolError.self) {
            try codec.decode(&input, endOfMessage: true, into: &output, limit: 1)
        }
        #expect(output.readableBytes <= 1)

        // The same bytes with room for them decode, to two bytes.
        guard let (_, fresh) = PerMessageDeflate().accept(offers: [WebSocketExtension(name: "permessage-deflate")]) else { return }
        var again = ByteBuffer(bytes: [0x0A, 0x3D])
        var decoded = ByteBuffer()
        try fresh.decode(&again, endOfMessage: true, into: &decoded, limit: 2)
        #expect(decoded.readableBytes == 2)
    }
}

/// A weak reference a test can fill from another isolation domain.
private final class WeakReference: @unchecked Sendable {
    weak var object: AnyObject?
}
