import NIOCore

// Two forms of every send, with names of their own so that Swift never has to choose between
// them (at the top level of a `main.swift` it picks a synchronous overload even after `await`,
// and inside `async` code it insists on the `async` one):
// - `sendUTF`, `sendBytes`, `send`, `ping`, `pong`, `sendFrame`: WebSocket-Node's, queue the
//   frame and return at once; an optional completion reports when it was written, or why not.
// - `write(_:)` and `roundTrip(_:)`: `async`, for structured concurrency.
extension WebSocketConnection {
    // MARK: Sending, Node style

    /// Sends a text message. Over `fragmentationThreshold` it goes out in several frames when
    /// `fragmentOutgoingMessages` is on. `completion` reports when it was written, or why not.
    /// `compress: false` sends it uncompressed even when permessage-deflate was negotiated.
    ///
    /// Returns at once, also in `async` code; `try await connection.write(text)` is the form
    /// that waits when the peer reads slower than the application writes.
    public func sendUTF(_ string: String, compress: Bool = true, completion: (@Sendable ((any Error)?) -> Void)? = nil) {
        var buffer = socket.allocator.buffer(capacity: string.utf8.count)
        buffer.writeString(string)
        sendMessage(opcode: .text, payload: buffer, compress: compress, completion: completion)
    }

    /// Sends a binary message (fragmented and compressed like ``sendUTF(_:compress:completion:)``).
    public func sendBytes(_ buffer: ByteBuffer, compress: Bool = true, completion: (@Sendable ((any Error)?) -> Void)? = nil) {
        sendMessage(opcode: .binary, payload: buffer, compress: compress, completion: completion)
    }

    /// Sends a binary message from bytes.
    public func sendBytes(_ bytes: some Sequence<UInt8>, completion: (@Sendable ((any Error)?) -> Void)? = nil) {
        sendBytes(socket.allocator.buffer(bytes: bytes), completion: completion)
    }

    /// Sends a message of either kind (Node's `send(data)`).
    public func send(_ message: WebSocketMessage, completion: (@Sendable ((any Error)?) -> Void)? = nil) {
        switch message {
        case .utf8(let string): sendUTF(string, completion: completion)
        case .binary(let buffer): sendBytes(buffer, completion: completion)
        }
    }

    /// Sends a text message (Node's `send(string)`).
    public func send(_ string: String, completion: (@Sendable ((any Error)?) -> Void)? = nil) {
        sendUTF(string, completion: completion)
    }

    /// Sends a binary message (Node's `send(buffer)`).
    public func send(_ buffer: ByteBuffer, completion: (@Sendable ((any Error)?) -> Void)? = nil) {
        sendBytes(buffer, completion: completion)
    }

    /// Sends a ping with `data` (at most 125 bytes).
    public func ping(_ data: ByteBuffer = ByteBuffer(), completion: (@Sendable ((any Error)?) -> Void)? = nil) throws {
        try sendControl(.ping, data, completion: completion)
    }

    /// Sends a ping with a string payload (at most 125 bytes of UTF-8).
    public func ping(_ string: String, completion: (@Sendable ((any Error)?) -> Void)? = nil) throws {
        try ping(ByteBuffer(string: string), completion: completion)
    }

    /// Sends a pong with `data` (at most 125 bytes). Pongs that answer pings are sent
    /// automatically unless a `ping` handler cancelled that.
    public func pong(_ data: ByteBuffer = ByteBuffer(), completion: (@Sendable ((any Error)?) -> Void)? = nil) throws {
        try sendControl(.pong, data, completion: completion)
    }

    /// Serializes `frame` and sends it as is, but for masking: a client masks it with a fresh
    /// key, a server sends it unmasked, whatever `mask` and `maskingKey` say. An
    /// advanced function: ``sendUTF(_:compress:completion:)`` and ``sendBytes(_:compress:completion:)`` are the
    /// usual way.
    public func sendFrame(_ frame: WebSocketFrame, completion: (@Sendable ((any Error)?) -> Void)? = nil) {
        onLoop { $0.sendFrame(frame, completion: completion) }
    }

    // MARK: Sending, async

