import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import Testing

@testable import WebSocket

/// Async writes of one event loop turn go down the pipeline as one buffer and one flush (one
/// syscall on a socket) instead of one per message: what an async echo needs on W2.
@Suite("Async write batching")
struct AsyncWriteBatchingTests {
    /// Runs `body` as a task on the connection's event loop (as a scoped handler runs) and
    /// returns every buffer the library wrote meanwhile, one element per pipeline write.
    /// With `turnEnd`, the connection's writes flush at the end of the executor's drain, as a
    /// scoped handler's do (`runScoped` sets it); without, in a flush task of their own.
    private static func writesOnLoop(
        _ peer: VirtualPeer, turnEndOf connection: WebSocketConnection? = nil, executor: EventLoopExecutor? = nil,
        _ body: @escaping @Sendable () async throws -> Void
    ) async throws -> [ByteBuffer] {
        // The handshake's bytes are gone already (read by withClient); drain anything else.
        while try await peer.channel.readOutbound(as: ByteBuffer.self) != nil {}
        let done = NIOLockedValueBox(false)
        let executor = executor ?? EventLoopExecutor(peer.loop)
        if let connection {
            try await peer.loop.executeInContext { connection.handler.turnEnd = executor }
        }
        let task = Task(executorPreference: executor) {
            try await body()
            done.withLockedValue { $0 = true }
        }
        // The task's jobs and the library's flush are queued on the testing loop: run them
        // until the task has finished (bounded: a failing body never sets `done`).
        for _ in 0..<1000 where !done.withLockedValue({ $0 }) {
            await peer.settle()
            await Task.yield()
        }
        try await task.value
        await peer.settle()
        var buffers: [ByteBuffer] = []
        while let buffer = try await peer.channel.readOutbound(as: ByteBuffer.self) { buffers.append(buffer) }
        return buffers
    }

    private static func parse(_ buffers: [ByteBuffer]) throws -> [WebSocketFrame] {
        var all = ByteBuffer()
        for var buffer in buffers { all.writeBuffer(&buffer) }
        var frames: [WebSocketFrame] = []
        while let frame = try WebSocketFrame.parse(from: &all) { frames.append(frame) }
        #expect(all.readableBytes == 0)
        return frames
    }

    @Test("ten small async writes in one turn are one buffer down the pipeline, in order")
    func smallWritesShareOneBuffer() async throws {
        try await VirtualPeer.withClient { peer, connection in
            let buffers = try await Self.writesOnLoop(peer) {
                for i in 0..<10 { try await connection.write("m\(i)") }
            }
            // Without the batching: ten buffers, each flushed on its own.
            #expect(buffers.count == 1)
            let frames = try Self.parse(buffers)
            #expect(frames.map { String(buffer: $0.binaryPayload) } == (0..<10).map { "m\($0)" })
        }
    }

    @Test("a turn's batch is flushed at once past 64 KiB, so a task that never pauses holds no more")
    func batchFlushedPastTheLimit() async throws {
        try await VirtualPeer.withClient { peer, connection in
            let payload = String(repeating: "x", count: 1000)
            let buffers = try await Self.writesOnLoop(peer) {
                for _ in 0..<100 { try await connection.write(payload) }
            }
            // 1,008 bytes a frame (a client's frame is masked): the 66th frame takes the batch
            // past 65,536 bytes and it goes at once; the other 34 go at the end of the turn.
            #expect(buffers.map(\.readableBytes) == [66 * 1008, 34 * 1008])
            #expect(try Self.parse(buffers).count == 100)
        }
    }

    @Test("a large async write is written and flushed at once, after the small ones before it")
    func largeWriteKeepsOrder() async throws {
        try await VirtualPeer.withClient { peer, connection in
            let large = ByteBuffer(repeating: 7, count: 5000)
            let buffers = try await Self.writesOnLoop(peer) {
                try await connection.write("before")
                try await connection.write(large)
                try await connection.write("after")
            }
            let frames = try Self.parse(buffers)
            #expect(frames.map(\.opcode) == [.text, .binary, .text])
            #expect(frames.map(\.binaryPayload.readableBytes) == [6, 5000, 5])
        }
    }

    @Test("a scoped handler's writes of one executor turn flush once at the turn's end (no flush task of their own)")
    func writesFlushAtTurnEnd() async throws {
        try await VirtualPeer.withClient { peer, connection in
            let buffers = try await Self.writesOnLoop(peer, turnEndOf: connection) {
                for i in 0..<10 { try await connection.write("t\(i)") }
            }
            // Nothing else flushes them: without the turn's end flushing, nothing arrives.
            #expect(buffers.count == 1)
            #expect(try Self.parse(buffers).map { String(buffer: $0.binaryPayload) } == (0..<10).map { "t\($0)" })
        }
    }

