import Logging
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The thin I/O layer of a connection: it moves bytes between the channel and the sans-I/O
/// ``WebSocketReceiver``, writes frames, runs the close handshake and the timers
/// (closeTimeout, keepalive), and holds reading while nobody listens or the consumer is slow.
///
/// Lives on the channel's event loop only; ``WebSocketConnection`` is the thread-safe face.
final class WebSocketConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = Never
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Where the close handshake stands.
    enum CloseState: Equatable {
        /// Open for both directions.
        case open
        /// We sent a close frame and wait for the peer's.
        case closeSent
        /// The peer sent a close frame and we answered (or both sent theirs).
        case closeReceived
        /// We failed the connection (close frame sent, output shut) and wait for the peer to go.
        case dropping
        /// The socket is closed.
        case closed
    }

    /// Set by the connection right after creation; cleared when the socket closes.
    var connection: WebSocketConnection?
    private let role: WebSocketRole
    private let options: WebSocketConnectionOptions
    private var receiver: WebSocketReceiver
    private var context: ChannelHandlerContext?
    private(set) var closeState = CloseState.open

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
    private var lastActivity = NIODeadline.now()
    private var pingOutstanding = false

    /// The negotiated extensions, in the order they apply to outgoing messages.
    private let codecs: [any WebSocketExtensionCodec]

    init(role: WebSocketRole, options: WebSocketConnectionOptions, codecs: [any WebSocketExtensionCodec]) {
        self.role = role
        self.options = options
        self.codecs = codecs
        self.receiver = WebSocketReceiver(
            options: .init(
                expectMaskedFrames: role == .server,
                maxFrameSize: options.maxReceivedFrameSize,
                maxMessageSize: options.maxReceivedMessageSize,
                maxFragments: options.maxFragmentsPerMessage,
                assembleFragments: options.assembleFragments,
                codecs: codecs))
    }

    var isClosed: Bool { closeState == .closed }

    private var isHolding: Bool { awaitingConsumer || userPaused || streamBackpressure }

    // MARK: - Lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        lastActivity = .now()
        if !options.isHTTP2Stream {
            // (An HTTP/2 stream channel traps on options it does not know.)
            let marks = options.writeBufferWaterMark
            try? context.channel.syncOptions?.setOption(
                ChannelOptions.writeBufferWaterMark, value: .init(low: marks.low, high: marks.high))
        }
        if options.useNativeKeepalive && !options.isHTTP2Stream {
            enableNativeKeepalive(context.channel)
        } else if options.keepalive {
            scheduleKeepalive(at: lastActivity + options.keepaliveInterval)
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
        if closeState == .closeReceived {
            connection?.logger.debug("WebSocket socket error after the close handshake", metadata: ["error": "\(error)"])
        } else if closeState != .closed && closeState != .dropping {
            connection?.logger.debug("WebSocket socket error", metadata: ["error": "\(error)"])
            connection?.emitError(error)
        }
        context.close(promise: nil)
    }

    /// The connection never got its socket (the client left before `accept` took effect).
    func abandon() {
        socketClosed()
    }

    private func socketClosed() {
        guard closeState != .closed else { return }
        closeState = .closed
        closeTimer?.cancel()
        keepaliveTimer?.cancel()
        graceTimer?.cancel()
        held.removeAll()
        batch = nil
        let connection = self.connection
        self.connection = nil
        connection?.didClose()
    }

    // MARK: - Reading

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        lastActivity = .now()
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
            connection?.emit(\.drain, ())
        }
        context.fireChannelWritabilityChanged()
    }

    /// Runs the receiver over `buffer`, acting on each event. Stops early (stashing the rest)
    /// when delivery must pause. The rest of a channel's buffer is stashed as a copy; the rest of
    /// one that was held already is ours and is stashed as it is (copying it on every pause would
    /// copy a large held buffer once per message under backpressure).
    private func process(_ input: ByteBuffer, fromChannel: Bool) {
        var buffer = input
        inReadLoop = true
        defer { inReadLoop = false }
        while let event = receiver.next(from: &buffer) {
            handle(event)
            if isHolding && buffer.readableBytes > 0 {
                held.insert(fromChannel ? buffer.ownStorage() : buffer, at: 0)
                return
            }
        }
    }

    private func handle(_ event: WebSocketReceiver.Event) {
        guard let connection else { return }
        switch event {
        case .message, .frame:
            if closeState == .open || closeState == .closeSent {
                switch connection.deliver(event) {
                case .delivered: break
                case .backpressure: streamBackpressure = true
                case .awaitingConsumer: awaitingConsumer = true
                }
            }
        case .ping(let data):
            let cancel = WebSocketPingCancel()
            connection.emit(\.ping, (cancel, data))
            if !cancel.cancelled && closeState == .open {
                writeFrame(opcode: .pong, fin: true, payload: data, promise: nil)
            }
        case .pong(let data):
            connection.emit(\.pong, data)
        case .close(let code, let reason):
            peerClosed(code: code, reason: reason)
        case .failure(let error):
            connection.logger.debug("WebSocket protocol error", metadata: ["code": "\(error.closeCode)", "reason": "\(error.reason)"])
            drop(code: error.closeCode, description: error.reason, skipCloseFrame: false)
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
        guard let context, !isHolding, closeState != .closed else { return }
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

    func sendMessage(opcode: WebSocketOpcode, payload: ByteBuffer, compress: Bool = true, completion: (@Sendable ((any Error)?) -> Void)?) {
        guard closeState == .open, let context else {
            completion?(WebSocketError(.notConnected, "Cannot send: the connection is closing or closed"))
            return
        }
        var payload = payload
        var rsv: UInt8 = 0
        for codec in codecs {
            do {
                if let (encoded, bits) = try codec.encode(message: payload, opcode: opcode, allowed: compress, allocator: context.channel.allocator) {
                    payload = encoded
                    rsv |= bits
                }
            } catch {
                completion?(WebSocketError(.invalidArgument, "Extension \(codec.negotiated.name) could not encode the message: \(error)"))
                return
            }
        }
        let promise = completion.map { completion -> EventLoopPromise<Void> in
            let promise = context.eventLoop.makePromise(of: Void.self)
            promise.futureResult.whenComplete { result in
                if case .failure(let error) = result { completion(error) } else { completion(nil) }
            }
            return promise
        }
        let threshold = max(1, options.fragmentationThreshold)
        if !options.fragmentOutgoingMessages || payload.readableBytes <= threshold {
            writeFrame(opcode: opcode, fin: true, rsv: rsv, payload: payload, promise: promise)
            return
        }
        var rest = payload
        var frameOpcode = opcode
        while rest.readableBytes > threshold {
            let piece = rest.readSlice(length: threshold)!
            writeFrame(opcode: frameOpcode, fin: false, rsv: rsv, payload: piece, promise: nil)
            frameOpcode = .continuation
            rsv = 0
        }
        writeFrame(opcode: frameOpcode, fin: true, rsv: rsv, payload: rest, promise: promise)
    }

    func sendFrame(_ frame: WebSocketFrame, completion: (@Sendable ((any Error)?) -> Void)?) {
        guard closeState != .closed, closeState != .dropping, let context else {
            completion?(WebSocketError(.notConnected, "Cannot send: the connection is closed"))
            return
        }
        // A client masks every frame with a fresh key (RFC 6455 §5.3); a server never masks.
        var frame = frame
        frame.mask = role == .client
        frame.maskingKey = nil
        let buffer = frame.serialized(allocator: context.channel.allocator)
        let promise = completion.map { completion -> EventLoopPromise<Void> in
            let promise = context.eventLoop.makePromise(of: Void.self)
            promise.futureResult.whenComplete { result in
                if case .failure(let error) = result { completion(error) } else { completion(nil) }
            }
            return promise
        }
        write(buffer, promise: promise)
    }

    /// Payloads up to this size are copied behind their header into one buffer; larger ones
    /// (server side) go out as a separate buffer, without a copy.
    private static let copyThreshold = 1024

    private func writeFrame(opcode: WebSocketOpcode, fin: Bool, rsv: UInt8 = 0, payload: ByteBuffer, promise: EventLoopPromise<Void>?) {
        guard let context else {
            promise?.fail(WebSocketError(.notConnected, "Cannot send: the connection is closed"))
            return
        }
        let length = payload.readableBytes
        let key: WebSocketMaskingKey? = role == .client ? .random() : nil
        let header = WebSocketFrameHeader(
            fin: fin, rsv1: rsv & 0x40 != 0, rsv2: rsv & 0x20 != 0, rsv3: rsv & 0x10 != 0,
            opcode: opcode, maskingKey: key, payloadLength: UInt64(length))
        let headerLength = header.encodedLength
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
        guard let context else { return }
        writeBatch()
        context.write(wrapOutboundOut(buffer), promise: promise)
        if inReadLoop {
            needsFlush = true
        } else {
            context.flush()
        }
    }

    private func flushIfNeeded() {
        if needsFlush, let context {
            needsFlush = false
            writeBatch()
            context.flush()
        }
    }

    private func closePayload(code: Int, description: String) -> ByteBuffer {
        var payload = ByteBuffer()
        payload.writeInteger(UInt16(code))
        payload.writeString(String(description.utf8.prefix(123)) ?? "")
        return payload
    }

    // MARK: - Closing

    /// Starts the close handshake (`connection.close()`).
    func close(code: Int, description: String) {
        guard closeState == .open else { return }
        connection?.markClosing(code: code, description: description)
        closeState = .closeSent
        writeFrame(opcode: .connectionClose, fin: true, payload: closePayload(code: code, description: description), promise: nil)
        flushIfNeeded()
        scheduleCloseTimer()
    }

    /// Fails or abandons the connection (`connection.drop()`, protocol errors, keepalive).
    ///
    /// The close frame is written, then the output side is shut and input is discarded until
    /// the peer closes (at most `closeTimeout`): closing at once with unread input would make
    /// the kernel send a reset that can destroy the close frame before the peer reads it.
    func drop(code: Int, description: String, skipCloseFrame: Bool) {
        guard let context, closeState != .closed, closeState != .dropping else { return }
        connection?.markClosing(code: code, description: description)
        // After our close frame (closeSent) no second one goes out: the socket just closes.
        let wasOpen = closeState == .open
        closeState = .dropping
        awaitingConsumer = false
        userPaused = false
        streamBackpressure = false
        if skipCloseFrame || !wasOpen {
            flushIfNeeded()
            context.close(promise: nil)
            return
        }
        let wireCode = WebSocketCloseReason.isValidOnWire(code) ? code : WebSocketCloseReason.protocolError
        writeFrame(opcode: .connectionClose, fin: true, payload: closePayload(code: wireCode, description: description), promise: nil)
        flushIfNeeded()
        context.close(mode: .output).assumeIsolated().whenFailure { _ in
            self.context?.close(promise: nil)
        }
        scheduleCloseTimer()
        if pendingRead {
            pendingRead = false
            context.read()
        }
    }

    /// The peer's close frame arrived.
    private func peerClosed(code: Int, reason: String) {
        guard let context else { return }
        switch closeState {
        case .open:
            connection?.markClosing(code: code, description: reason.isEmpty ? WebSocketCloseReason.description(for: code) : reason)
            closeState = .closeReceived
            let replyCode = code == WebSocketCloseReason.notProvided ? WebSocketCloseReason.normal : code
            writeFrame(opcode: .connectionClose, fin: true, payload: closePayload(code: replyCode, description: ""), promise: nil)
            flushIfNeeded()
            finishHandshake(context)
        case .closeSent:
            closeState = .closeReceived
            closeTimer?.cancel()
            finishHandshake(context)
        case .closeReceived, .dropping, .closed:
            break
        }
    }

    /// Both close frames are out: the server closes the TCP connection; the client waits for
    /// the server to do so (RFC 6455 §7.1.1), at most `closeTimeout`.
    private func finishHandshake(_ context: ChannelHandlerContext) {
        if role == .server {
            context.close(promise: nil)
        } else {
            scheduleCloseTimer()
            if pendingRead {
                pendingRead = false
                context.read()
            }
            awaitingConsumer = false
            userPaused = false
            streamBackpressure = false
        }
    }

    private func scheduleCloseTimer() {
        guard let context else { return }
        closeTimer?.cancel()
        closeTimer = context.eventLoop.assumeIsolated().scheduleTask(in: options.closeTimeout) {
            self.context?.close(promise: nil)
        }
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
        guard closeState == .open, let context else { return }
        let now = NIODeadline.now()
        let idleSince = lastActivity
        if now - idleSince < options.keepaliveInterval || pingOutstanding {
            scheduleKeepalive(at: max(idleSince + options.keepaliveInterval, now + .milliseconds(1)))
            return
        }
        pingOutstanding = true
        let written = context.eventLoop.makePromise(of: Void.self)
        writeFrame(opcode: .ping, fin: true, payload: ByteBuffer(), promise: written)
        written.futureResult.assumeIsolated().whenSuccess { self.pingWritten() }
        scheduleKeepalive(at: now + options.keepaliveInterval)
    }

    /// The keepalive ping reached the socket: the grace period starts now.
    private func pingWritten() {
        guard closeState == .open, let context else { return }
        let writtenAt = NIODeadline.now()
        guard options.dropConnectionOnKeepaliveTimeout else {
            pingOutstanding = false
            return
        }
        graceTimer?.cancel()
        graceTimer = context.eventLoop.assumeIsolated().scheduleTask(in: options.keepaliveGracePeriod) {
            self.pingOutstanding = false
            if self.lastActivity < writtenAt {
                self.connection?.logger.debug("WebSocket keepalive timeout: dropping the connection")
                self.drop(code: WebSocketCloseReason.abnormal, description: "Peer not responding.", skipCloseFrame: true)
            }
        }
    }

    private func enableNativeKeepalive(_ channel: Channel) {
        guard let options = channel.syncOptions else { return }
        try? options.setOption(ChannelOptions.socketOption(.so_keepalive), value: 1)
        #if os(Linux)
        let idle = max(1, Int(self.options.keepaliveInterval.nanoseconds / 1_000_000_000))
        try? options.setOption(
            ChannelOptions.Types.SocketOption(
                level: NIOBSDSocket.OptionLevel(rawValue: CInt(IPPROTO_TCP)),
                name: NIOBSDSocket.Option(rawValue: CInt(TCP_KEEPIDLE))),
            value: idle)
        #endif
    }
}
