import NIOCore
import NIOHTTP1

/// The first handler of a server connection: counts the bytes of the handshake and stops them
/// past the limit (so that a client cannot make the server buffer an endless head), and reads the
/// request head with ``HTTPRequestHeadParser``'s fast path. A head outside that path's subset
/// goes, bytes unchanged, to NIO's HTTP/1.1 decoder, which this handler then puts behind itself.
/// Removed when the connection is upgraded; bytes held after the head go on to the connection.
final class HandshakeRequestReader: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    struct TooLarge: Error {}

    private enum State {
        /// Waiting for the end of the head.
        case head
        /// The fast path read the head; later bytes are held for the connection.
        case handedOver
        /// NIO's decoder reads the request; bytes pass through to it.
        case decoder(ByteToMessageHandler<HTTPRequestDecoder>)
    }

    private let limit: Int
    /// Keep every byte read (``rawInput``) until the request is decided: the channel may yet go
    /// to another HTTP server (``WebSocketServerHandshakeHandler/PassOn``), which reads them
    /// again. Such a reader never puts NIO's decoder in: what the fast path does not read goes to
    /// the other server.
    private let keepsRawInput: Bool
    /// All bytes read so far (with `keepsRawInput`).
    private var rawInput: ByteBuffer?
    private var handshake: WebSocketServerHandshakeHandler?
    private var state = State.head
    private var seen = 0
    private var tripped = false
    /// Bytes not yet parsed (in `.head`) or held for the connection (in `.handedOver`).
    private var pending: ByteBuffer?

    init(limit: Int, handshake: WebSocketServerHandshakeHandler) {
        self.limit = limit
        self.handshake = handshake
        self.keepsRawInput = handshake.passOn != nil
    }

    /// The bytes read so far, for another HTTP server (see `keepsRawInput`).
    func takeRawInput() -> ByteBuffer? {
        defer { rawInput = nil }
        return rawInput
    }

    /// Passes the channel on to the other HTTP server (from within a read).
    private func passOn(context: ChannelHandlerContext) {
        if let handshake, let handshakeContext = try? context.pipeline.syncOperations.context(handler: handshake) {
            handshake.passOnToOtherServer(context: handshakeContext)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        handshake?.reader = nil
        handshake = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !tripped else { return }
        var buffer = unwrapInboundIn(data)
        seen += buffer.readableBytes
        if keepsRawInput, case .head = state {
            readKeepingRawInput(context: context, buffer)
            return
        }
        if seen > limit {
            tripped = true
            pending = nil
            context.fireErrorCaught(TooLarge())
            return
        }
        switch state {
        case .decoder:
            context.fireChannelRead(data)
        case .handedOver:
            pending.append(&buffer)
        case .head:
            // Input kept across reads is in storage of its own (see `ownStorage`): the first
            // part is copied out of the channel's buffer, later parts are appended to it.
            let fromChannel = pending == nil
            if pending != nil {
                pending!.writeBuffer(&buffer)
                buffer = pending!
                pending = nil
            }
            switch HTTPRequestHeadParser.parse(buffer) {
            case .incomplete:
                pending = fromChannel ? buffer.ownStorage() : buffer
            case .parsed(let head, let length):
                buffer.moveReaderIndex(forwardBy: length)
                state = .handedOver
                if buffer.readableBytes > 0 { pending = buffer }
                if let handshake, let handshakeContext = try? context.pipeline.syncOperations.context(handler: handshake) {
                    handshake.received(head, context: handshakeContext)
                }
            case .fallback:
                let decoder = ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes))
                do {
                    try context.pipeline.syncOperations.addHandler(decoder, position: .after(self))
                } catch {
                    context.fireErrorCaught(error)
                    return
                }
                state = .decoder(decoder)
                context.fireChannelRead(wrapInboundOut(buffer))
            }
        }
    }

    /// The head of a channel shared with another HTTP server: an upgrade request this server
    /// takes goes on as usual; anything else (no `Upgrade: websocket`, a head outside the fast
    /// path's subset, or one that grows past the limit) goes to the other server, every byte.
    private func readKeepingRawInput(context: ChannelHandlerContext, _ input: ByteBuffer) {
        var buffer = input
        let fromChannel = rawInput == nil
        if var earlier = rawInput {
            rawInput = nil
            earlier.writeBuffer(&buffer)
            buffer = earlier
        }
        switch HTTPRequestHeadParser.parse(buffer) {
        case .incomplete:
            // Input kept across reads is in storage of its own (see `ownStorage`).
            rawInput = fromChannel ? buffer.ownStorage() : buffer
            if seen > limit { passOn(context: context) }
        case .fallback:
            rawInput = buffer
            passOn(context: context)
        case .parsed(let head, let length):
            rawInput = buffer
            buffer.moveReaderIndex(forwardBy: length)
            state = .handedOver
            if buffer.readableBytes > 0 { pending = buffer }
            if let handshake, let handshakeContext = try? context.pipeline.syncOperations.context(handler: handshake) {
                handshake.received(head, context: handshakeContext)
            }
            // Still here: this server took the request, and the bytes are no longer needed.
            if handshake != nil { rawInput = nil }
        }
    }

    /// Leaves the pipeline after the handshake handler has, handing the bytes that followed the
    /// request to the handler after it (the connection's), then ends that read burst so replies
    /// to them are flushed without waiting for the next packet.
    func handOver(pipeline: ChannelPipeline.SynchronousOperations) {
        let held = pending
        pending = nil
        switch state {
        case .decoder(let decoder):
            // The decoder hands on what it holds when it leaves.
            _ = pipeline.removeHandler(self)
            let channel = try? pipeline.context(handler: decoder).channel
            pipeline.removeHandler(decoder).whenSuccess { _ in channel?.pipeline.fireChannelReadComplete() }
        case .head, .handedOver:
            guard let context = try? pipeline.context(handler: self) else { return }
            if let held, held.readableBytes > 0 {
                context.fireChannelRead(wrapInboundOut(held))
                _ = pipeline.removeHandler(context: context)
                pipeline.fireChannelReadComplete()
            } else {
                _ = pipeline.removeHandler(context: context)
            }
        }
    }
}

extension Optional where Wrapped == ByteBuffer {
    /// Appends `buffer` (a copy of it when there is nothing yet: see `ownStorage`).
    fileprivate mutating func append(_ buffer: inout ByteBuffer) {
        if self == nil {
            self = buffer.ownStorage()
        } else {
            self!.writeBuffer(&buffer)
        }
    }
}
