import NIOCore

/// Opens a tunnel through an HTTP proxy: on connect it sends `CONNECT host:port`, holds back
/// `channelActive` and every write of the handlers behind it until the proxy answers 2xx, then
/// lets them through and leaves the pipeline. Any other answer fails the connection attempt.
final class WebSocketProxyConnectHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum State {
        case connecting
        case waitingForResponse
        case established
        case failed
    }

    /// The longest proxy response head accepted.
    private static let maxResponseHead = 16 * 1024

    private let target: String
    private let proxyDescription: String
    private let authorization: String?
    private let failure: (WebSocketError) -> Void
    private var state = State.connecting
    private var received = ByteBuffer()
    private var heldWrites: [(NIOAny, EventLoopPromise<Void>?)] = []
    private var heldFlush = false

    /// - Parameters:
    ///   - target: the `CONNECT` target, `host:port`.
    ///   - proxyDescription: how the proxy is named in error messages.
    ///   - authorization: the `Proxy-Authorization` value, if any.
    ///   - failure: called once (on the event loop) when the tunnel cannot be opened.
    init(target: String, proxyDescription: String, authorization: String?, failure: @escaping (WebSocketError) -> Void) {
        self.target = target
        self.proxyDescription = proxyDescription
        self.authorization = authorization
        self.failure = failure
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { sendConnect(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        sendConnect(context: context)
        // channelActive goes on once the tunnel is open.
    }

    private func sendConnect(context: ChannelHandlerContext) {
        guard state == .connecting else { return }
        state = .waitingForResponse
        var head = "CONNECT \(target) HTTP/1.1\r\nHost: \(target)\r\n"
        if let authorization { head += "Proxy-Authorization: \(authorization)\r\n" }
        head += "\r\n"
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: head)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch state {
        case .established:
            context.fireChannelRead(data)
        case .failed:
            break
        case .connecting, .waitingForResponse:
            var buffer = unwrapInboundIn(data)
            received.writeBuffer(&buffer)
            parseResponse(context: context)
        }
    }

    private func parseResponse(context: ChannelHandlerContext) {
        let view = received.readableBytesView
        guard let end = view.firstRange(of: [13, 10, 13, 10]) else {
            if received.readableBytes > Self.maxResponseHead {
                fail(context: context, "The proxy \(proxyDescription) sent a response head over \(Self.maxResponseHead) bytes")
            }
            return
        }
        let head = received.readString(length: end.upperBound - view.startIndex) ?? ""
        let statusLine = head.split(separator: "\r\n", maxSplits: 1).first.map(String.init) ?? ""
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let status = Int(parts[1]) else {
            return fail(context: context, "The proxy \(proxyDescription) sent a malformed response to CONNECT: \(statusLine)")
        }
        guard (200..<300).contains(status) else {
            var message = "The proxy \(proxyDescription) refused CONNECT \(target): \(statusLine)"
            if status == 407 {
                message += authorization == nil
                    ? " (it wants credentials: set HTTPProxy.authorization)"
                    : " (the credentials given were not accepted)"
            }
            return fail(context: context, message)
        }
        state = .established
        context.fireChannelActive()
        for (data, promise) in heldWrites { context.write(data, promise: promise) }
        heldWrites.removeAll()
        if heldFlush { context.flush() }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    func removeHandler(context: ChannelHandlerContext, removalToken: ChannelHandlerContext.RemovalToken) {
        if received.readableBytes > 0 {
            let rest = received
            received = ByteBuffer()
            context.fireChannelRead(wrapInboundOut(rest))
        }
        context.leavePipeline(removalToken: removalToken)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if state == .established {
            context.write(data, promise: promise)
        } else {
            heldWrites.append((data, promise))
        }
    }

    func flush(context: ChannelHandlerContext) {
        if state == .established { context.flush() } else { heldFlush = true }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if state == .connecting || state == .waitingForResponse {
            fail(context: context, "The proxy \(proxyDescription) closed the connection before answering CONNECT \(target)")
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if state == .connecting || state == .waitingForResponse {
            fail(context: context, "The connection to the proxy \(proxyDescription) failed: \(error)")
            return
        }
        context.fireErrorCaught(error)
    }

    private func fail(context: ChannelHandlerContext, _ message: String) {
        guard state != .failed else { return }
        state = .failed
        failure(WebSocketError(.proxyFailed, message))
        let error = WebSocketError(.proxyFailed, message)
        for (_, promise) in heldWrites { promise?.fail(error) }
        heldWrites.removeAll()
        context.close(promise: nil)
    }
}