    /// Sends a message of either kind, suspending only while the connection's outbound buffer
    /// is above its high watermark (`writeBufferWaterMark.high`, 64 KiB by default): the way
    /// Python `websockets`' `send` awaits drain. A burst of small writes to a reader that keeps
    /// up never suspends and costs no continuation. From a task off the connection's event loop
    /// it suspends until the loop has taken the message (one hop), so that a refusal there (the
    /// close overtook it, an extension failed) is thrown, not lost.
    ///
    /// Returning means the message is queued in order, not that the peer has it. Throws
    /// ``WebSocketError/Code-swift.struct/notConnected`` once the connection is closing or
    /// closed (also while waiting, if it closes then).
    public nonisolated(nonsending) func write(_ message: WebSocketMessage, compress: Bool = true) async throws {
        switch message {
        case .utf8(let string):
            var buffer = socket.allocator.buffer(capacity: string.utf8.count)
            buffer.writeString(string)
            try await write(opcode: .text, buffer, compress: compress)
        case .binary(let buffer):
            try await write(opcode: .binary, buffer, compress: compress)
        }
    }

    /// Sends a text message; see ``write(_:compress:)-(WebSocketMessage,_)``.
    public nonisolated(nonsending) func write(_ text: String, compress: Bool = true) async throws {
        var buffer = socket.allocator.buffer(capacity: text.utf8.count)
        buffer.writeString(text)
        try await write(opcode: .text, buffer, compress: compress)
    }

    /// Sends a binary message; see ``write(_:compress:)-(WebSocketMessage,_)``.
    public nonisolated(nonsending) func write(_ bytes: ByteBuffer, compress: Bool = true) async throws {
        try await write(opcode: .binary, bytes, compress: compress)
    }

