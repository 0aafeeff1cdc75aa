import NIOCore

/// The receiving half of the sans-I/O protocol core: bytes go in, protocol events come out.
///
/// It never touches a socket, so it is tested, fuzzed and reused (TCP, TLS, a test harness)
/// with plain values. It parses frame headers across arbitrary splits of the input, checks
/// every rule of RFC 6455 §5 that a receiver must, enforces the size limits against the header
/// *before* any payload is buffered, streams payload bytes straight from the input into the
/// message buffer while unmasking them, and validates text as it arrives so that invalid UTF-8
/// fails the connection at the first bad byte.
///
/// After it reports a failure or the peer's close frame it consumes and ignores all input.
struct WebSocketReceiver {
    /// What the receiver found in the input.
    enum Event: Equatable {
        /// A complete message (always for single-frame messages; for fragmented ones only when
        /// assembling fragments).
        case message(WebSocketMessage)
        /// A data frame, when fragments are not assembled.
        case frame(WebSocketFrame)
        /// A ping with its payload.
        case ping(ByteBuffer)
        /// A pong with its payload.
        case pong(ByteBuffer)
        /// The peer's close frame, validated: its code (1005 when it carried none) and reason.
        case close(code: Int, reason: String)
        /// The peer broke the protocol; fail the connection with the error's close code.
        case failure(WebSocketProtocolError)
    }

    /// The receiving limits and switches.
    struct Options {
        /// Server: every frame must be masked. Client: no frame may be.
        var expectMaskedFrames: Bool
        var maxFrameSize: Int
        var maxMessageSize: Int
        var maxFragments: Int
        var assembleFragments: Bool
        /// The negotiated extensions, which own RSV bits and decode the messages that carry them.
        var codecs: [any WebSocketExtensionCodec] = []
    }

    private enum State {
        case header
        case payload
        case done
    }

    var options: Options
    private var state = State.header
    /// Made where used: a stored allocator (four function pointers) would be 32 bytes of every
    /// connection.
    private var allocator: ByteBufferAllocator { ByteBufferAllocator() }

    /// Header bytes of a header split across inputs (at most 14).
    private var headerStash: [UInt8] = []

    // The frame being received.
    private var header = WebSocketFrameHeader(fin: true, opcode: .binary, payloadLength: 0)
    private var remaining = 0
    private var maskOffset = 0
    private var frameBuffer = ByteBuffer()

    // The data message being received.
    private var messageOpcode: WebSocketOpcode?
    private var messageBuffer = ByteBuffer()
    private var messageLength = 0
    private var fragmentCount = 0
    private var utf8 = UTF8Validator()
    /// Whether the message being received is text that is validated as it arrives.
    private var validatingText = false

    /// A second event produced by the same frame, returned by the next call.
    private var pending: Event?

    /// RSV bits (0x40, 0x20, 0x10 as in the first header byte) that negotiated extensions own.
    private let allowedRSVBits: UInt8
    /// The extension decoding the current message, if its first frame carried RSV bits.
    private var decodingCodec: (any WebSocketExtensionCodec)?
    /// Unmasked wire bytes on their way to `decodingCodec`.
    private var scratch = ByteBuffer()
    /// The message's decoded (application) length so far.
    private var decodedLength = 0

    /// The most a message's or frame's buffer reserves before its bytes arrive.
    static let upFront = 1 << 20

    /// `a + b` in words, for error messages (no trap when it passes Int.max).
    static func sum(_ a: Int, _ b: Int) -> String {
        let (total, overflow) = a.addingReportingOverflow(b)
        return overflow ? "\(a) + \(b)" : "\(total)"
    }

    init(options: Options) {
        self.options = options
        self.allowedRSVBits = options.codecs.reduce(0) { $0 | $1.reservedBits }
    }

    /// Whether the receiver has stopped (failure or close frame seen).
    var isDone: Bool {
        if case .done = state { return true }
        return false
    }

