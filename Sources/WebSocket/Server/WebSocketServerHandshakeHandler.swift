import NIOCore
import NIOHTTP1
import NIOSSL

/// Reads the HTTP request on a new server connection, carries out what
/// ``WebSocketServerHandshake`` decides about it (the rules of RFC 6455 §4.2.1 live there):
/// hands a valid upgrade to the server as a ``WebSocketRequest``, a plain request to the server's
/// HTTP handler, or answers a refusal; on `accept` it swaps the handshake handlers for the
/// connection's handler.
///
/// The request head comes from the ``HandshakeRequestReader`` in front of it: straight from its
/// fast path (``HTTPRequestHeadParser``), or, for any request outside that path's strict subset,
/// as the `HTTPServerRequestPart`s of NIO's HTTP/1.1 decoder, which the reader then puts between
/// the two. Responses other than the 101 are written as bytes by ``respond``.
final class WebSocketServerHandshakeHandler: ChannelInboundHandler, RemovableChannelHandler, WebSocketHandshakeResponder {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = ByteBuffer

    private let server: WebSocketServer
    /// Cleared when either handler leaves the pipeline (they hold each other).
    var reader: HandshakeRequestReader?
    private var context: ChannelHandlerContext?
    private var head: HTTPRequestHead?
    private var finished = false
    private var handshakeTimer: Scheduled<Void>?
    private var requestTimer: Scheduled<Void>?
    private var pendingRequest: WebSocketRequest?
    /// The request's Sec-WebSocket-Key, for the 101's Sec-WebSocket-Accept.
    private var connectionKey = ""
    /// Set on a channel shared with another HTTP server (an application framework, see
    /// ``WebSocketServer/configurePipeline(for:upgradingWhere:otherwise:)``): what this server
    /// does not take, that server gets.
    let passOn: PassOn?

    /// Which upgrade requests this server takes, and how the channel goes to the other server.
    struct PassOn {
        /// Whether this server takes an upgrade request (`Upgrade: websocket`).
        var takes: @Sendable (HTTPRequestHead) -> Bool
        /// Installs the other server's handlers; called on the event loop, after this server's
        /// handlers left the pipeline and before the bytes read so far are passed on again.
        var install: (Channel) throws -> Void
    }

    init(server: WebSocketServer, passOn: PassOn? = nil) {
        self.server = server
        self.passOn = passOn
    }

