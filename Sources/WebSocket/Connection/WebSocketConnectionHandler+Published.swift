import NIOCore

// Published messages (topics): written to the channel during a topic drain, flushed once after it,
// and counted while in flight (what maxBackpressure limits).
extension WebSocketConnectionHandler {
    /// Whether published messages may still be written (the connection is open: no close frame
    /// went out yet).
    var acceptsPublished: Bool { context != nil && machine.closeState == .open }

    /// Writes frames framed by the topic (shared with the other subscribers); the flush comes
    /// with ``flushPublished()``, after the drain.
    func writePublished(_ frames: ByteBuffer) {
        guard let context else { return }
        writeBatch()
        context.write(wrapOutboundOut(frames), promise: countInFlight(frames.readableBytes, on: context))
        needsFlush = true
    }

    /// Flushes within a drain: the socket takes what it can, and the writes it took complete
    /// (so ``publishedBytesInFlight`` counts only what waits).
    func flushPublishedNow() {
        flushIfNeeded()
    }

    /// Frames (and compresses) a published message on this connection's own state machine.
    func writePublished(_ publication: WebSocketPublication) {
        guard let context else { return }
        var output = Output(handler: self)
        // Deferred like the writes of a read loop: one flush after the drain.
        let wasDeferringFlush = deferringFlush
        deferringFlush = true
        defer { deferringFlush = wasDeferringFlush }
        if machine.sendMessage(
            opcode: publication.opcode, payload: publication.payload, compress: publication.compress,
            allocator: context.channel.allocator, into: &output) == nil {
            output.finish(promise: countInFlight(publication.size, on: context))
        }
    }

    /// A promise that takes `size` bytes off ``publishedBytesInFlight`` once written (or failed).
    private func countInFlight(_ size: Int, on context: ChannelHandlerContext) -> EventLoopPromise<Void> {
        publishedBytesInFlight += size
        publishedBytesUnflushed += size
        let promise = context.eventLoop.makePromise(of: Void.self)
        promise.futureResult.assumeIsolated().whenComplete { _ in self.publishedBytesInFlight -= size }
        return promise
    }

    /// The end of a topic drain: sends what it wrote.
    func flushPublished() {
        publishFlushPending = false
        flushIfNeeded()
    }
}