    /// Consumes input from `buffer` until it has an event to report, or the input is used up
    /// (then `nil`; call again with more input).
    mutating func next(from buffer: inout ByteBuffer) -> Event? {
        if let event = pending {
            pending = nil
            return event
        }
        while true {
            switch state {
            case .done:
                buffer.moveReaderIndex(to: buffer.writerIndex)
                return nil
            case .header:
                let parsed: WebSocketFrameHeader?
                do {
                    parsed = try readHeader(from: &buffer)
                } catch {
                    return fail(error)
                }
                guard let parsed else { return nil }
                if let error = startFrame(parsed) { return fail(error) }
                if remaining == 0, let event = finishFrame() { return event }
            case .payload:
                let count = min(remaining, buffer.readableBytes)
                guard count > 0 else { return nil }
                if let error = consumePayload(from: &buffer, count: count) { return fail(error) }
                if remaining == 0, let event = finishFrame() { return event }
            }
        }
    }

    // MARK: - Header

    private mutating func readHeader(from buffer: inout ByteBuffer) throws(WebSocketProtocolError) -> WebSocketFrameHeader? {
        if headerStash.isEmpty {
            if let header = try WebSocketFrameHeader.parse(from: &buffer) { return header }
            headerStash.append(contentsOf: buffer.readableBytesView)
            buffer.moveReaderIndex(to: buffer.writerIndex)
            return nil
        }
        // Complete the stashed header byte by byte count: first up to 2 bytes, then the rest.
        while true {
            let needed = headerStash.count < 2 ? 2 : WebSocketFrameHeader.requiredLength(firstTwo: headerStash[1])
            if headerStash.count >= needed {
                var stashed = allocator.buffer(bytes: headerStash)
                headerStash.removeAll(keepingCapacity: true)
                return try WebSocketFrameHeader.parse(from: &stashed)
            }
            let take = min(needed - headerStash.count, buffer.readableBytes)
            guard take > 0 else { return nil }
            headerStash.append(contentsOf: buffer.readableBytesView.prefix(take))
            buffer.moveReaderIndex(forwardBy: take)
        }
    }

    /// Checks a new frame's header against the protocol and the limits and prepares to receive
    /// its payload.
    private mutating func startFrame(_ header: WebSocketFrameHeader) -> WebSocketProtocolError? {
        let opcode = header.opcode
        guard opcode.isDefined else {
            return WebSocketProtocolError(.protocolError, "Unknown opcode \(opcode.rawValue)")
        }
        let rsv: UInt8 = (header.rsv1 ? 0x40 : 0) | (header.rsv2 ? 0x20 : 0) | (header.rsv3 ? 0x10 : 0)
        if rsv & ~allowedRSVBits != 0 {
            return WebSocketProtocolError(.protocolError, "Reserved bits set without a negotiated extension")
        }
        if rsv != 0 && (opcode.isControl || opcode == .continuation) {
            return WebSocketProtocolError(.protocolError, "Reserved bits set on a \(opcode) frame")
        }
        if options.expectMaskedFrames != (header.maskingKey != nil) {
            return WebSocketProtocolError(
                .protocolError,
                options.expectMaskedFrames ? "Received an unmasked frame from a client" : "Received a masked frame from a server")
        }
        if header.payloadLength > UInt64(options.maxFrameSize) {
            return WebSocketProtocolError(
                .messageTooBig, "Frame size of \(header.payloadLength) bytes exceeds maximum accepted frame size of \(options.maxFrameSize)")
        }
        let length = Int(header.payloadLength)
        if opcode.isControl {
            if !header.fin {
                return WebSocketProtocolError(.protocolError, "Control frames must not be fragmented")
            }
            if length > 125 {
                return WebSocketProtocolError(.protocolError, "Control frame payload of \(length) bytes exceeds 125")
            }
            frameBuffer = allocator.buffer(capacity: length)
        } else {
            if opcode == .continuation {
                guard messageOpcode != nil else {
                    return WebSocketProtocolError(.protocolError, "Continuation frame without a message to continue")
                }
            } else {
                if messageOpcode != nil {
                    return WebSocketProtocolError(.protocolError, "New data frame while a fragmented message is incomplete")
                }
                messageOpcode = opcode
                messageLength = 0
                decodedLength = 0
                fragmentCount = 0
                decodingCodec = nil
                if rsv != 0 {
                    guard let codec = options.codecs.first(where: { $0.startDecoding(reservedBits: rsv) }) else {
                        return WebSocketProtocolError(.protocolError, "No negotiated extension decodes a message with reserved bits \(rsv >> 4)")
                    }
                    decodingCodec = codec
                }
                validatingText = opcode == .text
                utf8.reset()
                if options.assembleFragments {
                    // A decoded message grows as it decodes; a plain one is exactly this long.
                    // At most 1 MiB up front: a header alone (its payload may never come) must
                    // not reserve what a large configured limit allows.
                    messageBuffer = allocator.buffer(capacity: decodingCodec == nil ? min(length, Self.upFront) : min(length, 64 * 1024))
                }
            }
            fragmentCount += 1
            if fragmentCount > options.maxFragments {
                return WebSocketProtocolError(
                    .messageTooBig, "Message has more than \(options.maxFragments) fragments")
            }
            if options.assembleFragments {
                // An extension's message is limited by its decoded size as it decodes (its wire
                // bytes are not buffered, and incompressible data grows a little in DEFLATE).
                // (Never `messageLength + length`: it overflows for a maxMessageSize near Int.max.)
                if decodingCodec == nil && length > options.maxMessageSize - messageLength {
                    return WebSocketProtocolError(
                        .messageTooBig,
                        "Message size of at least \(Self.sum(messageLength, length)) bytes exceeds maximum accepted message size of \(options.maxMessageSize)")
                }
            } else {
                frameBuffer = allocator.buffer(capacity: min(length, Self.upFront))
            }
            messageLength += length
        }
        self.header = header
        remaining = length
        maskOffset = 0
        state = .payload
        return nil
    }

