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