    /// Adds the handshake handlers to a fresh server channel.
    static func install(on channel: Channel, server: WebSocketServer, passOn: PassOn? = nil) throws {
        let handshake = WebSocketServerHandshakeHandler(server: server, passOn: passOn)
        let reader = HandshakeRequestReader(limit: server.configuration.maxHandshakeSize, handshake: handshake)
        handshake.reader = reader
        try channel.pipeline.syncOperations.addHandlers([reader, handshake])
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let timeout = server.configuration.handshakeTimeout
        handshakeTimer = context.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(scheduling: timeout)) {
            guard !self.finished else { return }
            if self.passOn != nil {
                // The other server decides what to do with a slow client.
                self.passOnToOtherServer(context: context)
                return
            }
            self.finished = true
            self.server.upgradeErrorHandlers.emit(
                WebSocketError(.timeout, "The client did not send a complete request within \(timeout)"))
            self.respond(status: .requestTimeout, headers: [:], body: "Request Timeout")
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        handshakeTimer?.cancel()
        requestTimer?.cancel()
        self.context = nil
        reader = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        handshakeTimer?.cancel()
        requestTimer?.cancel()
        if let request = pendingRequest {
            pendingRequest = nil
            request.slot?.release()
            server.upgradeErrorHandlers.emit(
                WebSocketError(.notConnected, "The client at \(request.remoteAddress) went away before its request was accepted or rejected"))
        }
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !finished else { return }
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body:
            break
        case .end:
            guard let head else { return }
            received(head, context: context)
        }
    }

    /// A complete request head, from NIO's decoder or straight from the reader's fast path.
    func received(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        guard !finished else { return }
        if let passOn, !(WebSocketHandshake.headerContainsToken(head.headers, "upgrade", "websocket") && passOn.takes(head)) {
            passOnToOtherServer(context: context)
            return
        }
        finished = true
        handshakeTimer?.cancel()
        handleRequest(head, context: context)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard !finished else {
            context.close(promise: nil)
            return
        }
        finished = true
        handshakeTimer?.cancel()
        if error is NIOSSLError || error is BoringSSLError {
            server.upgradeErrorHandlers.emit(WebSocketError(.handshakeFailed, "TLS handshake failed: \(error)"))
            context.close(promise: nil)
            return
        }
        if error is HandshakeRequestReader.TooLarge {
            server.upgradeErrorHandlers.emit(
                WebSocketError(.handshakeFailed, "Request head larger than \(server.configuration.maxHandshakeSize) bytes"))
            respond(status: .init(statusCode: 431), headers: [:], body: "Request Header Fields Too Large")
            return
        }
        server.upgradeErrorHandlers.emit(WebSocketError(.handshakeFailed, "Malformed HTTP request: \(error)"))
        respond(status: .badRequest, headers: [:], body: "Bad Request")
    }

    /// Hands the channel to the other HTTP server (see ``PassOn``): takes this server's handlers
    /// out, lets `install` add the other server's, and passes on every byte read so far.
    func passOnToOtherServer(context: ChannelHandlerContext) {
        guard let passOn, !finished else { return }
        finished = true
        handshakeTimer?.cancel()
        let channel = context.channel
        let pipeline = context.pipeline.syncOperations
        let raw = reader?.takeRawInput()
        if let reader { _ = pipeline.removeHandler(reader) }
        _ = pipeline.removeHandler(context: context)
        do {
            try passOn.install(channel)
        } catch {
            server.upgradeErrorHandlers.emit(
                WebSocketError(.handshakeFailed, "The other HTTP server could not take the connection: \(error)"))
            channel.close(promise: nil)
            return
        }
        if let raw, raw.readableBytes > 0 {
            channel.pipeline.fireChannelRead(raw)
            channel.pipeline.fireChannelReadComplete()
        }
    }

    /// Carries out ``WebSocketServerHandshake``'s verdict on the request.
    private func handleRequest(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let channel = context.channel
        let peer = (channel.remoteAddress ?? channel.parent?.remoteAddress)?.ipAddress ?? ""
        let upgrade: WebSocketServerHandshake.Upgrade
        switch WebSocketServerHandshake.evaluate(head, peerAddress: peer, configuration: server.configuration) {
        case .upgrade(let valid):
            upgrade = valid
        case .plainRequest(let head):
            server.handlePlainRequest(head, channel: channel) { status, headers, body in
                self.respond(status: status, headers: headers, body: body)
            }
            return
        case .refuse(let refusal):
            server.upgradeErrorHandlers.emit(refusal.error)
            server.metrics?.handshakeRefused(status: Int(refusal.status.code))
            respond(status: refusal.status, headers: refusal.headers, body: refusal.body)
            return
        }
        guard case .admitted(let slot) = server.reserveConnection() else {
            server.metrics?.handshakeRefused(status: 503)
            respond(status: .serviceUnavailable, headers: [:], body: "Too many connections")
            return
        }
        connectionKey = upgrade.key
        let request = WebSocketRequest(upgrade, channel: channel, server: server, handshake: self, slot: slot)
        pendingRequest = request
        server.handleRequest(request)
        // Most applications decide inside the request handler; a request still open after it
        // gets the requestTimeout timer. (A decision taken meanwhile on another thread reaches
        // this handler through the event loop, after this, and cancels the timer; the timer
        // itself also checks.) Never schedule for a decided request: the timer would hold the
        // request and this handler for requestTimeout after the connection went away.
        if !request.isDecided && pendingRequest === request {
            requestTimer = server.requestTimeout(for: request, on: context.eventLoop)
        }
    }

    /// Answers with a plain HTTP response and closes the connection.
    func respond(status: HTTPResponseStatus, headers extra: [String: String], body: String) {
        pendingRequest = nil
        requestTimer?.cancel()
        guard let context, context.channel.isActive else { return }
        var response = "HTTP/1.1 \(status.code) \(Self.fieldText(status.reasonPhrase))\r\n"
        response += "Connection: close\r\nContent-Length: \(body.utf8.count)\r\n"
        for (name, value) in WebSocketServer.plainAnswerHeaders(extra) where WebSocketClient.isToken(name) {
            response += "\(name): \(Self.fieldText(value))\r\n"
        }
        response += "\r\n"
        response += body
        // A client that does not read the answer (a large page, say) must not hold the socket
        // and the answer's bytes for ever: it has `handshakeTimeout` to take them.
        let timeout = server.configuration.handshakeTimeout
        let logger = server.logger
        let writeTimer = context.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(scheduling: timeout)) {
            logger.debug("HTTP answer not read by the client within handshakeTimeout: closing", metadata: ["timeout": "\(timeout)"])
            context.close(promise: nil)
        }
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: response))).assumeIsolated().whenComplete { _ in
            writeTimer.cancel()
            context.close(promise: nil)
        }
    }

    /// `text` without the control characters (other than tab) that would end or split a line
    /// of the response head: a header from the application cannot inject another.
    static func fieldText(_ text: String) -> String {
        if !text.utf8.contains(where: { $0 < 0x20 && $0 != 0x09 || $0 == 0x7F }) { return text }
        return String(String.UnicodeScalarView(text.unicodeScalars.filter { $0.value >= 0x20 && $0.value != 0x7F || $0 == "\t" }))
    }

    func reject(status: Int, reason: String?, extraHeaders: [String: String]) {
        var headers = extraHeaders
        if let reason {
            headers["X-WebSocket-Reject-Reason"] = reason.filter { !$0.isNewline }  // "\r\n" is one Character
        }
        let status = HTTPResponseStatus(statusCode: status)
        respond(status: status, headers: headers, body: status.reasonPhrase)
    }

    /// Writes the 101 response and replaces the HTTP handlers with the connection's handler.
    func switchToWebSocket(connection: WebSocketConnection, headers: [(String, String)]) {
        var response = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        response += "Sec-WebSocket-Accept: \(WebSocketHandshake.acceptValue(forKey: connectionKey))\r\n"
        for (name, value) in headers { response += "\(name): \(value)\r\n" }
        response += "\r\n"
        pendingRequest = nil
        requestTimer?.cancel()
        guard let context, context.channel.isActive else {
            // The client went away in the meantime: the connection closes at once (1006).
            connection.channelHandler.abandon()
            return
        }
        // Written now, flushed only once the server counts the connection: a client that got
        // its 101 is always among the connections a shutDown closes (flushed first, a client
        // could see the 101 and have the server shut down before the connection was counted,
        // and it was never closed). Whatever the connect handlers send goes out after the 101.
        let channel = context.channel
        context.write(wrapOutboundOut(channel.allocator.buffer(string: response)), promise: nil)
        let pipeline = context.pipeline.syncOperations
        do {
            try pipeline.addHandler(connection.channelHandler)
            // This handler leaves first: the bytes that followed the request (held by the reader,
            // or by NIO's decoder on the slow path) go on to the connection's handler.
            let reader = self.reader
            _ = pipeline.removeHandler(context: context)
            reader?.handOver(pipeline: pipeline)
        } catch {
            connection.channelHandler.abandon()
            context.close(promise: nil)
            return
        }
        server.connectionOpened(connection)
        channel.flush()
    }
}