    // MARK: - Payload

    /// Moves `count` payload bytes from the input to their destination, unmasking them on the
    /// way (and decoding them, for an extension's message), and validates text as it lands.
    private mutating func consumePayload(from buffer: inout ByteBuffer, count: Int) -> WebSocketProtocolError? {
        let input = buffer.readableBytesView.prefix(count)
        let isData = !header.opcode.isControl
        let toMessage = isData && options.assembleFragments
        let start = toMessage ? messageBuffer.writerIndex : frameBuffer.writerIndex
        if isData, let codec = decodingCodec {
            scratch.clear()
            scratch.writeMaskedPayload(input, key: header.maskingKey, offset: maskOffset)
            if let error = decode(codec, endOfMessage: false, toMessage: toMessage) { return error }
        } else if toMessage {
            messageBuffer.writeMaskedPayload(input, key: header.maskingKey, offset: maskOffset)
        } else {
            frameBuffer.writeMaskedPayload(input, key: header.maskingKey, offset: maskOffset)
        }
        buffer.moveReaderIndex(forwardBy: count)
        maskOffset &+= count
        remaining -= count
        return isData ? checkText(from: start, toMessage: toMessage) : nil
    }

    /// Runs `scratch` through the message's extension into the message or frame buffer.
    private mutating func decode(_ codec: any WebSocketExtensionCodec, endOfMessage: Bool, toMessage: Bool) -> WebSocketProtocolError? {
        let limit = options.maxMessageSize - decodedLength
        do {
            if toMessage {
                let before = messageBuffer.writerIndex
                try codec.decode(&scratch, endOfMessage: endOfMessage, into: &messageBuffer, limit: limit)
                decodedLength += messageBuffer.writerIndex - before
            } else {
                let before = frameBuffer.writerIndex
                try codec.decode(&scratch, endOfMessage: endOfMessage, into: &frameBuffer, limit: limit)
                decodedLength += frameBuffer.writerIndex - before
            }
        } catch let error as WebSocketProtocolError {
            return error
        } catch {
            return WebSocketProtocolError(.invalidData, "Extension \(codec.negotiated.name) could not decode a message: \(error)")
        }
        return nil
    }

