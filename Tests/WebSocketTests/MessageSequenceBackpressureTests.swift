import NIOConcurrencyHelpers
import NIOCore
import Testing

@testable import WebSocket

/// Counts the reads that reach the socket end of the pipeline (those the library lets through).
private final class ReadCounter: ChannelOutboundHandler, Sendable {
    typealias OutboundIn = Any
    private let reads = NIOLockedValueBox(0)
    var count: Int { reads.withLockedValue { $0 } }

    func read(context: ChannelHandlerContext) {
        reads.withLockedValue { $0 += 1 }
        context.read()
    }
}

/// The backpressure of ``WebSocketConnection/messages``, on virtual time: past 16 waiting
/// messages the connection stops reading from the socket (what it read already is still parsed
/// and queued), and reads again once the loop comes back with at most 4 waiting.
@Suite("messages backpressure")
struct MessageSequenceBackpressureTests {
    /// Unmasked text frames "m\(first)"… as a server sends them, in one buffer (one read).
    private static func frames(_ count: Int, from first: Int = 0) -> [UInt8] {
        var bytes: [UInt8] = []
        for i in first..<(first + count) {
            var frame = WebSocketFrame(opcode: .text, binaryPayload: ByteBuffer(string: "m\(i)"))
            frame.mask = false
            bytes += Array(buffer: frame.serialized())
        }
        return bytes
    }

    @Test("permessage-deflate to a consumer that takes nothing: 64 KiB read at once that inflate to 64 MiB queue about 18 MiB; the rest waits unparsed and all 64 arrive once it iterates")
    func deflateToLaggingConsumer() async throws {
        try await VirtualPeer.withServer({ $0.perMessageDeflate = PerMessageDeflate.Options() }) { peer, events in
            try await peer.send(
                "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                    + "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n\r\n")
            let head = try #require(try await peer.httpHead())
            try #require(head.hasPrefix("HTTP/1.1 101") && head.contains("permessage-deflate"), "\(head)")
            let connection = try #require(events.connections.all.last)
            let messages = connection.messages
            let buffer = messages.buffer

            // 64 messages of 1 MiB - 1 KiB of zeros (under the 1 MiB message limit), about 1 KiB
            // each on the wire: one read.
            let size = (1 << 20) - 1024
            let payload = try PerMessageDeflateTests.bomb(size)
            var wire = ByteBuffer()
            for _ in 0..<64 {
                var frame = WebSocketFrame(rsv1: true, opcode: .binary, binaryPayload: payload)
                frame.mask = true
                frame.maskingKey = WebSocketMaskingKey(1, 2, 3, 4)
                var bytes = frame.serialized()
                wire.writeBuffer(&bytes)
            }
            #expect(wire.readableBytes < 128 * 1024)
            try await peer.channel.writeInbound(wire)
            await peer.settle()
            // Before the decode budget: all 64 (64 MiB) were inflated and queued in that read.
            let waiting = buffer.waitingCount
            #expect(waiting >= 16 && waiting <= 18, "\(waiting) messages (of about 1 MiB) wait for the consumer")

            // The consumer iterates: the rest is decoded as it catches up, none lost.
            let received = NIOLockedValueBox(0)
            let consumer = Task {
                var iterator = messages.makeAsyncIterator()
                while received.withLockedValue({ $0 }) < 64, let message = try await iterator.next() {
                    guard case .binary(let data) = message, data.readableBytes == size else { break }
                    received.withLockedValue { $0 += 1 }
                }
            }
            // The virtual loop runs what the consumer hands it (bounded: 10 s of real time).
            let started = ContinuousClock.now
            while received.withLockedValue({ $0 }) < 64, ContinuousClock.now - started < .seconds(10) {
                await peer.settle()
                try await Task.sleep(for: .milliseconds(1))
            }
            consumer.cancel()
            #expect(received.withLockedValue { $0 } == 64)
        }
    }

    @Test("16 waiting messages do not pause; 20 read at once are all queued and the next read waits until the loop comes back for more")
    func pausesPastSixteen() async throws {
        try await VirtualPeer.withClient { peer, connection in
            let reads = ReadCounter()
            try await peer.loop.executeInContext {
                try peer.channel.pipeline.syncOperations.addHandler(reads, position: .first)
            }
            var iterator = connection.messages.makeAsyncIterator()
            let buffer = connection.messages.buffer

            try await peer.send(Self.frames(16))
            #expect(buffer.waitingCount == 16)
            var before = reads.count
            peer.channel.pipeline.read()
            await peer.settle()
            #expect(reads.count == before + 1, "16 waiting messages: reading goes on")

            try await peer.send(Self.frames(4, from: 16))
            #expect(buffer.waitingCount == 20, "what was read is parsed and queued, past the watermark")
            before = reads.count
            peer.channel.pipeline.read()
            await peer.settle()
            #expect(reads.count == before, "20 waiting: the read waits")

            // The loop takes all 20 in one step; they count as waiting until it comes back.
            for i in 0..<20 { #expect(try await iterator.next() == .utf8("m\(i)")) }
            await peer.settle()
            #expect(reads.count == before)

            try await peer.send(Self.frames(1, from: 20))
            #expect(try await iterator.next() == .utf8("m20"))
            await peer.settle()
            #expect(reads.count == before + 1, "back for more with 1 waiting: the held read goes on")
        }
    }
}
