import Logging
import NIOCore
import NIOHTTP1

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
    }

    private let request: Request
    private let key = WebSocketHandshake.makeKey()
    private let encoder: HTTPRequestEncoder
    private let decoder: ByteToMessageHandler<HTTPResponseDecoder>
    private let promise: EventLoopPromise<WebSocketConnection>
    private var head: HTTPResponseHead?
    private var done = false

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

    private var sent = false

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
        case .body:
            break
        case .end:
            guard let head else { return }
            done = true
            finish(head, context: context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(WebSocketError(.handshakeFailed, "The server closed the connection during the opening handshake"), context: context)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(WebSocketError(.handshakeFailed, "Opening handshake failed: \(error)"), context: context)
    }

    private func fail(_ error: WebSocketError, context: ChannelHandlerContext, response: HTTPResponseHead? = nil) {
        done = true
        promise.fail(WebSocketClient.HandshakeFailure(error: error, response: response))
        context.close(promise: nil)
    }

    private func finish(_ head: HTTPResponseHead, context: ChannelHandlerContext) {
        let headers = head.headers
        guard head.status == .switchingProtocols else {
            return fail(
                WebSocketError(.handshakeFailed, "Server responded with a non-101 status: \(head.status.code) \(head.status.reasonPhrase)"),
                context: context, response: head)
        }
        guard WebSocketHandshake.headerContainsToken(headers, "upgrade", "websocket") else {
            return fail(WebSocketError(.handshakeFailed, "Expected an Upgrade: websocket response header"), context: context)
        }
        guard WebSocketHandshake.headerContainsToken(headers, "connection", "upgrade") else {
            return fail(WebSocketError(.handshakeFailed, "Expected a Connection: Upgrade response header"), context: context)
        }
        guard headers.first(name: "sec-websocket-accept") == WebSocketHandshake.acceptValue(forKey: key) else {
            return fail(WebSocketError(.handshakeFailed, "Sec-WebSocket-Accept header from server didn't match expected value"), context: context)
        }
        var chosen: String?
        if let answered = headers.first(name: "sec-websocket-protocol") {
            let lower = answered.lowercased()
            guard request.protocols.contains(where: { $0.lowercased() == lower }) else {
                return fail(WebSocketError(.handshakeFailed, "Server accepted a subprotocol the client did not request: \(answered)"), context: context)
            }
            chosen = lower
        }
        if let extensions = headers.first(name: "sec-websocket-extensions"), !extensions.isEmpty {
            return fail(WebSocketError(.handshakeFailed, "Server accepted an extension the client did not offer: \(extensions)"), context: context)
        }
        let connection = WebSocketConnection(
            channel: context.channel, role: .client, options: request.options, protocol: chosen, extensions: [],
            remoteAddress: context.channel.remoteAddress?.ipAddress ?? "", webSocketVersion: request.version,
            logger: request.logger)
        let pipeline = context.pipeline.syncOperations
        do {
            try pipeline.addHandler(connection.channelHandler)
            _ = pipeline.removeHandler(context: context)
            _ = pipeline.removeHandler(encoder)
            _ = pipeline.removeHandler(decoder)
        } catch {
            return fail(WebSocketError(.handshakeFailed, "Could not set up the connection: \(error)"), context: context)
        }
        promise.succeed(connection)
    }
}
