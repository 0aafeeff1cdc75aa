import NIOCore

/// Where outgoing frames go: the I/O layer's write path, or an array in a test.
///
/// The state machine decides every frame (opcode, fragmentation, RSV bits, masking key) and
/// hands it over as a header plus the payload to follow it (unmasked: the sink masks it with the
/// header's key while copying, so no frame is copied twice).
protocol WebSocketFrameSink {
    /// One frame: `header`, then `payload` masked with `header.maskingKey` when it has one.
    mutating func write(_ header: WebSocketFrameHeader, payload: ByteBuffer)
    /// A frame serialized already (``WebSocketConnection/sendFrame(_:completion:)``).
    mutating func write(serialized frame: ByteBuffer)
}

/// One connection's protocol as a value (sans I/O): receiving (wrapping ``WebSocketReceiver``),
/// sending (extension encoding, fragmentation, masking), the close handshake in both directions
/// with its timeout, and keepalive. Calls take bytes, user requests and the time; they return
/// what the I/O layer must do (``Effect``s, and frames written into a ``WebSocketFrameSink``).
///
/// The channel handler (``WebSocketConnectionHandler``) owns the timers and the socket and
/// carries the effects out, in order, after writing the frames the same call produced.
struct WebSocketConnectionStateMachine {
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

    /// Something the I/O layer must do beside writing frames.
    enum Effect: Equatable {
        /// Tell the connection object that it is closing with this code and description (the
        /// first one told wins).
        case recordClose(code: Int, description: String)
        /// Close the socket after `closeTimeout` unless it closed by then.
        case startCloseTimer(TimeAmount)
        case cancelCloseTimer
        /// Shut the output side (TCP FIN / END_STREAM); if that fails, close the socket.
        case closeOutput
        case closeSocket
        /// Stop holding input for a listener or a paused reader: the peer must be read until it
        /// goes (its close frame, or its EOF).
        case releaseReadHolds
    }

    /// What an inbound event asks of the I/O layer.
    enum Inbound: Equatable {
        /// A message or frame for the listeners.
        case deliver(WebSocketReceiver.Event)
        /// Data after our side stopped receiving: dropped.
        case ignore
        /// A ping: emit it, then call ``answerPing(_:cancelled:into:)``.
        case ping(ByteBuffer)
        case pong(ByteBuffer)
        /// The peer's close frame; the effects (and the reply, in the sink) follow from it.
        case peerClosed(code: Int, reason: String, effects: [Effect])
        /// The peer broke the protocol; the connection is failed with the error's code.
        case failed(WebSocketProtocolError, effects: [Effect])
    }

    /// What the keepalive timer asks for when it fires.
    enum KeepaliveAction: Equatable {
        /// Fire again at this time (there was traffic, or a ping is still unanswered).
        case reschedule(NIODeadline)
        /// Send a ping now (``writeKeepalivePing(into:)``) and fire again at this time.
        case ping(rescheduleAt: NIODeadline)
        /// The connection is closing: no more keepalive.
        case stop
        /// The last ping was never written and nothing arrived since: drop the connection
        /// (``dropUnresponsive(into:)``).
        case drop
    }

    let role: WebSocketRole
    let options: WebSocketConnectionOptions
    private var receiver: WebSocketReceiver
    /// The negotiated extensions, in the order they apply to outgoing messages.
    private let codecs: [any WebSocketExtensionCodec]
    private let makeMaskingKey: () -> WebSocketMaskingKey
    private(set) var closeState = CloseState.open
    /// Both close frames were exchanged (what the async `close` reports as a clean close).
    private(set) var handshakeCompleted = false
    /// When bytes last arrived: keepalive pings only after `keepaliveInterval` of silence.
    private(set) var lastActivity: NIODeadline
    private var pingOutstanding = false
    /// When the outstanding keepalive ping was queued and how many bytes waited in the write
    /// buffer then, until it was written (nil then).
    private var pingQueued: (at: NIODeadline, outboundBytes: Int?)?

