import NIOCore

// Writing: messages and frames through the state machine, the frames it produces (held back one
// so that a completion goes with the last), and the writes, batched and flushed once per read loop.
extension WebSocketConnectionHandler {
    /// Frames and writes a message; a refusal (closing, an extension failing, the send cap of a
    /// `capped` send) goes to `completion` and is returned too.
    @discardableResult
    func sendMessage(
        opcode: WebSocketOpcode, payload: ByteBuffer, compress: Bool = true, capped: Bool = false,
        completion: (@Sendable ((any Error)?) -> Void)?
    ) -> WebSocketError? {
        guard let context else {
            let error = WebSocketError(.notConnected, "Cannot send: the connection is closing or closed")
            completion?(error)
            return error
        }
        if capped, let error = checkSendCap(size: payload.readableBytes) {
            completion?(error)
            return error
        }
        var output = Output(handler: self)
        if let error = machine.sendMessage(opcode: opcode, payload: payload, compress: compress, allocator: context.channel.allocator, into: &output) {
            completion?(error)
            return error
        }
        metrics?.sent(opcode: opcode, bytes: payload.readableBytes, flushNow: !deferringFlush)
        output.finish(promise: Self.promise(for: completion, on: context.eventLoop))
        return nil
    }

    /// Frames and writes a message of an async `write` (no completion): outside a read loop,
    /// its frames are batched as a read loop's are, and flushed once the event loop has run what
    /// it is running (the writing task's turn, or the queued writes of a task on another
    /// thread), or at once when ``deferredFlushLimit`` bytes are batched. An async echo thus
    /// writes the messages of one turn with one syscall instead of one per message.
    func sendMessageDeferringFlush(opcode: WebSocketOpcode, payload: ByteBuffer, compress: Bool) -> WebSocketError? {
        // Within a read loop the flush is at its end already; a large message is a write of its
        // own either way, and waiting for the turn's end would only delay it.
        if deferringFlush || payload.readableBytes > Self.copyThreshold {
            return sendMessage(opcode: opcode, payload: payload, compress: compress, completion: nil)
        }
        deferringFlush = true
        let error = sendMessage(opcode: opcode, payload: payload, compress: compress, completion: nil)
        deferringFlush = false
        if (batch?.readableBytes ?? 0) >= Self.deferredFlushLimit {
            flushIfNeeded()
        } else if needsFlush {
            scheduleFlush()
        }
        return error
    }

    /// Batched bytes past which an async write flushes at once rather than at the end of the
    /// event loop's turn (so a task writing without pause never gathers more than this).
    static let deferredFlushLimit = 64 * 1024

    /// Flushes after what the event loop has queued already; once per turn: at the end of the
    /// scoped handlers' executor turn when one is running, else in a task of its own.
    private func scheduleFlush() {
        guard !flushScheduled, let context else { return }
        flushScheduled = true
        if let turnEnd, turnEnd.flushAtTurnEnd(self) { return }
        context.eventLoop.assumeIsolated().execute {
            self.turnEnded()
        }
    }

    /// The turn that wrote ended: flush.
    func turnEnded() {
        flushScheduled = false
        flushIfNeeded()
    }

    func sendFrame(_ frame: WebSocketFrame, completion: (@Sendable ((any Error)?) -> Void)?) {
        guard let context else {
            completion?(WebSocketError(.notConnected, "Cannot send: the connection is closed"))
            return
        }
        if !frame.opcode.isControl, let error = checkSendCap(size: frame.binaryPayload.readableBytes) {
            completion?(error)
            return
        }
        var output = Output(handler: self)
        if let error = machine.sendFrame(frame, allocator: context.channel.allocator, into: &output) {
            completion?(error)
            return
        }
        output.finish(promise: Self.promise(for: completion, on: context.eventLoop))
    }

    /// Applies the Node-style sends' cap (``WebSocketFlowControl/verdict(forSendOf:)``): nil to
    /// send, or the error of a send that is refused (and, by the `close` policy, closes the
    /// connection).
    private func checkSendCap(size: Int) -> WebSocketError? {
        guard machine.closeState == .open else { return nil }  // the state machine refuses it
        switch flow.verdict(forSendOf: size) {
        case .send:
            return nil
        case .refuse:
            connection?.sendRefused()
            return WebSocketError(
                .backpressure,
                "Send refused: the peer reads too slowly and \(options.maxSendBackpressure) bytes (maxSendBackpressure) are queued for it already")
        case .close(let code):
            connection?.sendRefused()
            connection?.logger.debug("WebSocket send past maxSendBackpressure: closing", metadata: ["code": "\(code)"])
            close(code: code, description: "The peer reads too slowly: more than \(options.maxSendBackpressure) bytes queued")
            return WebSocketError(
                .notConnected,
                "Send refused and the connection closed with \(code): the peer reads too slowly and \(options.maxSendBackpressure) bytes (maxSendBackpressure) were queued for it")
        }
    }