    @Test("a turn's flushed batch goes back to the loop's executor, and the next turn takes it from there")
    func flushedBatchIsReused() async throws {
        try await VirtualPeer.withClient { peer, connection in
            let executor = EventLoopExecutor(peer.loop)
            let first = try await Self.writesOnLoop(peer, turnEndOf: connection, executor: executor) {
                try await connection.write("one")
            }
            #expect(try Self.parse(first).map { String(buffer: $0.binaryPayload) } == ["one"])
            // Without the hand-back, the flushed batch is dropped and every turn allocates one.
            #expect(try await peer.loop.submit { executor.spareBatchCount }.get() == 1)
            let second = try await Self.writesOnLoop(peer, turnEndOf: connection, executor: executor) {
                try await connection.write("two")
                #expect(executor.spareBatchCount == 0)
            }
            #expect(try Self.parse(second).map { String(buffer: $0.binaryPayload) } == ["two"])
        }
    }

    @Test("a spare batch is the flushed storage, cleared, unless something still holds it; at most 64 of at most 4 KiB")
    func spareBatchStorage() async throws {
        let loop = EmbeddedEventLoop()
        let executor = EventLoopExecutor(loop)
        func address(_ buffer: ByteBuffer) -> UInt { buffer.withVeryUnsafeBytes { UInt(bitPattern: $0.baseAddress) } }
        var written = ByteBufferAllocator().buffer(capacity: 1024)
        written.writeString("flushed")
        let storage = address(written)
        executor.recycle(written)
        written = ByteBuffer()
        let reused = try #require(executor.spareBatch(capacity: 100))
        #expect(address(reused) == storage)
        #expect(reused.readableBytes == 0 && reused.capacity >= 1024)
        #expect(executor.spareBatch(capacity: 100) == nil)

        // Still held (a write the socket did not take whole): fresh storage, the held bytes intact.
        var held = ByteBufferAllocator().buffer(capacity: 1024)
        held.writeString("pending")
        executor.recycle(held)
        let fresh = try #require(executor.spareBatch(capacity: 100))
        #expect(address(fresh) != address(held))
        #expect(String(buffer: held) == "pending")

        executor.recycle(ByteBufferAllocator().buffer(capacity: 8192))
        #expect(executor.spareBatchCount == 0)
        for _ in 0..<70 { executor.recycle(ByteBufferAllocator().buffer(capacity: 64)) }
        #expect(executor.spareBatchCount == 64)
    }

    @Test("a scoped handler's message over 16 KiB is handled at its read's end (the echo is out before the loop's turn ends); a small one waits for the turn")
    func largeMessageHandledAtReadEnd() async throws {
        try await VirtualPeer.withServer(setup: { server, events in
            server.onRequest { request in
                let connection = try? request.accept { connection in
                    for try await message in connection.messages { try await connection.write(message) }
                }
                if let connection { events.record(connection) }
            }
        }) { peer, events in
            let connection = try await peer.upgrade(events)
            for _ in 0..<1000 where !connection.messages.buffer.isWaiting {
                await peer.settle()
                await Task.yield()
            }
            #expect(connection.messages.buffer.isWaiting)
            func echoed(after size: Int) async throws -> (atReadEnd: Bool, payload: Int) {
                var frame = WebSocketFrame(opcode: .binary, binaryPayload: ByteBuffer(repeating: 1, count: size))
                frame.mask = true
                frame.maskingKey = WebSocketMaskingKey(1, 2, 3, 4)
                // Straight into the pipeline (read and read-complete), without running the loop's
                // queued tasks (where the turn's end is).
                try await peer.channel.writeInbound(frame.serialized())
                var buffers: [ByteBuffer] = []
                while let buffer = try await peer.channel.readOutbound(as: ByteBuffer.self) { buffers.append(buffer) }
                let atReadEnd = !buffers.isEmpty
                await peer.settle()
                while let buffer = try await peer.channel.readOutbound(as: ByteBuffer.self) { buffers.append(buffer) }
                // The echo of 20 KiB is two frames (outgoing messages are fragmented at 16 KiB).
                return (atReadEnd, try Self.parse(buffers).reduce(0) { $0 + $1.binaryPayload.readableBytes })
            }
            #expect(try await echoed(after: 100) == (false, 100))
            // Without the read's end running the handler, it waits for the turn like the small one.
            #expect(try await echoed(after: 20 * 1024) == (true, 20 * 1024))
            #expect(try await echoed(after: 100) == (false, 100))
        }
    }
}