    init(
        role: WebSocketRole, options: WebSocketConnectionOptions, codecs: [any WebSocketExtensionCodec],
        now: NIODeadline, makeMaskingKey: @escaping () -> WebSocketMaskingKey = { .random() }
    ) {
        self.role = role
        self.options = options
        self.codecs = codecs
        self.makeMaskingKey = makeMaskingKey
        self.lastActivity = now
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

    // MARK: - Receiving

    /// Bytes arrived at `now` (any bytes count as a sign of life for keepalive).
    mutating func bytesReceived(at now: NIODeadline) {
        lastActivity = now
    }

    /// The next inbound event in `buffer` (which it consumes), or nil when more bytes are needed.
    mutating func nextInbound<Sink: WebSocketFrameSink>(from buffer: inout ByteBuffer, into sink: inout Sink) -> Inbound? {
        guard let event = receiver.next(from: &buffer) else { return nil }
        switch event {
        case .message, .frame:
            return closeState == .open || closeState == .closeSent ? .deliver(event) : .ignore
        case .ping(let data):
            return .ping(data)
        case .pong(let data):
            return .pong(data)
        case .close(let code, let reason):
            return .peerClosed(code: code, reason: reason, effects: peerClosed(code: code, reason: reason, into: &sink))
        case .failure(let error):
            return .failed(error, effects: drop(code: error.closeCode, description: error.reason, skipCloseFrame: false, into: &sink))
        }
    }

    /// The automatic pong for a ping, unless a `ping` handler cancelled it or we are closing.
    /// (While the write buffer is full, ``WebSocketFlowControl/pong(for:)`` keeps only the latest
    /// ping's, for when it drains.)
    mutating func answerPing<Sink: WebSocketFrameSink>(_ data: ByteBuffer, cancelled: Bool, into sink: inout Sink) {
        guard !cancelled, closeState == .open else { return }
        writeFrame(opcode: .pong, fin: true, payload: data, into: &sink)
    }

    // MARK: - Sending

    /// Frames a message: extension encoding (unless `compress` is false), then fragments of at
    /// most `fragmentationThreshold` bytes when `fragmentOutgoingMessages` is on. Returns the
    /// error instead when the connection is closing or an extension fails.
    mutating func sendMessage<Sink: WebSocketFrameSink>(
        opcode: WebSocketOpcode, payload: ByteBuffer, compress: Bool, allocator: ByteBufferAllocator, into sink: inout Sink
    ) -> WebSocketError? {
        guard closeState == .open else {
            return WebSocketError(.notConnected, "Cannot send: the connection is closing or closed")
        }
        var payload = payload
        var rsv: UInt8 = 0
        for codec in codecs {
            do {
                if let (encoded, bits) = try codec.encode(message: payload, opcode: opcode, allowed: compress, allocator: allocator) {
                    payload = encoded
                    rsv |= bits
                }
            } catch {
                return WebSocketError(.invalidArgument, "Extension \(codec.negotiated.name) could not encode the message: \(error)")
            }
        }
        let threshold = max(1, options.fragmentationThreshold)
        if !options.fragmentOutgoingMessages || payload.readableBytes <= threshold {
            writeFrame(opcode: opcode, fin: true, rsv: rsv, payload: payload, into: &sink)
            return nil
        }
        var frameOpcode = opcode
        while payload.readableBytes > threshold, let piece = payload.readSlice(length: threshold) {
            writeFrame(opcode: frameOpcode, fin: false, rsv: rsv, payload: piece, into: &sink)
            frameOpcode = .continuation
            rsv = 0
        }
        writeFrame(opcode: frameOpcode, fin: true, rsv: rsv, payload: payload, into: &sink)
        return nil
    }

    /// A frame as the user built it, but masked as the role requires: a client masks with a
    /// fresh key, a server never masks (RFC 6455 §5.3).
    mutating func sendFrame<Sink: WebSocketFrameSink>(_ frame: WebSocketFrame, allocator: ByteBufferAllocator, into sink: inout Sink) -> WebSocketError? {
        guard closeState != .closed, closeState != .dropping else {
            return WebSocketError(.notConnected, "Cannot send: the connection is closed")
        }
        var frame = frame
        frame.mask = role == .client
        frame.maskingKey = role == .client ? makeMaskingKey() : nil
        sink.write(serialized: frame.serialized(allocator: allocator))
        return nil
    }

    private func writeFrame<Sink: WebSocketFrameSink>(opcode: WebSocketOpcode, fin: Bool, rsv: UInt8 = 0, payload: ByteBuffer, into sink: inout Sink) {
        let header = WebSocketFrameHeader(
            fin: fin, rsv1: rsv & 0x40 != 0, rsv2: rsv & 0x20 != 0, rsv3: rsv & 0x10 != 0,
            opcode: opcode, maskingKey: role == .client ? makeMaskingKey() : nil, payloadLength: UInt64(payload.readableBytes))
        sink.write(header, payload: payload)
    }

    private func writeClose<Sink: WebSocketFrameSink>(code: Int, description: String, into sink: inout Sink) {
        var payload = ByteBuffer()
        payload.writeInteger(UInt16(truncatingIfNeeded: code))
        payload.writeString(WebSocketCloseReason.truncatedDescription(description))
        writeFrame(opcode: .connectionClose, fin: true, payload: payload, into: &sink)
    }

    // MARK: - Closing

    /// Starts the close handshake (`connection.close()`): our close frame, then up to
    /// `closeTimeout` for the peer's.
    mutating func close<Sink: WebSocketFrameSink>(code: Int, description: String, into sink: inout Sink) -> [Effect] {
        guard closeState == .open else { return [] }
        closeState = .closeSent
        writeClose(code: code, description: description, into: &sink)
        return [.recordClose(code: code, description: description), .startCloseTimer(options.closeTimeout)]
    }

    /// Fails or abandons the connection (`connection.drop()`, protocol errors, keepalive).
    ///
    /// The close frame is written, then the output side is shut and input is read and discarded
    /// until the peer closes (at most `closeTimeout`): closing at once with unread input would
    /// make the kernel send a reset that can destroy the close frame before the peer reads it.
    mutating func drop<Sink: WebSocketFrameSink>(code: Int, description: String, skipCloseFrame: Bool, into sink: inout Sink) -> [Effect] {
        guard closeState != .closed, closeState != .dropping else { return [] }
        // After our close frame (closeSent) no second one goes out: the socket just closes.
        let wasOpen = closeState == .open
        closeState = .dropping
        if skipCloseFrame || !wasOpen {
            return [.recordClose(code: code, description: description), .releaseReadHolds, .closeSocket]
        }
        let wireCode = WebSocketCloseReason.isValidOnWire(code) ? code : WebSocketCloseReason.protocolError
        writeClose(code: wireCode, description: description, into: &sink)
        return [
            .recordClose(code: code, description: description), .releaseReadHolds, .closeOutput,
            .startCloseTimer(options.closeTimeout),
        ]
    }

    /// The peer's close frame arrived.
    private mutating func peerClosed<Sink: WebSocketFrameSink>(code: Int, reason: String, into sink: inout Sink) -> [Effect] {
        switch closeState {
        case .open:
            closeState = .closeReceived
            handshakeCompleted = true
            let replyCode = code == WebSocketCloseReason.notProvided ? WebSocketCloseReason.normal : code
            writeClose(code: replyCode, description: "", into: &sink)
            let description = reason.isEmpty ? WebSocketCloseReason.description(for: code) : reason
            return [.recordClose(code: code, description: description)] + finishHandshake()
        case .closeSent:
            closeState = .closeReceived
            handshakeCompleted = true
            return [.cancelCloseTimer] + finishHandshake()
        case .closeReceived, .dropping, .closed:
            return []
        }
    }

    /// Both close frames are out: the server closes the TCP connection; the client waits for
    /// the server to do so (RFC 6455 §7.1.1), at most `closeTimeout`.
    private func finishHandshake() -> [Effect] {
        role == .server ? [.closeSocket] : [.startCloseTimer(options.closeTimeout), .releaseReadHolds]
    }

    /// `closeTimeout` passed without the peer closing: close the socket.
    func closeTimerFired() -> [Effect] {
        closeState == .closed ? [] : [.closeSocket]
    }

    /// The socket closed; returns false if it had already.
    mutating func socketClosed() -> Bool {
        guard closeState != .closed else { return false }
        closeState = .closed
        return true
    }

    // MARK: - Keepalive

    /// When the first keepalive check is due.
    var firstKeepaliveDeadline: NIODeadline { lastActivity + options.keepaliveInterval }

    /// The keepalive timer fired at `now`: a ping after `keepaliveInterval` of silence, unless
    /// one is still unanswered. `outboundBytes` is what waits in the write buffer now (nil when
    /// the I/O layer cannot tell).
    ///
    /// A ping still unwritten `keepaliveInterval` after it was queued counts as unanswered when
    /// nothing arrived since and the write buffer did not shrink meanwhile: the peer neither
    /// reads nor sends, and is dropped when `dropConnectionOnKeepaliveTimeout` is on. A peer that
    /// reads a large send slowly shrinks the buffer, and its grace period starts only when the
    /// ping is written.
    mutating func keepaliveFired(at now: NIODeadline, outboundBytes: Int? = nil) -> KeepaliveAction {
        guard closeState == .open else { return .stop }
        if pingOutstanding, options.dropConnectionOnKeepaliveTimeout, let queued = pingQueued,
            now - queued.at >= options.keepaliveInterval, lastActivity < queued.at,
            let before = queued.outboundBytes, let outboundBytes, outboundBytes >= before {
            return .drop
        }
        if now - lastActivity < options.keepaliveInterval || pingOutstanding {
            return .reschedule(max(lastActivity + options.keepaliveInterval, now + .milliseconds(1)))
        }
        pingOutstanding = true
        pingQueued = (now, outboundBytes)
        return .ping(rescheduleAt: now + options.keepaliveInterval)
    }

    /// The keepalive ping itself (empty payload); the I/O layer reports when it was written.
    func writeKeepalivePing<Sink: WebSocketFrameSink>(into sink: inout Sink) {
        writeFrame(opcode: .ping, fin: true, payload: ByteBuffer(), into: &sink)
    }

    /// The keepalive ping reached the socket at `now`: the grace period starts then (not when it
    /// was queued behind a large send). Returns when it ends, or nil when nothing is dropped.
    mutating func keepalivePingWritten(at now: NIODeadline) -> NIODeadline? {
        pingQueued = nil
        guard closeState == .open else { return nil }
        guard options.dropConnectionOnKeepaliveTimeout else {
            pingOutstanding = false
            return nil
        }
        return now + options.keepaliveGracePeriod
    }

    /// The grace period of a ping written at `writtenAt` ended: drop the connection when
    /// nothing arrived since.
    mutating func keepaliveGraceEnded<Sink: WebSocketFrameSink>(pingWrittenAt writtenAt: NIODeadline, into sink: inout Sink) -> [Effect] {
        pingOutstanding = false
        guard lastActivity < writtenAt else { return [] }
        return dropUnresponsive(into: &sink)
    }

    /// Drops a peer that did not answer the keepalive (1006, no close frame).
    mutating func dropUnresponsive<Sink: WebSocketFrameSink>(into sink: inout Sink) -> [Effect] {
        pingOutstanding = false
        return drop(code: WebSocketCloseReason.abnormal, description: "Peer not responding.", skipCloseFrame: true, into: &sink)
    }
}