    private static func promise(for completion: (@Sendable ((any Error)?) -> Void)?, on eventLoop: any EventLoop) -> EventLoopPromise<Void>? {
        completion.map { completion in
            let promise = eventLoop.makePromise(of: Void.self)
            promise.futureResult.whenComplete { result in
                if case .failure(let error) = result { completion(error) } else { completion(nil) }
            }
            return promise
        }
    }

    /// The frames one call of the state machine writes, passed on in order; the last one is held
    /// back until ``finish(promise:)`` so that a completion goes with the message's last frame.
    struct Output: WebSocketFrameSink {
        let handler: WebSocketConnectionHandler
        private var last: Frame?

        private enum Frame {
            case frame(WebSocketFrameHeader, ByteBuffer)
            case serialized(ByteBuffer)
        }

        init(handler: WebSocketConnectionHandler) {
            self.handler = handler
        }

        mutating func write(_ header: WebSocketFrameHeader, payload: ByteBuffer) {
            passOn(promise: nil)
            last = .frame(header, payload)
        }

        mutating func write(serialized frame: ByteBuffer) {
            passOn(promise: nil)
            last = .serialized(frame)
        }

        /// Writes the held-back frame, with `promise` (completed at once when there is none).
        mutating func finish(promise: EventLoopPromise<Void>?) {
            if last == nil {
                promise?.succeed(())
                return
            }
            passOn(promise: promise)
        }

        private mutating func passOn(promise: EventLoopPromise<Void>?) {
            switch last {
            case .frame(let header, let payload): handler.writeFrame(header, payload: payload, promise: promise)
            case .serialized(let bytes): handler.write(bytes, promise: promise)
            case nil: break
            }
            last = nil
        }
    }

    /// Payloads up to this size are copied behind their header into one buffer; larger ones
    /// (server side) go out as a separate buffer, without a copy.
    private static let copyThreshold = 1024

    private func writeFrame(_ header: WebSocketFrameHeader, payload: ByteBuffer, promise: EventLoopPromise<Void>?) {
        guard let context else {
            promise?.fail(WebSocketError(.notConnected, "Cannot send: the connection is closed"))
            return
        }
        let length = payload.readableBytes
        let headerLength = header.encodedLength
        let key = header.maskingKey
        if key == nil && length > Self.copyThreshold {
            var headerBuffer = context.channel.allocator.buffer(capacity: headerLength)
            header.write(to: &headerBuffer)
            writeBatch()
            context.write(wrapOutboundOut(headerBuffer), promise: nil)
            write(payload, promise: promise)
            return
        }
        if deferringFlush && promise == nil {
            if batch == nil {
                let capacity = max(Self.batchCapacity, headerLength + length)
                batch = turnEnd?.spareBatch(capacity: capacity) ?? context.channel.allocator.buffer(capacity: capacity)
            }
            header.write(to: &batch!)
            batch!.writeMaskedPayload(payload.readableBytesView, key: key)
            needsFlush = true
            return
        }
        var buffer = context.channel.allocator.buffer(capacity: headerLength + length)
        header.write(to: &buffer)
        buffer.writeMaskedPayload(payload.readableBytesView, key: key)
        write(buffer, promise: promise)
    }

    /// The initial capacity of a read loop's batch of small frames.
    private static let batchCapacity = 1024

    /// Sends the batched frames down the pipeline (before any other write, to keep the order).
    func writeBatch() {
        if let buffer = batch, let context {
            batch = nil
            context.write(wrapOutboundOut(buffer), promise: nil)
        }
    }

    private func write(_ buffer: ByteBuffer, promise: EventLoopPromise<Void>?) {
        guard let context else {
            promise?.fail(WebSocketError(.notConnected, "Cannot send: the connection is closed"))
            return
        }
        writeBatch()
        context.write(wrapOutboundOut(buffer), promise: promise)
        if deferringFlush {
            needsFlush = true
        } else {
            context.flush()
        }
    }

    func flushIfNeeded() {
        metrics?.flush()
        publishedBytesUnflushed = 0
        if needsFlush, let context {
            needsFlush = false
            let written = batch
            writeBatch()
            context.flush()
            // Written now unless the socket was full (then the reuse allocates anew).
            if let written, let turnEnd { turnEnd.recycle(written) }
        }
    }
}
