import Logging
import NIOCore
import NIOHTTP1
import NIOSSL

/// Sends the opening handshake request, has ``WebSocketClientHandshake`` check the server's
/// answer (RFC 6455 §4.1), and swaps the HTTP handlers for the connection's handler.
final class WebSocketClientHandshakeHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    struct Request {
        var target: String
        var host: String
        var protocols: [String]
        var origin: String?
        var headers: [(String, String)]
        var version: Int
        var options: WebSocketConnectionOptions
        var logger: Logger
        /// Where the connection goes, for error messages (`host:port`).
        var peerDescription: String
        /// The extensions to offer.
        var negotiators: [any WebSocketExtensionNegotiator]

        /// What this request offers, to check the server's answer against (`key`: the
        /// `Sec-WebSocket-Key` sent, empty over HTTP/2).
        func offer(key: String) -> WebSocketClientHandshake {
            WebSocketClientHandshake(key: key, protocols: protocols, negotiators: negotiators, peerDescription: peerDescription)
        }
    }

    /// The most body bytes of a non-101 response kept for `httpResponse`.
    static let maxResponseBody = 64 * 1024

    private let request: Request
    private let key = WebSocketHandshake.makeKey()
    private let encoder: HTTPRequestEncoder
    private let decoder: ByteToMessageHandler<HTTPResponseDecoder>
    private let promise: EventLoopPromise<WebSocketConnection>
    private var head: HTTPResponseHead?
    private var body: ByteBuffer?
    private var sent = false
    private var done = false
    /// The connection, once the 101 was accepted.
    private var upgraded: WebSocketConnection?
    /// Bytes that followed the 101 in the decoder's buffer.
    private var leftover: ByteBuffer?

    init(request: Request, encoder: HTTPRequestEncoder, decoder: ByteToMessageHandler<HTTPResponseDecoder>, promise: EventLoopPromise<WebSocketConnection>) {
        self.request = request
        self.encoder = encoder
        self.decoder = decoder
        self.promise = promise
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { sendRequest(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        sendRequest(context: context)
        context.fireChannelActive()
    }

    private func sendRequest(context: ChannelHandlerContext) {
        guard !sent else { return }
        sent = true
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: request.host)
        headers.add(name: "Upgrade", value: "websocket")
        headers.add(name: "Connection", value: "Upgrade")
        headers.add(name: "Sec-WebSocket-Version", value: String(request.version))
        headers.add(name: "Sec-WebSocket-Key", value: key)
        if let origin = request.origin {
            headers.add(name: request.version == 8 ? "Sec-WebSocket-Origin" : "Origin", value: origin)
        }
        if !request.protocols.isEmpty {
            headers.add(name: "Sec-WebSocket-Protocol", value: request.protocols.joined(separator: ", "))
        }
        let offers = request.negotiators.flatMap { $0.makeOffers() }
        if !offers.isEmpty {
            headers.add(name: "Sec-WebSocket-Extensions", value: offers.map(\.description).joined(separator: ", "))
        }
        for (name, value) in request.headers { headers.add(name: name, value: value) }
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: request.target, headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else { return }
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body(var part):
            guard head?.status != .switchingProtocols else { return }
            let room = Self.maxResponseBody - (body?.readableBytes ?? 0)
            if part.readableBytes > room {
                // Keep what fits, then report at once.
                if var slice = part.readSlice(length: room) { body.setOrWriteBuffer(&slice) }
                if let head { finish(head, context: context) }
                return
            }
            body.setOrWriteBuffer(&part)
        case .end:
            guard let head else { return }
            finish(head, context: context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !done {
            if let head, head.status != .switchingProtocols {
                // A non-101 answer whose body ran until the connection closed.
                finish(head, context: context)
            } else {
                fail(WebSocketError(.handshakeFailed, "The server \(request.peerDescription) closed the connection during the opening handshake"), context: context)
            }
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if upgraded != nil, case ByteToMessageDecoderError.leftoverDataWhenDone(var bytes) = error {
            leftover.setOrWriteBuffer(&bytes)
            return
        }
        fail(Self.classify(error, peer: request.peerDescription), context: context)
    }

    /// Turns a pipeline error into a ``WebSocketError`` that says which step failed.
    static func classify(_ error: any Error, peer: String) -> WebSocketError {
        if let error = error as? WebSocketError { return error }
        if error is NIOSSLError || error is NIOSSLExtraError || error is BoringSSLError {
            var hint = ""
            let text = "\(error)"
            if text.contains("CERTIFICATE_VERIFY_FAILED") {
                hint = " (the server's certificate is not trusted: set tlsConfiguration.trustRoots to its CA)"
            } else if text.contains("failedToValidateHostname") {
                hint = " (the server's certificate is not valid for this host name)"
            }
            return WebSocketError(.tlsFailed, "TLS handshake with \(peer) failed\(hint): \(error)")
        }
        if error is HTTPParserError {
            return WebSocketError(.handshakeFailed, "The server \(peer) sent a malformed HTTP response: \(error)")
        }
        return WebSocketError(.handshakeFailed, "The opening handshake with \(peer) failed: \(error)")
    }

    private func fail(_ error: WebSocketError, context: ChannelHandlerContext, response: WebSocketClient.HTTPResponse? = nil) {
        guard !done else { return }
        done = true
        promise.fail(WebSocketClient.HandshakeFailure(error: error, response: response))
        context.close(promise: nil)
    }

    /// The whole answer is here (or, for a 101, its head): carries out
    /// ``WebSocketClientHandshake``'s verdict on it.
    private func finish(_ head: HTTPResponseHead, context: ChannelHandlerContext) {
        guard !done else { return }
        let chosen: String?
        let codecs: [any WebSocketExtensionCodec]
        switch request.offer(key: key).validate(head, body: body) {
        case .accepted(let `protocol`, let extensions): (chosen, codecs) = (`protocol`, extensions)
        case .failed(let error, let response): return fail(error, context: context, response: response)
        }
        done = true
        let connection = WebSocketConnection(
            channel: context.channel, role: .client, options: request.options, protocol: chosen,
            extensions: codecs.map(\.negotiated), remoteAddress: context.channel.remoteAddress?.ipAddress ?? "",
            webSocketVersion: request.version, logger: request.logger, path: WebSocketLogMetadata.path(of: request.target),
            codecs: codecs)
        upgraded = connection
        // The HTTP handlers must be gone before anything is sent: the decoder observes writes
        // too. Its removal takes effect on the next tick and hands us, as an error, the bytes
        // that followed the 101 (the server's first frames); we keep them for the connection.
        let pipeline = context.pipeline.syncOperations
        pipeline.removeHandler(encoder, promise: nil)
        let removed = context.eventLoop.makePromise(of: Void.self)
        pipeline.removeHandler(decoder, promise: removed)
        removed.futureResult.assumeIsolated().whenComplete { _ in
            self.completeUpgrade(context: context)
        }
    }

    /// The HTTP decoder is gone: install the connection, emit `connect` (inside `succeed`),
    /// then leave, handing the connection the bytes that came with the handshake.
    private func completeUpgrade(context: ChannelHandlerContext) {
        guard let connection = upgraded else { return }
        do {
            try context.pipeline.syncOperations.addHandler(connection.channelHandler)
        } catch {
            promise.fail(WebSocketClient.HandshakeFailure(error: WebSocketError(.handshakeFailed, "Could not set up the connection: \(error)"), response: nil))
            context.close(promise: nil)
            return
        }
        promise.succeed(connection)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    func removeHandler(context: ChannelHandlerContext, removalToken: ChannelHandlerContext.RemovalToken) {
        if let leftover, leftover.readableBytes > 0 {
            self.leftover = nil
            context.fireChannelRead(NIOAny(leftover))
            // Ends the read burst: the connection handler flushes what it wrote in answer.
            context.fireChannelReadComplete()
        }
        context.leavePipeline(removalToken: removalToken)
    }
}
