import Logging
import NIOCore

/// The I/O layer of a connection: it feeds the channel's bytes to the connection's
/// ``WebSocketConnectionStateMachine`` and carries out what that returns (writes, closing the
/// output or the socket), owns the timers (closeTimeout, keepalive and its grace period), and
/// holds reading while nobody listens or the consumer is slow.
///
/// Lives on the channel's event loop only; ``WebSocketConnection`` is the thread-safe face.
final class WebSocketConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = Never
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Set by the connection right after creation; cleared when the socket closes.
    var connection: WebSocketConnection?
    /// Counts for swift-metrics (Metrics/); nil without a metrics backend. Set before the handler
    /// is in a pipeline, then read on its event loop only, twice per message: unchecked, as a
    /// checked class property costs a dynamic exclusivity check per access.
    @exclusivity(unchecked) var metrics: WebSocketConnectionMetrics?
    private var machine: WebSocketConnectionStateMachine
    private var context: ChannelHandlerContext?

    // Reading control.
    /// Inbound messages wait for a listener and reading is paused (see `WebSocketConnection`).
    private var awaitingConsumer = false
    private var userPaused = false
    private var streamBackpressure = false
    /// Input held while delivery pauses, in order, copied out of the channel's receive buffers
    /// (see `ownStorage`). Rarely used: an empty array allocates nothing (a `CircularBuffer`
    /// allocates its storage up front, 56 bytes per idle connection).
    private var held: [ByteBuffer] = []
    private var pendingRead = false
    private var inReadLoop = false
    private var needsFlush = false
    /// Small promise-less frames written during the read loop (echoes, pongs), gathered into one
    /// buffer that goes down the pipeline once, before the flush or any other write.
    private var batch: ByteBuffer?

    // Timers.
    private var closeTimer: Scheduled<Void>?
    /// A scheduled callback rather than a `Scheduled` task: `scheduleTask` allocates a promise
    /// and three closures that live as long as the timer, about 0.18 KiB per idle connection.
    private var keepaliveTimer: NIOScheduledCallback?
    private var graceTimer: Scheduled<Void>?

    init(role: WebSocketRole, options: WebSocketConnectionOptions, codecs: [any WebSocketExtensionCodec]) {
        self.machine = WebSocketConnectionStateMachine(role: role, options: options, codecs: codecs, now: .now())
    }

    private var isHolding: Bool { awaitingConsumer || userPaused || streamBackpressure }
    private var options: WebSocketConnectionOptions { machine.options }

    // MARK: - Lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        machine.bytesReceived(at: .now())
        if !options.isHTTP2Stream {
            // (An HTTP/2 stream channel traps on options it does not know.)
            let marks = options.writeBufferWaterMark
            try? context.channel.syncOptions?.setOption(
                ChannelOptions.writeBufferWaterMark, value: .init(low: marks.low, high: marks.high))
        }
        if options.useNativeKeepalive && !options.isHTTP2Stream {
            WebSocketNativeKeepalive.enable(on: context.channel, interval: options.keepaliveInterval)
        } else if options.keepalive {
            scheduleKeepalive(at: machine.firstKeepaliveDeadline)
        }
        if !context.channel.isActive {
            // The socket went away during the handshake.
            context.eventLoop.assumeIsolated().execute { self.socketClosed() }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        socketClosed()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        // The context holds this handler: keeping it would keep both (and the buffers, timers
        // and zlib state) alive forever after the channel closed.
        self.context = nil
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // After a completed close handshake a peer may reset instead of closing (Autobahn's
        // server does): nothing was lost, so it is no error for the user.
        switch machine.closeState {
        case .closeReceived:
            connection?.logger.debug("WebSocket socket error after the close handshake", metadata: ["error": "\(error)"])
        case .open, .closeSent:
            connection?.logger.debug("WebSocket socket error", metadata: ["error": "\(error)"])
            connection?.emitError(error)
        case .dropping, .closed:
            break
        }
        context.close(promise: nil)
    }

    /// The connection never got its socket (the client left before `accept` took effect).
    func abandon() {
        socketClosed()
    }

    private func socketClosed() {
        guard machine.socketClosed() else { return }
        closeTimer?.cancel()
        keepaliveTimer?.cancel()
        graceTimer?.cancel()
        held.removeAll()
        batch = nil
        metrics?.flush()
        let connection = self.connection
        self.connection = nil
        connection?.didClose(handshakeCompleted: machine.handshakeCompleted)
    }

    // MARK: - Reading

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        machine.bytesReceived(at: .now())
        let buffer = unwrapInboundIn(data)
        if isHolding || !held.isEmpty {
            held.append(buffer.ownStorage())
            return
        }
        process(buffer, fromChannel: true)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushIfNeeded()
        context.fireChannelReadComplete()
    }

    func read(context: ChannelHandlerContext) {
        if isHolding {
            pendingRead = true
        } else {
            context.read()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            connection?.writabilityRestored()
        } else {
            metrics?.server.pausesOut.increment()
        }
        context.fireChannelWritabilityChanged()
    }

    /// Runs the state machine over `buffer`, acting on each event. Stops early (stashing the rest)
    /// when delivery must pause. The rest of a channel's buffer is stashed as a copy; the rest of
    /// one that was held already is ours and is stashed as it is (copying it on every pause would
    /// copy a large held buffer once per message under backpressure).
    private func process(_ input: ByteBuffer, fromChannel: Bool) {
        var buffer = input
        inReadLoop = true
        defer { inReadLoop = false }
        while true {
            var output = Output(handler: self)
            guard let inbound = machine.nextInbound(from: &buffer, into: &output) else { break }
            handle(inbound, output: &output)
            if isHolding && buffer.readableBytes > 0 {
                held.insert(fromChannel ? buffer.ownStorage() : buffer, at: 0)
                return
            }
        }
    }

    private func handle(_ inbound: WebSocketConnectionStateMachine.Inbound, output: inout Output) {
        guard let connection else { return }
        switch inbound {
        case .deliver(let event):
            metrics?.received(event)
            switch connection.deliver(event) {
            case .delivered: break
            case .backpressure:
                streamBackpressure = true
                metrics?.server.pausesIn.increment()
            case .awaitingConsumer: awaitingConsumer = true
            }
        case .ignore:
            break
        case .ping(let data):
            let cancel = WebSocketPingCancel()
            connection.emit(\.ping, (cancel, data))
            machine.answerPing(data, cancelled: cancel.cancelled, into: &output)
            output.finish(promise: nil)
        case .pong(let data):
            connection.pongReceived(data)
        case .peerClosed(_, _, let effects):
            output.finish(promise: nil)
            perform(effects)
        case .failed(let error, let effects):
            metrics?.server.protocolFailure(code: error.closeCode)
            connection.logger.debug("WebSocket protocol error", metadata: ["code": "\(error.closeCode)", "reason": "\(error.reason)"])
            output.finish(promise: nil)
            perform(effects)
        }
    }

    /// Carries out the state machine's effects, in order, after flushing what it wrote.
    private func perform(_ effects: [WebSocketConnectionStateMachine.Effect]) {
        guard !effects.isEmpty else { return }
        flushIfNeeded()
        for effect in effects {
            switch effect {
            case .recordClose(let code, let description):
                connection?.markClosing(code: code, description: description)
            case .startCloseTimer(let timeout):
                guard let context else { continue }
                closeTimer?.cancel()
                closeTimer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) {
                    self.perform(self.machine.closeTimerFired())
                }
            case .cancelCloseTimer:
                closeTimer?.cancel()
            case .closeOutput:
                context?.close(mode: .output).assumeIsolated().whenFailure { _ in
                    self.context?.close(promise: nil)
                }
            case .closeSocket:
                context?.close(promise: nil)
            case .releaseReadHolds:
                awaitingConsumer = false
                userPaused = false
                streamBackpressure = false
                if pendingRead, let context {
                    pendingRead = false
                    context.read()
                }
            }
        }
    }

    // MARK: - Flow control

    /// A listener arrived: hand it what waited and read on.
    func consumerAttached() {
        connection?.flushPending()
        awaitingConsumer = false
        resumeIfPossible()
    }

    func setUserPaused(_ paused: Bool) {
        userPaused = paused
        if !paused { resumeIfPossible() }
    }

    func setStreamBackpressure(_ on: Bool) {
        streamBackpressure = on
        if !on { resumeIfPossible() }
    }

    private func resumeIfPossible() {
        guard let context, !isHolding, !machine.isClosed else { return }
        while !isHolding, !held.isEmpty {
            process(held.removeFirst(), fromChannel: false)
        }
        flushIfNeeded()
        if !isHolding && pendingRead {
            pendingRead = false
            context.read()
        }
    }

    // MARK: - Sending

    /// Frames and writes a message; a refusal (closing, an extension failing) goes to
    /// `completion` and is returned too.
    @discardableResult
    func sendMessage(
        opcode: WebSocketOpcode, payload: ByteBuffer, compress: Bool = true, completion: (@Sendable ((any Error)?) -> Void)?
    ) -> WebSocketError? {
        guard let context else {
            let error = WebSocketError(.notConnected, "Cannot send: the connection is closing or closed")
            completion?(error)
            return error
        }
        var output = Output(handler: self)
        if let error = machine.sendMessage(opcode: opcode, payload: payload, compress: compress, allocator: context.channel.allocator, into: &output) {
            completion?(error)
            return error
        }
        metrics?.sent(opcode: opcode, bytes: payload.readableBytes, flushNow: !inReadLoop)
        output.finish(promise: Self.promise(for: completion, on: context.eventLoop))
        return nil
    }

    func sendFrame(_ frame: WebSocketFrame, completion: (@Sendable ((any Error)?) -> Void)?) {
        guard let context else {
            completion?(WebSocketError(.notConnected, "Cannot send: the connection is closed"))
            return
        }
        var output = Output(handler: self)
        if let error = machine.sendFrame(frame, allocator: context.channel.allocator, into: &output) {
            completion?(error)
            return
        }
        output.finish(promise: Self.promise(for: completion, on: context.eventLoop))
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
    private struct Output: WebSocketFrameSink {
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
        if inReadLoop && promise == nil {
            if batch == nil {
                batch = context.channel.allocator.buffer(capacity: max(Self.batchCapacity, headerLength + length))
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
    private func writeBatch() {
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
        if inReadLoop {
            needsFlush = true
        } else {
            context.flush()
        }
    }

    private func flushIfNeeded() {
        metrics?.flush()
        publishedBytesUnflushed = 0
        if needsFlush, let context {
            needsFlush = false
            writeBatch()
            context.flush()
        }
    }

    // MARK: - Published messages (topics)

    /// Whether published messages may still be written (the connection is open: no close frame
    /// went out yet).
    var acceptsPublished: Bool { context != nil && machine.closeState == .open }
    /// Set while the connection is in a topic drain's list of connections to flush.
    var publishFlushPending = false
    /// Bytes of published messages handed to the channel and not yet written to the socket:
    /// what ``WebSocketServer/Configuration/maxBackpressure`` limits.
    private(set) var publishedBytesInFlight = 0

    /// Bytes of published messages written since the last flush.
    private(set) var publishedBytesUnflushed = 0

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
        let wasInReadLoop = inReadLoop
        inReadLoop = true
        defer { inReadLoop = wasInReadLoop }
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

    // MARK: - Closing

    /// Starts the close handshake (`connection.close()`).
    func close(code: Int, description: String) {
        var output = Output(handler: self)
        let effects = machine.close(code: code, description: description, into: &output)
        output.finish(promise: nil)
        perform(effects)
    }

    /// Fails or abandons the connection (`connection.drop()`, protocol errors, keepalive).
    func drop(code: Int, description: String, skipCloseFrame: Bool) {
        guard context != nil else { return }
        var output = Output(handler: self)
        let effects = machine.drop(code: code, description: description, skipCloseFrame: skipCloseFrame, into: &output)
        output.finish(promise: nil)
        perform(effects)
    }

    // MARK: - Keepalive

    private func scheduleKeepalive(at deadline: NIODeadline) {
        guard let context else { return }
        // Fails only while the event loop shuts down, which closes the connection anyway.
        keepaliveTimer = try? context.eventLoop.assumeIsolated().scheduleCallback(at: deadline, handler: KeepaliveCallback(handler: self))
    }

    /// Calls the handler's `keepaliveFired` when the keepalive timer expires.
    private struct KeepaliveCallback: NIOScheduledCallbackHandler {
        let handler: WebSocketConnectionHandler
        func handleScheduledCallback(eventLoop: some EventLoop) { handler.keepaliveFired() }
    }

    private func keepaliveFired() {
        guard let context else { return }
        switch machine.keepaliveFired(at: .now()) {
        case .stop:
            return
        case .reschedule(let deadline):
            scheduleKeepalive(at: deadline)
        case .ping(let deadline):
            var output = Output(handler: self)
            machine.writeKeepalivePing(into: &output)
            let written = context.eventLoop.makePromise(of: Void.self)
            output.finish(promise: written)
            written.futureResult.assumeIsolated().whenSuccess { self.keepalivePingWritten() }
            scheduleKeepalive(at: deadline)
        }
    }

    /// The keepalive ping reached the socket: the grace period starts now.
    private func keepalivePingWritten() {
        let writtenAt = NIODeadline.now()
        guard let context, let end = machine.keepalivePingWritten(at: writtenAt) else { return }
        graceTimer?.cancel()
        graceTimer = context.eventLoop.assumeIsolated().scheduleTask(deadline: end) {
            var output = Output(handler: self)
            let effects = self.machine.keepaliveGraceEnded(pingWrittenAt: writtenAt, into: &output)
            if !effects.isEmpty {
                self.connection?.logger.debug("WebSocket keepalive timeout: dropping the connection")
            }
            output.finish(promise: nil)
            self.perform(effects)
        }
    }
}