    /// Validates the text bytes written since `start` (fail fast on the first bad byte).
    private mutating func checkText(from start: Int, toMessage: Bool) -> WebSocketProtocolError? {
        guard validatingText else { return nil }
        let target = toMessage ? messageBuffer : frameBuffer
        let valid = target.withUnsafeReadableBytes { raw in
            utf8.validate(UnsafeRawBufferPointer(rebasing: raw[(start - target.readerIndex)...]))
        }
        return valid ? nil : WebSocketProtocolError(.invalidData, "Invalid UTF-8 in a text message")
    }

    /// The frame's payload is complete: produce its event, if any.
    private mutating func finishFrame() -> Event? {
        state = .header
        let opcode = header.opcode
        if opcode.isControl {
            let payload = frameBuffer
            frameBuffer = ByteBuffer()
            switch opcode {
            case .ping: return .ping(payload)
            case .pong: return .pong(payload)
            default: return parseClose(payload)
            }
        }
        if header.fin, let codec = decodingCodec {
            let toMessage = options.assembleFragments
            let start = toMessage ? messageBuffer.writerIndex : frameBuffer.writerIndex
            scratch.clear()
            if let error = decode(codec, endOfMessage: true, toMessage: toMessage) ?? checkText(from: start, toMessage: toMessage) {
                return fail(error)
            }
            decodingCodec = nil
        }
        if header.fin && validatingText && !utf8.isComplete {
            return fail(WebSocketProtocolError(.invalidData, "Text message ends inside a UTF-8 sequence"))
        }
        if options.assembleFragments {
            guard header.fin, let messageOpcode else { return nil }
            let payload = messageBuffer
            messageBuffer = ByteBuffer()
            self.messageOpcode = nil
            return .message(makeMessage(messageOpcode, payload))
        }
        let frame = WebSocketFrame(
            fin: header.fin, rsv1: header.rsv1, rsv2: header.rsv2, rsv3: header.rsv3,
            mask: header.maskingKey != nil, maskingKey: header.maskingKey,
            opcode: opcode, binaryPayload: frameBuffer)
        frameBuffer = ByteBuffer()
        if header.fin {
            let singleFrame = fragmentCount == 1
            let messageOpcode = self.messageOpcode!
            self.messageOpcode = nil
            if singleFrame {
                pending = .message(makeMessage(messageOpcode, frame.binaryPayload))
            }
        }
        return .frame(frame)
    }

    private func makeMessage(_ opcode: WebSocketOpcode, _ payload: ByteBuffer) -> WebSocketMessage {
        if opcode == .text {
            return .utf8(String(decoding: payload.readableBytesView, as: UTF8.self))
        }
        return .binary(payload)
    }

    private mutating func parseClose(_ payload: ByteBuffer) -> Event {
        var payload = payload
        switch payload.readableBytes {
        case 0:
            state = .done
            return .close(code: WebSocketCloseReason.notProvided, reason: "")
        case 1:
            return fail(WebSocketProtocolError(.protocolError, "Close frame with a 1-byte payload"))
        default:
            let code = Int(payload.readInteger(as: UInt16.self)!)
            guard WebSocketCloseReason.isValidOnWire(code) else {
                return fail(WebSocketProtocolError(.protocolError, "Invalid close code \(code)"))
            }
            guard UTF8Validator.isValid(payload.readableBytesView) else {
                return fail(WebSocketProtocolError(.invalidData, "Invalid UTF-8 in the close reason"))
            }
            state = .done
            return .close(code: code, reason: String(decoding: payload.readableBytesView, as: UTF8.self))
        }
    }

    private mutating func fail(_ error: WebSocketProtocolError) -> Event {
        state = .done
        pending = nil
        messageBuffer = ByteBuffer()
        frameBuffer = ByteBuffer()
        return .failure(error)
    }
}

extension WebSocketReceiver.Event {
    /// The application payload an event carries, for accounting.
    var payloadSize: Int {
        switch self {
        case .message(.utf8(let string)): return string.utf8.count
        case .message(.binary(let buffer)): return buffer.readableBytes
        case .frame(let frame): return frame.length
        case .ping(let data), .pong(let data): return data.readableBytes
        case .close, .failure: return 0
        }
    }
}
