import NIOCore
import NIOHTTP1
import NIOSSL

/// Reads the HTTP request on a new server connection, checks the upgrade (RFC 6455 §4.2.1),
/// hands a ``WebSocketRequest`` to the server, and on `accept` swaps the HTTP handlers for the
/// connection's handler.
final class WebSocketServerHandshakeHandler: ChannelInboundHandler, RemovableChannelHandler, WebSocketHandshakeResponder {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let server: WebSocketServer
    private let encoder: HTTPResponseEncoder
    private let decoder: ByteToMessageHandler<HTTPRequestDecoder>
    private var context: ChannelHandlerContext?
    private var head: HTTPRequestHead?
    private var finished = false
    private var handshakeTimer: Scheduled<Void>?
    private var requestTimer: Scheduled<Void>?
    private var pendingRequest: WebSocketRequest?
    /// The request's Sec-WebSocket-Key, for the 101's Sec-WebSocket-Accept.
    private var connectionKey = ""

    init(server: WebSocketServer, encoder: HTTPResponseEncoder, decoder: ByteToMessageHandler<HTTPRequestDecoder>) {
        self.server = server
        self.encoder = encoder
        self.decoder = decoder
    }

    /// Adds the HTTP/1.1 handlers and the handshake handler to a fresh server channel.
    static func install(on channel: Channel, server: WebSocketServer) throws {
        let encoder = HTTPResponseEncoder()
        let limiter = HandshakeSizeLimiter(limit: server.configuration.maxHandshakeSize)
        let decoder = ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes))
        let handshake = WebSocketServerHandshakeHandler(server: server, encoder: encoder, decoder: decoder)
        handshake.limiter = limiter
        try channel.pipeline.syncOperations.addHandlers([encoder, limiter, decoder, handshake])
    }

    private var limiter: HandshakeSizeLimiter?

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let timeout = server.configuration.handshakeTimeout
        handshakeTimer = context.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(timeout)) {
            guard !self.finished else { return }
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
    }

    func channelInactive(context: ChannelHandlerContext) {
        handshakeTimer?.cancel()
        requestTimer?.cancel()
        if let request = pendingRequest {
            pendingRequest = nil
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
            finished = true
            handshakeTimer?.cancel()
            handleRequest(head, context: context)
        }
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
        if error is HandshakeSizeLimiter.TooLarge {
            server.upgradeErrorHandlers.emit(
                WebSocketError(.handshakeFailed, "Request head larger than \(server.configuration.maxHandshakeSize) bytes"))
            respond(status: .init(statusCode: 431), headers: [:], body: "Request Header Fields Too Large")
            return
        }
        server.upgradeErrorHandlers.emit(WebSocketError(.handshakeFailed, "Malformed HTTP request: \(error)"))
        respond(status: .badRequest, headers: [:], body: "Bad Request")
    }

    private func handleRequest(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let headers = head.headers
        guard headers.count <= server.configuration.maxHeaderCount else {
            server.upgradeErrorHandlers.emit(
                WebSocketError(.handshakeFailed, "Request has \(headers.count) headers; at most \(server.configuration.maxHeaderCount) are accepted"))
            respond(status: .init(statusCode: 431), headers: [:], body: "Request Header Fields Too Large")
            return
        }
        guard WebSocketHandshake.headerContainsToken(headers, "upgrade", "websocket") else {
            server.handlePlainRequest(head, channel: context.channel) { status, headers, body in
                self.respond(status: status, headers: headers, body: body)
            }
            return
        }
        func fail(_ message: String) {
            server.upgradeErrorHandlers.emit(WebSocketError(.handshakeFailed, message))
            respond(status: .badRequest, headers: [:], body: message)
        }
        guard head.method == .GET else { return fail("WebSocket upgrade must use GET, not \(head.method)") }
        guard head.version.major > 1 || (head.version.major == 1 && head.version.minor >= 1) else {
            return fail("WebSocket upgrade needs HTTP/1.1 or later")
        }
        guard headers.first(name: "host") != nil else { return fail("Missing Host header") }
        guard WebSocketHandshake.headerContainsToken(headers, "connection", "upgrade") else {
            return fail("Connection header does not contain \"upgrade\"")
        }
        guard let versionValue = headers.first(name: "sec-websocket-version") else {
            return fail("Missing Sec-WebSocket-Version header")
        }
        guard let version = Int(versionValue.trimmingSpaces()), version == 13 || version == 8 else {
            server.upgradeErrorHandlers.emit(
                WebSocketError(.handshakeFailed, "Unsupported WebSocket version \(versionValue); 13 and 8 are supported"))
            respond(status: .upgradeRequired, headers: ["Sec-WebSocket-Version": "13, 8"], body: "Unsupported WebSocket version")
            return
        }
        guard let key = headers.first(name: "sec-websocket-key")?.trimmingSpaces(), WebSocketHandshake.isValidKey(String(key)) else {
            return fail("Missing or malformed Sec-WebSocket-Key header")
        }
        if server.refusesNewConnection() {
            respond(status: .serviceUnavailable, headers: [:], body: "Too many connections")
            return
        }
        connectionKey = String(key)
        let request = WebSocketRequest(
            head: head, version: version, key: String(key), channel: context.channel, server: server, handshake: self)
        pendingRequest = request
        requestTimer = server.requestTimeout(for: request, on: context.eventLoop)
        server.handleRequest(request)
    }

    /// Answers with a plain HTTP response and closes the connection.
    func respond(status: HTTPResponseStatus, headers extra: [String: String], body: String) {
        pendingRequest = nil
        requestTimer?.cancel()
        guard let context, context.channel.isActive else { return }
        var headers = HTTPHeaders()
        headers.add(name: "Connection", value: "close")
        headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        headers.add(name: "Content-Length", value: String(body.utf8.count))
        for (name, value) in extra { headers.add(name: name, value: value) }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        if !body.isEmpty {
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
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
        let pipeline = context.pipeline.syncOperations
        do {
            try pipeline.addHandler(connection.channelHandler)
            _ = pipeline.removeHandler(encoder)
            context.channel.writeAndFlush(ByteBuffer(string: response), promise: nil)
            if let limiter { _ = pipeline.removeHandler(limiter) }
            _ = pipeline.removeHandler(context: context)
            // The decoder hands on the bytes that followed the request when it leaves; end that
            // read burst so replies to them are flushed without waiting for the next packet.
            let channel = context.channel
            pipeline.removeHandler(decoder).whenSuccess { _ in channel.pipeline.fireChannelReadComplete() }
        } catch {
            connection.channelHandler.abandon()
            context.close(promise: nil)
            return
        }
        server.connectionOpened(connection)
    }
}

/// Counts the bytes of a request head and stops them past the limit, so that a client cannot
/// make the server buffer an endless head. Removed when the connection is upgraded.
final class HandshakeSizeLimiter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    struct TooLarge: Error {}

    private let limit: Int
    private var seen = 0
    private var tripped = false

    init(limit: Int) { self.limit = limit }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !tripped else { return }
        seen += unwrapInboundIn(data).readableBytes
        if seen > limit {
            tripped = true
            context.fireErrorCaught(TooLarge())
            return
        }
        context.fireChannelRead(data)
    }
}
