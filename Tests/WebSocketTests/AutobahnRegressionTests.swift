import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import WebSocket

/// Regressions found by the Autobahn|Testsuite, each named after the cases that found it.
@Suite("Autobahn regressions")
struct AutobahnRegressionTests {
    /// A raw server for one client: answers the opening handshake with 101 and `extra` bytes in
    /// the same write, then only records what the client sends.
    final class RawServer: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let received = NIOLockedValueBox(ByteBuffer())
        let extra: [UInt8]

        init(extra: [UInt8]) { self.extra = extra }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var incoming = unwrapInboundIn(data)
            let request = received.withLockedValue { buffer -> String? in
                buffer.writeBuffer(&incoming)
                let text = String(buffer: buffer)
                guard let end = text.range(of: "\r\n\r\n") else { return nil }
                if buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) == UInt8(ascii: "G") {
                    buffer.moveReaderIndex(forwardBy: text[..<end.upperBound].utf8.count)
                    return String(text[..<end.upperBound])
                }
                return nil
            }
            guard let request else { return }
            let key = request.split(separator: "\r\n").first { $0.lowercased().hasPrefix("sec-websocket-key:") }!
                .split(separator: ":")[1].trimmingSpaces()
            var response = ByteBuffer(string: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: \(WebSocketHandshake.acceptValue(forKey: String(key)))\r\n\r\n")
            response.writeBytes(extra)
            context.writeAndFlush(NIOAny(response), promise: nil)
        }

        /// Frames the client sent after the handshake.
        func frames() -> [WebSocketFrame] {
            received.withLockedValue { buffer in
                var copy = buffer
                var frames: [WebSocketFrame] = []
                while let frame = try? WebSocketFrame.parse(from: &copy) { frames.append(frame) }
                return frames
            }
        }
    }

    @Test("client (Autobahn 1.1.1, 6.5.x, 9.7.x in client mode): a frame that came with the 101 is answered at once")
    func clientFlushesRepliesToFramesWithThe101() async throws {
        let ping = Array(WebSocketFrame(opcode: .ping, binaryPayload: ByteBuffer(string: "with-101")).serialized().readableBytesView)
        let raw = RawServer(extra: ping)
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(raw) } }
            .bind(host: "127.0.0.1", port: 0).get()
        defer { listener.close(promise: nil) }
        let client = try await WebSocketClient().connect(url: "ws://127.0.0.1:\(listener.localAddress!.port!)/")
        // The server sends nothing more: the pong must go out without a later read to flush it.
        let pong = try await withTimeout(3, "the pong") {
            while true {
                if let pong = raw.frames().first(where: { $0.opcode == .pong }) { return pong }
                try await Task.sleep(for: .milliseconds(10))
            }
        }
        #expect(pong.binaryPayload == ByteBuffer(string: "with-101") && pong.mask)
        client.drop(skipCloseFrame: true)
    }

    @Test("server: a frame sent right behind the upgrade request is answered at once")
    func serverFlushesRepliesToFramesWithTheRequest() async throws {
        let server = try await TestServer.echo()
        defer { Task { await server.stop() } }
        let raw = try await RawClient.connect(port: server.port)
        var bytes = Array("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".utf8)
        var ping = WebSocketFrame(mask: true, opcode: .ping, binaryPayload: ByteBuffer(string: "early"))
        ping.maskingKey = .random()
        bytes += Array(ping.serialized().readableBytesView)
        try await raw.send(bytes)
        #expect(try await raw.readHTTPHead().hasPrefix("HTTP/1.1 101"))
        let pong = try #require(try await raw.readFrame(timeout: 3))
        #expect(pong.opcode == .pong && pong.binaryPayload == ByteBuffer(string: "early"))
    }
}
