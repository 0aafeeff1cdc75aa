import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2

/// The client's opening handshake on a new HTTP/2 stream (RFC 8441 §4): sends the extended
/// CONNECT, has ``WebSocketClientHandshake`` check the answer (a 2xx like a 101: subprotocol,
/// extensions; another status a refusal), then puts a
/// ``WebSocketHTTP2StreamBridge`` and the connection's handler in its place.
final class WebSocketHTTP2ClientStreamHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias InboundOut = HTTP2Frame.FramePayload
    typealias OutboundOut = HTTP2Frame.FramePayload

    /// Headers that only mean something on an HTTP/1.1 connection; HTTP/2 forbids them.
    private static let connectionSpecific: Set<String> = [
        "host", "connection", "upgrade", "keep-alive", "proxy-connection", "transfer-encoding", "te",
    ]

    private let request: WebSocketClientHandshakeHandler.Request
    private let promise: EventLoopPromise<WebSocketConnection>
    private var sent = false
    private var done = false
    private var responseHead: HTTPResponseHead?
    private var body: ByteBuffer?

    init(request: WebSocketClientHandshakeHandler.Request, promise: EventLoopPromise<WebSocketConnection>) {
        self.request = request
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
        var headers = HPACKHeaders()
        headers.add(name: ":method", value: "CONNECT")
        headers.add(name: ":protocol", value: "websocket")
        headers.add(name: ":scheme", value: "https")
        headers.add(name: ":path", value: request.target)
        headers.add(name: ":authority", value: request.host)
        headers.add(name: "sec-websocket-version", value: "13")
        if let origin = request.origin { headers.add(name: "origin", value: origin) }
        if !request.protocols.isEmpty {
            headers.add(name: "sec-websocket-protocol", value: request.protocols.joined(separator: ", "))
        }
        let offers = request.negotiators.flatMap { $0.makeOffers() }
        if !offers.isEmpty {
            headers.add(name: "sec-websocket-extensions", value: offers.map(\.description).joined(separator: ", "))
        }
        for (name, value) in request.headers where !Self.connectionSpecific.contains(name.lowercased()) {
            headers.add(name: name.lowercased(), value: value)
        }
        context.writeAndFlush(wrapOutboundOut(.headers(.init(headers: headers))), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else { return }
        switch unwrapInboundIn(data) {
        case .headers(let frame) where responseHead == nil:
            let status = frame.headers.first(name: ":status").flatMap(Int.init) ?? 0
            if (100..<200).contains(status) { return }  // an interim response; the real one follows
            var headers = HTTPHeaders()
            for (name, value, _) in frame.headers where !name.hasPrefix(":") { headers.add(name: name, value: value) }
            let head = HTTPResponseHead(version: .init(major: 2, minor: 0), status: .init(statusCode: status), headers: headers)
            if (200..<300).contains(status) {  // any 2xx answers a CONNECT (RFC 9110 §9.3.6)
                return accept(head, endStream: frame.endStream, context: context)
            }
            responseHead = head
            if frame.endStream { refuse(context: context) }
        case .headers(let frame):
            if frame.endStream { refuse(context: context) }
        case .data(let frame):
            if case .byteBuffer(var part) = frame.data {
                let room = WebSocketClientHandshakeHandler.maxResponseBody - (body?.readableBytes ?? 0)
                if var slice = part.readSlice(length: min(room, part.readableBytes)) { body.setOrWriteBuffer(&slice) }
            }
            if frame.endStream { refuse(context: context) }
        default:
            break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if responseHead != nil {
            refuse(context: context)
        } else {
            fail(WebSocketError(.handshakeFailed, "The server \(request.peerDescription) reset the HTTP/2 stream of the opening handshake"), context: context)
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(WebSocketClientHandshakeHandler.classify(error, peer: request.peerDescription), context: context)
    }

    private func fail(_ error: WebSocketError, context: ChannelHandlerContext, response: WebSocketClient.HTTPResponse? = nil) {
        guard !done else { return }
        done = true
        promise.fail(WebSocketClient.HandshakeFailure(error: error, response: response))
        context.close(promise: nil)
    }

    /// A final answer other than 200, complete: the server refused.
    private func refuse(context: ChannelHandlerContext) {
        guard let head = responseHead else { return }
        if case .failed(let error, let response) = request.offer(key: "").validateHTTP2(head, body: body, endStream: true) {
            fail(error, context: context, response: response)
        }
    }

    /// A 2xx answer: carries out ``WebSocketClientHandshake``'s verdict on it.
    private func accept(_ head: HTTPResponseHead, endStream: Bool, context: ChannelHandlerContext) {
        let chosen: String?
        let codecs: [any WebSocketExtensionCodec]
        switch request.offer(key: "").validateHTTP2(head, endStream: endStream) {
        case .accepted(let `protocol`, let extensions): (chosen, codecs) = (`protocol`, extensions)
        case .failed(let error, let response): return fail(error, context: context, response: response)
        }
        done = true
        var options = request.options
        options.isHTTP2Stream = true
        let channel = context.channel
        let connection = WebSocketConnection(
            channel: channel, role: .client, options: options, protocol: chosen,
            extensions: codecs.map(\.negotiated),
            remoteAddress: (channel.remoteAddress ?? channel.parent?.remoteAddress)?.ipAddress ?? "",
            webSocketVersion: 13, logger: request.logger, path: WebSocketLogMetadata.path(of: request.target), codecs: codecs)
        let pipeline = context.pipeline.syncOperations
        do {
            try pipeline.addHandlers([WebSocketHTTP2StreamBridge(closeTimeout: options.closeTimeout), connection.channelHandler])
        } catch {
            promise.fail(WebSocketClient.HandshakeFailure(error: WebSocketError(.handshakeFailed, "Could not set up the connection: \(error)"), response: nil))
            context.close(promise: nil)
            return
        }
        promise.succeed(connection)
        pipeline.removeHandler(context: context, promise: nil)
    }
}
