import NIOCore
import NIOHTTP2

/// Carries a WebSocket over one HTTP/2 stream (RFC 8441 §5): DATA frames in, bytes out to the
/// connection's handler and back, and the stream's END_STREAM for TCP's FIN.
///
/// The connection's handler above it is the same as over TCP; this bridge translates what it
/// does to a socket into what an HTTP/2 stream can do:
/// - a write becomes a DATA frame (NIO splits it to the peer's frame size and flow-control
///   window, and the stream's writability follows that window, so `drain`, `bufferedAmount`
///   and async sends feel HTTP/2 flow control as they feel a full socket);
/// - `close(mode: .output)` (failing the connection) sends END_STREAM;
/// - `close()` sends END_STREAM and lets the stream end when the peer's END_STREAM arrives,
///   with a RST_STREAM(CANCEL) after `closeTimeout` for a peer that never sends it;
/// - the peer's END_STREAM is answered with ours, which ends the stream (the analogue of the
///   socket closing on EOF).
///
/// Closing a WebSocket therefore ends its stream only, never the shared HTTP/2 connection.
final class WebSocketHTTP2StreamBridge: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = HTTP2Frame.FramePayload

    private let closeTimeout: TimeAmount
    private var sentEndStream = false
    private var receivedEndStream = false
    private var closing = false
    private var closeTimer: Scheduled<Void>?

    init(closeTimeout: TimeAmount) {
        self.closeTimeout = closeTimeout
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .data(let payload):
            if case .byteBuffer(let bytes) = payload.data, bytes.readableBytes > 0 {
                context.fireChannelRead(wrapInboundOut(bytes))
            }
            if payload.endStream {
                receivedEndStream = true
                // The peer is done sending: end our side too, which ends the stream.
                sendEndStream(context: context, promise: nil)
            }
        case .headers(let headers):
            // Trailers (allowed, meaningless here); END_STREAM on them counts all the same.
            if headers.endStream {
                receivedEndStream = true
                sendEndStream(context: context, promise: nil)
            }
        default:
            // RST_STREAM, WINDOW_UPDATE, PRIORITY: the stream channel acts on them itself.
            break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        closeTimer?.cancel()
        context.fireChannelInactive()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let bytes = unwrapOutboundIn(data)
        guard !sentEndStream else {
            promise?.fail(ChannelError.outputClosed)
            return
        }
        context.write(wrapOutboundOut(.data(.init(data: .byteBuffer(bytes)))), promise: promise)
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        switch mode {
        case .output:
            sendEndStream(context: context, promise: promise)
        case .input:
            promise?.fail(ChannelError.operationUnsupported)
        case .all:
            if closing || receivedEndStream && sentEndStream {
                // A second close (the connection's own close timer), or nothing left to wait for.
                context.close(mode: .all, promise: promise)
                return
            }
            closing = true
            if let promise { context.channel.closeFuture.cascade(to: promise) }
            sendEndStream(context: context, promise: nil)
            if !receivedEndStream {
                closeTimer = context.eventLoop.assumeIsolated().scheduleTask(in: closeTimeout) {
                    context.close(promise: nil)
                }
            }
        }
    }

    private func sendEndStream(context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        guard !sentEndStream else {
            promise?.succeed(())
            return
        }
        sentEndStream = true
        context.writeAndFlush(wrapOutboundOut(.data(.init(data: .byteBuffer(ByteBuffer()), endStream: true))), promise: promise)
    }
}
