import Logging
import NIOCore
import NIOHTTP1
import NIOSSL

/// Sends the opening handshake request, checks the server's answer (RFC 6455 §4.1), and swaps
/// the HTTP handlers for the connection's handler.
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

        /// Checks the server's choice of subprotocol and extensions (the same over HTTP/1.1 and
        /// HTTP/2): the subprotocol must be one offered; each extension one offered, once, with
        /// parameters its negotiator accepts.
        func negotiate(_ headers: HTTPHeaders) -> Result<(String?, [any WebSocketExtensionCodec]), WebSocketError> {
            func reject(_ code: WebSocketError.Code, _ message: String) -> Result<(String?, [any WebSocketExtensionCodec]), WebSocketError> {
                .failure(WebSocketError(code, message))
            }
            var chosen: String?
            if let answered = headers.first(name: "sec-websocket-protocol") {
                let lower = answered.trimmingSpaces().lowercased()
                guard protocols.contains(where: { $0.lowercased() == lower }) else {
                    let offered = protocols.isEmpty ? "none" : protocols.joined(separator: ", ")
                    return reject(.protocolNotOffered, "The server chose the subprotocol \"\(answered)\", which the client did not offer (offered: \(offered))")
                }
                chosen = lower
            }
            // Each accepted extension must be one offered, once; its negotiator checks the answer.
            var codecs: [any WebSocketExtensionCodec] = []
            var seen = Set<String>()
            for accepted in WebSocketExtension.parse(headers["sec-websocket-extensions"]) {
                let name = accepted.name.lowercased()
                guard let negotiator = negotiators.first(where: { $0.name.lowercased() == name }) else {
                    return reject(.extensionNotOffered, "The server accepted the extension \"\(accepted)\", which the client did not offer")
                }
                guard seen.insert(name).inserted else {
                    return reject(.handshakeFailed, "The server accepted the extension \(accepted.name) twice")
                }
                do {
                    codecs.append(try negotiator.accepted(response: accepted))
                } catch {
                    let message = (error as? WebSocketError)?.message ?? "\(error)"
                    return reject(.handshakeFailed, "The server's answer for \(accepted.name) is not acceptable: \(message)")
                }
            }
            return .success((chosen, codecs))
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

    private func finish(_ head: HTTPResponseHead, context: ChannelHandlerContext) {
        guard !done else { return }
        let headers = head.headers
        func reject(_ code: WebSocketError.Code, _ message: String, response: WebSocketClient.HTTPResponse? = nil) {
            fail(WebSocketError(code, message), context: context, response: response)
        }
        guard head.status == .switchingProtocols else {
            let statusLine = "\(head.version) \(head.status.code) \(head.status.reasonPhrase)"
            return reject(
                .unexpectedStatus, "The server \(request.peerDescription) answered with \(statusLine) instead of 101 Switching Protocols",
                response: WebSocketClient.HTTPResponse(head: head, body: body ?? ByteBuffer()))
        }
        guard WebSocketHandshake.headerContainsToken(headers, "upgrade", "websocket") else {
            return reject(.handshakeFailed, "Expected an Upgrade: websocket header from the server, got \(headers["upgrade"].first.map { "\"\($0)\"" } ?? "none")")
        }
        guard WebSocketHandshake.headerContainsToken(headers, "connection", "upgrade") else {
            return reject(.handshakeFailed, "Expected a Connection: Upgrade header from the server, got \(headers["connection"].first.map { "\"\($0)\"" } ?? "none")")
        }
        let expected = WebSocketHandshake.acceptValue(forKey: key)
        guard let accept = headers.first(name: "sec-websocket-accept") else {
            return reject(.invalidAcceptKey, "The server sent no Sec-WebSocket-Accept header")
        }
        guard accept == expected else {
            return reject(.invalidAcceptKey, "Sec-WebSocket-Accept header from server didn't match expected value of \(expected) (got \(accept))")
        }
        let chosen: String?
        let codecs: [any WebSocketExtensionCodec]
        switch request.negotiate(headers) {
        case .success(let result): (chosen, codecs) = result
        case .failure(let error): return fail(error, context: context)
        }
        done = true
        let connection = WebSocketConnection(
            channel: context.channel, role: .client, options: request.options, protocol: chosen,
            extensions: codecs.map(\.negotiated), remoteAddress: context.channel.remoteAddress?.ipAddress ?? "",
            webSocketVersion: request.version, logger: request.logger, codecs: codecs)
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
