import Logging
import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2

/// Handles one HTTP/2 stream a client opened on a server connection (RFC 8441), as
/// ``WebSocketServerHandshake`` decides: an extended CONNECT with `:protocol = websocket`
/// becomes a ``WebSocketRequest`` (accepted with
/// `:status 200`, after which the stream carries the WebSocket through a
/// ``WebSocketHTTP2StreamBridge``); any other request goes to the server's plain HTTP handler.
final class WebSocketHTTP2ServerStreamHandler: ChannelDuplexHandler, RemovableChannelHandler, WebSocketHandshakeResponder {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias InboundOut = HTTP2Frame.FramePayload
    typealias OutboundIn = HTTP2Frame.FramePayload
    typealias OutboundOut = HTTP2Frame.FramePayload

    private let server: WebSocketServer
    private var context: ChannelHandlerContext?
    private var answered = false
    private var requestTimer: Scheduled<Void>?
    private var pendingRequest: WebSocketRequest?
    /// DATA that arrived before the request was accepted (a client may send its first frames
    /// without waiting for the 200), replayed to the connection; bounded by `maxHandshakeSize`.
    private var early: [HTTP2Frame.FramePayload] = []
    private var earlyBytes = 0

    init(server: WebSocketServer) {
        self.server = server
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    /// The keys of ``WebSocketLogMetadata``: the request's, once it was read; before, the TCP
    /// peer's address only.
    private func logMetadata(context: ChannelHandlerContext) -> Logger.Metadata {
        if let pendingRequest { return pendingRequest.logMetadata }
        let peer = context.channel.parent?.remoteAddress ?? context.channel.remoteAddress
        return WebSocketLogMetadata.metadata(id: nil, remoteAddress: peer?.ipAddress ?? "", path: "", protocol: nil)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        requestTimer?.cancel()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        requestTimer?.cancel()
        if let request = pendingRequest {
            pendingRequest = nil
            request.slot?.release()
            server.upgradeErrorHandlers.emit(
                WebSocketError(.notConnected, "The client at \(request.remoteAddress) reset its HTTP/2 stream before its request was accepted or rejected"))
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        server.logger.debug("HTTP/2 stream error", metadata: logMetadata(context: context).merging(["error": "\(error)"]) { $1 })
        if !answered {
            server.upgradeErrorHandlers.emit(WebSocketError(.handshakeFailed, "HTTP/2 stream error during the opening handshake: \(error)"))
        }
        pendingRequest = nil
        answered = true
        context.close(promise: nil)  // RST_STREAM: this stream only
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let payload = unwrapInboundIn(data)
        switch payload {
        case .headers(let headers) where !answered && pendingRequest == nil:
            handleRequest(headers.headers, endStream: headers.endStream, context: context)
        case .data(let data) where pendingRequest != nil:
            earlyBytes += data.data.readableBytes
            guard earlyBytes <= server.configuration.maxHandshakeSize else {
                server.upgradeErrorHandlers.emit(
                    WebSocketError(.handshakeFailed, "The client sent more than \(server.configuration.maxHandshakeSize) bytes before its request was accepted"))
                pendingRequest = nil
                answered = true
                context.close(promise: nil)  // RST_STREAM
                return
            }
            early.append(payload)
        case .headers where pendingRequest != nil:
            // Trailers (END_STREAM) before the decision: kept in order for the connection.
            early.append(payload)
        default:
            // The body of a plain request, or anything after the answer: not for us.
            break
        }
    }

    /// Carries out ``WebSocketServerHandshake``'s verdict on the fields that opened the stream.
    private func handleRequest(_ headers: HPACKHeaders, endStream: Bool, context: ChannelHandlerContext) {
        let channel = context.channel
        let peer = (channel.remoteAddress ?? channel.parent?.remoteAddress)?.ipAddress ?? ""
        let fields = headers.map { (name: $0.name, value: $0.value) }
        let upgrade: WebSocketServerHandshake.Upgrade
        switch WebSocketServerHandshake.evaluateHTTP2(fields, endStream: endStream, peerAddress: peer, configuration: server.configuration) {
        case .upgrade(let valid):
            upgrade = valid
        case .plainRequest(let head):
            server.handlePlainRequest(head, channel: channel) { status, headers, body in
                self.respond(status: Int(status.code), headers: headers, body: body)
            }
            return
        case .refuse(let refusal):
            server.upgradeErrorHandlers.emit(refusal.error)
            return respond(status: Int(refusal.status.code), headers: refusal.headers, body: refusal.body)
        }
        guard case .admitted(let slot) = server.reserveConnection() else {
            return respond(status: 503, headers: [:], body: "Too many connections")
        }
        let request = WebSocketRequest(upgrade, channel: channel, server: server, handshake: self, slot: slot)
        pendingRequest = request
        requestTimer = server.requestTimeout(for: request, on: context.eventLoop)
        server.handleRequest(request)
    }

    /// Answers on this stream only (HEADERS, then DATA with END_STREAM); the HTTP/2 connection
    /// stays open for other streams.
    private func respond(status: Int, headers extra: [String: String], body: String) {
        pendingRequest = nil
        requestTimer?.cancel()
        guard let context, !answered, context.channel.isActive else { return }
        answered = true
        var headers = HPACKHeaders()
        headers.add(name: ":status", value: String(status))
        headers.add(name: "content-length", value: String(body.utf8.count))
        for (name, value) in WebSocketServer.plainAnswerHeaders(extra) {
            Self.add(name, value, to: &headers)
        }
        let bodyBytes = ByteBuffer(string: body)
        let written = context.eventLoop.makePromise(of: Void.self)
        if bodyBytes.readableBytes > 0 {
            context.write(wrapOutboundOut(.headers(.init(headers: headers))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.data(.init(data: .byteBuffer(bodyBytes), endStream: true))), promise: written)
        } else {
            context.writeAndFlush(wrapOutboundOut(.headers(.init(headers: headers, endStream: true))), promise: written)
        }
        // The answer is complete. A client that has not ended its side (a refused CONNECT) gets
        // a reset, so that no half-closed stream lingers (RFC 9113 §8.1 allows it).
        written.futureResult.assumeIsolated().whenComplete { _ in
            if context.channel.isActive { context.close(promise: nil) }
        }
    }

    /// Headers HTTP/2 forbids (RFC 9113 §8.2.2): they belong to one HTTP/1.1 connection.
    static let connectionSpecific: Set<String> = ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"]

    /// Adds a header a user supplied, lower-cased, leaving out what HTTP/2 forbids (a
    /// connection-specific header, a name that is not a token) and control characters in the
    /// value, which would make NIO refuse the whole answer.
    static func add(_ name: String, _ value: String, to headers: inout HPACKHeaders) {
        let name = name.lowercased()
        guard WebSocketClient.isToken(name), !connectionSpecific.contains(name) else { return }
        headers.add(name: name, value: String(value.unicodeScalars.filter { $0 == "\t" || ($0.value >= 0x20 && $0.value != 0x7F) }))
    }

    func reject(status: Int, reason: String?, extraHeaders: [String: String]) {
        var headers = extraHeaders
        if let reason {
            headers["x-websocket-reject-reason"] = reason.filter { !$0.isNewline }  // "\r\n" is one Character
        }
        respond(status: status, headers: headers, body: HTTPResponseStatus(statusCode: status).reasonPhrase)
    }

    func switchToWebSocket(connection: WebSocketConnection, headers extra: [(String, String)]) {
        pendingRequest = nil
        requestTimer?.cancel()
        guard let context, !answered, context.channel.isActive else {
            // The client reset the stream in the meantime: the connection closes at once (1006).
            connection.channelHandler.abandon()
            return
        }
        answered = true
        var headers = HPACKHeaders()
        headers.add(name: ":status", value: "200")
        for (name, value) in extra { Self.add(name, value, to: &headers) }
        // Written first (whatever `connect` handlers send comes after it), flushed once the
        // server counts the connection.
        let written = context.eventLoop.makePromise(of: Void.self)
        context.write(wrapOutboundOut(.headers(.init(headers: headers))), promise: written)
        let channel = context.channel
        written.futureResult.whenFailure { _ in channel.close(promise: nil) }  // 1006 for the connection
        let pipeline = context.pipeline.syncOperations
        do {
            try pipeline.addHandlers([
                WebSocketHTTP2StreamBridge(closeTimeout: TimeAmount(scheduling: server.configuration.closeTimeout)),
                connection.channelHandler,
            ])
        } catch {
            connection.channelHandler.abandon()
            context.close(promise: nil)
            return
        }
        server.connectionOpened(connection)
        context.flush()
        pipeline.removeHandler(context: context, promise: nil)
    }

    func removeHandler(context: ChannelHandlerContext, removalToken: ChannelHandlerContext.RemovalToken) {
        if !early.isEmpty {
            let waiting = early
            early = []
            for payload in waiting { context.fireChannelRead(wrapInboundOut(payload)) }
            context.fireChannelReadComplete()
        }
        context.leavePipeline(removalToken: removalToken)
    }
}

/// The last handler of a server's HTTP/2 connection: logs connection-level errors (protocol
/// violations the HTTP/2 handler answered with GOAWAY, TLS errors) and closes on them.
final class WebSocketHTTP2ConnectionErrorHandler: ChannelInboundHandler {
    typealias InboundIn = Any

    private let server: WebSocketServer

    init(server: WebSocketServer) {
        self.server = server
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // About the TCP connection that carries the streams: no WebSocket of its own.
        let metadata = WebSocketLogMetadata.metadata(id: nil, remoteAddress: context.channel.remoteAddress?.ipAddress ?? "", path: "", protocol: nil)
        server.logger.debug("HTTP/2 error", metadata: metadata.merging(["error": "\(error)"]) { $1 })
        // HTTP/2 and HPACK errors come here after the HTTP/2 handler acted on them: a stream
        // error reset that one stream (the others, WebSockets of other users behind the same
        // proxy maybe, go on), a connection error sent GOAWAY (the peer closes; too many stream
        // errors become one). Anything else (TLS, the socket) ends the connection.
        if error is any NIOHTTP2Error || error is any NIOHPACKError { return }
        context.close(promise: nil)
    }
}
