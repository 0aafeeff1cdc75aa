import Logging
import NIOCore

/// The I/O layer of a connection: it feeds the channel's bytes to the connection's
/// ``WebSocketConnectionStateMachine`` and carries out what that returns (writes, closing the
/// output or the socket), owns the timers (closeTimeout, keepalive and its grace period), and
/// holds reading while nobody listens or the consumer is slow.
///
/// Lives on the channel's event loop only; ``WebSocketConnection`` is the thread-safe face.
///
/// Here: the state, the channel's events, reading and its holds, the state machine's effects and
/// closing. The writes: +Sending; published messages (topics): +Published; the keepalive timers:
/// +Keepalive.
final class WebSocketConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = Never
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Set by the connection's initializer; cleared when the socket closes.
    var connection: WebSocketConnection?
    /// Counts for swift-metrics (Metrics/); nil without a metrics backend. Given at creation,
    /// then read on the event loop only, twice per message.
    let metrics: WebSocketConnectionMetrics?
    var machine: WebSocketConnectionStateMachine
    var context: ChannelHandlerContext?

    /// Why reading is held, the Node-style sends' budget, the pong that waits.
    var flow: WebSocketFlowControl
    /// Messages of this read wait for ``publishMessages()`` (at the end of `process`).
    private var stagedMessages = false
    /// A message over ``largeMessage`` went to the `messages` iterator in this read: the jobs
    /// queued on the loop's executor so far (its scoped handler's among them) run at the read's
    /// end, not at the end of the loop's turn, and so do the flushes of what they write.
    private var runJobsAtReadEnd = false
    /// Past this size, a message's handler is better run while its bytes are still in the CPU's
    /// cache than batched with the turn's other handlers: its write goes out on its own anyway
    /// (it is not copied into a batch). Measured on W3 (64 KiB echoes, medians of 4 interleaved
    /// runs): the async echo went from 0.94 to 1.03 of the callback echo. Running the queued
    /// handlers at every read's end instead cost W2 (32-byte echoes) a fifth of its rate
    /// (803k to 615k msgs/s): the small writes of a turn no longer went out together.
    static let largeMessage = 16 * 1024
    /// Input held while delivery pauses, in order, copied out of the channel's receive buffers
    /// (see `ownStorage`). Rarely used: an empty array allocates nothing (a `CircularBuffer`
    /// allocates its storage up front, 56 bytes per idle connection).
    private var held: [ByteBuffer] = []
    /// Writes are batched and flushed later (at the read's end, the turn's end or the topic
    /// drain's end): set while a read is processed, while an async write outside a read is
    /// framed, and while a published message is written. (It was `inReadLoop`, which it no longer
    /// only means.)
    var deferringFlush = false
    /// Something was written and not yet flushed.
    var needsFlush = false
    /// A flush is queued on the event loop for the async writes of this turn.
    var flushScheduled = false
    /// The executor of the scoped handler (set on accept): its writes flush at its turn's end.
    var turnEnd: (any WebSocketTurnEnd)?
    /// Small promise-less frames written during the read loop (echoes, pongs), gathered into one
    /// buffer that goes down the pipeline once, before the flush or any other write.
    var batch: ByteBuffer?

    // Timers. Times are the event loop's `now` (real time on NIO's loops; the test's virtual
    // time on an `EmbeddedEventLoop`, which the timers then follow).
    private var closeTimer: Scheduled<Void>?
    /// A scheduled callback rather than a `Scheduled` task: `scheduleTask` allocates a promise
    /// and three closures that live as long as the timer, about 0.18 KiB per idle connection.
    var keepaliveTimer: NIOScheduledCallback?
    var graceTimer: Scheduled<Void>?

    // Published messages (topics).
    /// Set while the connection is in a topic drain's list of connections to flush.
    var publishFlushPending = false
    /// Bytes of published messages handed to the channel and not yet written to the socket:
    /// what ``WebSocketServer/Configuration/maxBackpressure`` limits.
    var publishedBytesInFlight = 0

    /// Bytes of published messages written since the last flush.
    var publishedBytesUnflushed = 0

    init(
        role: WebSocketRole, options: WebSocketConnectionOptions, codecs: [any WebSocketExtensionCodec],
        metrics: WebSocketConnectionMetrics? = nil
    ) {
        self.metrics = metrics
        self.flow = WebSocketFlowControl(
            maxSendBackpressure: options.maxSendBackpressure, sendPolicy: options.sendBackpressurePolicy,
            highWaterMark: options.writeBufferWaterMark.high)
        self.machine = WebSocketConnectionStateMachine(role: role, options: options, codecs: codecs, now: .now())
    }

    /// Delivery pauses (input is held unparsed) while nobody listens or the user paused.
    private var isHolding: Bool { flow.holdsDelivery }
    var options: WebSocketConnectionOptions { machine.options }

    // MARK: - Lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        machine.bytesReceived(at: context.eventLoop.now)
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
        machine.bytesReceived(at: context.eventLoop.now)
        let buffer = unwrapInboundIn(data)
        if isHolding || !held.isEmpty {
            held.append(buffer.ownStorage())
            return
        }
        process(buffer, fromChannel: true)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flow.readsEnded()
        if runJobsAtReadEnd {
            runJobsAtReadEnd = false
            turnEnd?.runQueuedJobs()
        }
        flushIfNeeded()
        context.fireChannelReadComplete()
    }

    func read(context: ChannelHandlerContext) {
        // Held while nobody listens, the user paused, the `messages` consumer lags or the peer
        // does not read what we write: what was read already is still parsed and queued (at
        // most one read's worth), only the next read waits.
        if flow.readRequested() == .read { context.read() }
    }

    /// The write buffer passed its high watermark (the peer reads slower than we write):
    /// reading pauses, so that what the peer sends (echoes, pings) cannot queue more. Below the
    /// low watermark again: the pong that waited goes out, reading goes on, `drain` fires.
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        // Either may be reported inside a write, so inside a state machine call: what needs the
        // machine (the pong) runs after it, on the loop.
        if context.channel.isWritable {
            let (action, pong) = flow.outboundDrained()
            if let pong {
                context.eventLoop.assumeIsolated().execute { self.writePong(pong) }
            }
            if action == .read { context.read() }
            connection?.writabilityRestored()
        } else {
            flow.outboundFilled()
            metrics?.server.pausesOut.increment()
        }
        context.fireChannelWritabilityChanged()
    }

    /// Bytes waiting in the channel's write buffer and this handler's batch (nil when the
    /// channel cannot tell, as an HTTP/2 stream cannot).
    var outboundBytes: Int? {
        guard let context, let buffered = try? context.channel.syncOptions?.getOption(ChannelOptions.bufferedWritableBytes) else {
            return nil
        }
        return buffered + (batch?.readableBytes ?? 0)
    }

    /// Runs the state machine over `buffer`, acting on each event. Stops early (stashing the rest)
    /// when delivery must pause. The rest of a channel's buffer is stashed as a copy; the rest of
    /// one that was held already is ours and is stashed as it is (copying it on every pause would
    /// copy a large held buffer once per message under backpressure).
    private func process(_ input: ByteBuffer, fromChannel: Bool) {
        var buffer = input
        deferringFlush = true
        defer {
            deferringFlush = false
            if stagedMessages { publishMessages() }
        }
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
            if flow.decoded(event.payloadSize) { decodeBudgetSpent() }
            switch connection.deliver(event) {
            case .delivered: break
            case .backpressure:
                flow.hold(.consumerLagging)
                metrics?.server.pausesIn.increment()
            case .awaitingConsumer: flow.hold(.awaitingListener)
            case .staged:
                stagedMessages = true
                if event.payloadSize > Self.largeMessage { runJobsAtReadEnd = true }
            }
        case .ignore:
            break
        case .ping(let data):
            let cancel = WebSocketPingCancel()
            connection.emit(\.ping, (cancel, data))
            // While the write buffer is full only the latest ping's pong waits, for the drain.
            if !cancel.cancelled, let pong = flow.pong(for: data) {
                machine.answerPing(pong, cancelled: false, into: &output)
            }
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
    func perform(_ effects: [WebSocketConnectionStateMachine.Effect]) {
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
                if flow.releaseAll() == .read { context?.read() }
            }
        }
    }

    // MARK: - Flow control

    /// A listener arrived: hand it what waited and read on.
    func consumerAttached() {
        connection?.flushPending()
        // What waited went to the `messages` iterator staged, as a read's messages do.
        publishMessages()
        resumeIfPossible(releasing: .awaitingListener)
    }

    func setUserPaused(_ paused: Bool) {
        if paused {
            flow.hold(.pausedByUser)
        } else {
            resumeIfPossible(releasing: .pausedByUser)
        }
    }

    /// Hands the messages of this read to the `messages` iterator together; pauses reading
    /// when it lags.
    private func publishMessages() {
        stagedMessages = false
        if connection?.publishMessages() == true {
            flow.hold(.consumerLagging)
            metrics?.server.pausesIn.increment()
        }
    }

    func setStreamBackpressure(_ on: Bool) {
        if on {
            flow.hold(.consumerLagging)
        } else {
            resumeIfPossible(releasing: .consumerLagging)
        }
    }

    /// Releases `reason`, delivers what was held unparsed, and reads if a read waits.
    private func resumeIfPossible(releasing reason: WebSocketFlowControl.Holds) {
        // The read is asked for below, once the held input is delivered.
        flow.unhold(reason)
        guard let context, !isHolding, !machine.isClosed else { return }
        while !isHolding, !held.isEmpty {
            process(held.removeFirst(), fromChannel: false)
        }
        // Not a read: its messages' handlers run at the turn's end.
        runJobsAtReadEnd = false
        flushIfNeeded()
        if flow.readIfWanted() == .read { context.read() }
    }

    /// This turn decoded ``WebSocketFlowControl/decodeBudget`` bytes (`process` keeps the rest
    /// of its input): the loop's next turn starts a new budget and delivers what waits, unless
    /// the `messages` consumer lags (its catching up does then).
    private func decodeBudgetSpent() {
        guard let context else { return }
        metrics?.server.pausesIn.increment()
        context.eventLoop.assumeIsolated().execute {
            if self.flow.turnEnded() { self.resumeIfPossible(releasing: []) }
        }
    }

    /// The pong that waited for the write buffer to drain.
    private func writePong(_ data: ByteBuffer) {
        guard context != nil else { return }
        var output = Output(handler: self)
        machine.answerPing(data, cancelled: false, into: &output)
        output.finish(promise: nil)
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
}