    /// Sends a ping and returns the round-trip time when its pong arrives (the `async` ping).
    ///
    /// Each call's ping carries a payload of its own (8 bytes, a counter, after `payload` when
    /// one is given; at most 125 bytes in all), so concurrent calls each get their own answer; a
    /// pong that answers a later ping answers the earlier ones too (RFC 6455 lets a peer answer
    /// only the most recent). Throws ``WebSocketError/Code-swift.struct/notConnected`` if the
    /// connection closes first, `CancellationError` if the task is cancelled.
    public func roundTrip(_ payload: ByteBuffer = ByteBuffer()) async throws -> Duration {
        guard payload.readableBytes <= 125 - 8 else {
            throw WebSocketError(.controlFrameTooLarge, "A round-trip ping carries at most 117 bytes of payload (8 more identify it); got \(payload.readableBytes)")
        }
        let number = state.withLockedValue { state -> UInt64 in
            state.nextPingNumber += 1
            return state.nextPingNumber
        }
        var data = payload
        data.writeInteger(number)
        let start = ContinuousClock.now
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Duration, any Error>) in
                let registered = state.withLockedValue { state -> Bool in
                    guard state.closeReasonCode == -1 else { return false }
                    state.pingWaiters.append(PingWaiter(number: number, payload: data, start: start, continuation: continuation))
                    return true
                }
                guard registered else {
                    continuation.resume(throwing: WebSocketError(.notConnected, "Cannot ping: the connection is closing or closed"))
                    return
                }
                // A task cancelled already ran `onCancel` before the waiter existed (it found
                // nothing to end): the flag is set before the handler runs, so this sees it.
                if Task.isCancelled {
                    finishPing(number, with: .failure(CancellationError()))
                    return
                }
                sendFrame(WebSocketFrame(opcode: .ping, binaryPayload: data)) { error in
                    if let error { self.finishPing(number, with: .failure(error)) }
                }
            }
        } onCancel: {
            finishPing(number, with: .failure(CancellationError()))
        }
    }

    /// A ``roundTrip(_:)`` waiting for its pong.
    struct PingWaiter {
        var number: UInt64
        var payload: ByteBuffer
        var start: ContinuousClock.Instant
        var continuation: CheckedContinuation<Duration, any Error>
    }

    // MARK: Internals

    /// A Node-style send: capped by `maxSendBackpressure`.
    func sendMessage(opcode: WebSocketOpcode, payload: ByteBuffer, compress: Bool = true, completion: (@Sendable ((any Error)?) -> Void)?) {
        // On the loop (an echo from onMessage, say), call straight through: no closure to allocate.
        if eventLoop.inEventLoop {
            handler.sendMessage(opcode: opcode, payload: payload, compress: compress, capped: true, completion: completion)
            return
        }
        onLoop { $0.sendMessage(opcode: opcode, payload: payload, compress: compress, capped: true, completion: completion) }
    }

    /// Node-style sends refused because the peer read too slowly (``WebSocketServer/Configuration/maxSendBackpressure``);
    /// with the `.close` policy the first one closed the connection.
    public var refusedSends: Int { state.withLockedValue { $0.refusedSends } }

    /// Counts a send refused by the send cap (on the event loop).
    func sendRefused() {
        state.withLockedValue { $0.refusedSends += 1 }
    }

    private func sendControl(_ opcode: WebSocketOpcode, _ data: ByteBuffer, completion: (@Sendable ((any Error)?) -> Void)?) throws {
        guard data.readableBytes <= 125 else {
            throw WebSocketError(.controlFrameTooLarge, "\(opcode) payload is \(data.readableBytes) bytes; control frames carry at most 125")
        }
        sendFrame(WebSocketFrame(opcode: opcode, binaryPayload: data), completion: completion)
    }

    /// Queues a message and waits only while more than the high watermark is queued.
    private nonisolated(nonsending) func write(opcode: WebSocketOpcode, _ payload: ByteBuffer, compress: Bool) async throws {
        if eventLoop.inEventLoop {
            // The handler reports refusals at once; a failure of the write itself comes later
            // and closes the connection, which the next write reports.
            if let error = handler.sendMessageDeferringFlush(opcode: opcode, payload: payload, compress: compress) { throw error }
            // The frames are in the channel now, or in the turn's batch (at most 64 KiB, flushed
            // at the turn's end), so the channel's writability tells whether the outbound buffer
            // is above the watermark (the bytes of other threads' writes still in transit to the
            // loop are not in it yet: their own writers wait for them).
            if !socket.isWritable { try await waitUntilWritable() }
            return
        }
        let size = payload.readableBytes
        let open = state.withLockedValue { state -> Bool in
            guard state.closeReasonCode == -1 else { return false }
            state.bytesInTransit += size
            return true
        }
        guard open else { throw WebSocketError(.notConnected, "Cannot send: the connection is closing or closed") }
        // The write returns once the loop has taken the message, and throws its refusal (the
        // close began meanwhile, an extension failed): it once returned before, and a message
        // the loop then dropped was reported as written. A loop that has shut down fails the
        // future rather than leaving the write waiting.
        let refusal: WebSocketError?
        do {
            refusal = try await eventLoop.submit { () -> WebSocketError? in
                let refusal = self.handler.sendMessageDeferringFlush(opcode: opcode, payload: payload, compress: compress)
                let drained = self.state.withLockedValue { state -> Bool in
                    state.bytesInTransit -= size
                    return !state.writeWaiters.isEmpty
                }
                if drained { self.wakeWaitingWrites() }
                return refusal
            }.get()
        } catch {
            state.withLockedValue { $0.bytesInTransit -= size }
            throw WebSocketError(.notConnected, "Cannot send: the connection's event loop has shut down")
        }
        if let refusal { throw refusal }
        if !canWriteMore { try await waitUntilWritable() }
    }

    /// Whether an async write may return at once.
    private var canWriteMore: Bool {
        socket.isWritable && state.withLockedValue { $0.bytesInTransit } <= highWaterMark
    }

    private nonisolated(nonsending) func waitUntilWritable() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let open = state.withLockedValue { state -> Bool in
                guard state.closeReasonCode == -1 else { return false }
                state.writeWaiters.append(continuation)
                return true
            }
            guard open else {
                continuation.resume(throwing: WebSocketError(.notConnected, "The connection closed while a write waited for the peer to read"))
                return
            }
            // Writability may have come back before the waiter was in the list.
            if canWriteMore { wakeWaitingWrites() }
        }
    }

    /// The channel became writable again (called by the handler, on the event loop): the `drain`
    /// event, then the waiting writes.
    func writabilityRestored() {
        emit(\.drain, ())
        wakeWaitingWrites()
    }

    /// Resumes the async writes that wait, when there is room again. No `drain` event: this also
    /// runs when async writes reach the handler, or off the event loop from a new waiter.
    private func wakeWaitingWrites() {
        guard canWriteMore else { return }
        let waiters = state.withLockedValue { state -> [CheckedContinuation<Void, any Error>] in
            defer { state.writeWaiters.removeAll() }
            return state.writeWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// A pong arrived: emit it, and answer the round trips it (or a later ping's pong) closes.
    func pongReceived(_ data: ByteBuffer) {
        emit(\.pong, data)
        let now = ContinuousClock.now
        let answered = state.withLockedValue { state -> [PingWaiter] in
            guard let index = state.pingWaiters.firstIndex(where: { $0.payload == data }) else { return [] }
            defer { state.pingWaiters.removeFirst(index + 1) }
            return Array(state.pingWaiters[...index])
        }
        for waiter in answered { waiter.continuation.resume(returning: now - waiter.start) }
    }

    /// Ends the round trip `number` (a failed write, or cancellation).
    func finishPing(_ number: UInt64, with result: Result<Duration, any Error>) {
        let waiter = state.withLockedValue { state -> PingWaiter? in
            guard let index = state.pingWaiters.firstIndex(where: { $0.number == number }) else { return nil }
            return state.pingWaiters.remove(at: index)
        }
        waiter?.continuation.resume(with: result)
    }
}
