import NIOCore

/// The settings one connection runs with, taken from the server's or the client's configuration.
struct WebSocketConnectionOptions: Sendable {
    var maxReceivedFrameSize: Int
    var maxReceivedMessageSize: Int
    var maxFragmentsPerMessage: Int
    var fragmentOutgoingMessages: Bool
    var fragmentationThreshold: Int
    var assembleFragments: Bool
    var closeTimeout: TimeAmount
    var keepalive: Bool
    var keepaliveInterval: TimeAmount
    var dropConnectionOnKeepaliveTimeout: Bool
    var keepaliveGracePeriod: TimeAmount
    var useNativeKeepalive: Bool
    /// The write buffer's low and high watermarks: `drain` fires when it falls below the low one
    /// after exceeding the high one.
    var writeBufferWaterMark = WebSocketWriteBufferWaterMark()
    /// The connection runs on an HTTP/2 stream (RFC 8441): socket options (watermarks, TCP
    /// keepalive) do not apply to it; the stream's flow control and the HTTP/2 connection's
    /// watermarks do.
    var isHTTP2Stream = false
}

/// The write buffer's watermarks, in bytes: when more than `high` bytes wait to be written the
/// channel is not writable (async sends wait, `W3CWebSocket.bufferedAmount` grows); `drain` fires
/// when it falls back below `low`. Default 32 KiB and 64 KiB, NIO's defaults.
public struct WebSocketWriteBufferWaterMark: Sendable, Hashable {
    /// The low watermark.
    public var low: Int
    /// The high watermark.
    public var high: Int

    /// Watermarks of `low` and `high` bytes (`low` ≤ `high`).
    public init(low: Int = 32 * 1024, high: Int = 64 * 1024) {
        precondition(low >= 0 && low <= high, "the low watermark must be between 0 and the high one")
        self.low = low
        self.high = high
    }
}

/// Which end of the connection this is.
public enum WebSocketRole: Sendable, Hashable {
    /// The end that accepted the connection; it receives masked frames and sends plain ones.
    case server
    /// The end that opened the connection; it masks every frame it sends.
    case client
}

extension TimeAmount {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}

/// The options the server's and the client's configurations share, under the original's names;
/// both turn them into one connection's ``WebSocketConnectionOptions`` the same way.
protocol WebSocketConnectionSettings {
    var maxReceivedFrameSize: Int { get }
    var maxReceivedMessageSize: Int { get }
    var maxFragmentsPerMessage: Int { get }
    var fragmentOutgoingMessages: Bool { get }
    var fragmentationThreshold: Int { get }
    var assembleFragments: Bool { get }
    var closeTimeout: Duration { get }
    var keepalive: Bool { get }
    var keepaliveInterval: Duration { get }
    var dropConnectionOnKeepaliveTimeout: Bool { get }
    var keepaliveGracePeriod: Duration { get }
    var useNativeKeepalive: Bool { get }
    var writeBufferWaterMark: WebSocketWriteBufferWaterMark { get }
    var perMessageDeflate: PerMessageDeflate.Options? { get }
    var extensions: [any WebSocketExtensionNegotiator] { get }
}

extension WebSocketConnectionSettings {
    var connectionOptions: WebSocketConnectionOptions {
        WebSocketConnectionOptions(
            maxReceivedFrameSize: maxReceivedFrameSize,
            maxReceivedMessageSize: maxReceivedMessageSize,
            maxFragmentsPerMessage: maxFragmentsPerMessage,
            fragmentOutgoingMessages: fragmentOutgoingMessages,
            fragmentationThreshold: fragmentationThreshold,
            assembleFragments: assembleFragments,
            closeTimeout: TimeAmount(closeTimeout),
            keepalive: keepalive,
            keepaliveInterval: TimeAmount(keepaliveInterval),
            dropConnectionOnKeepaliveTimeout: dropConnectionOnKeepaliveTimeout,
            keepaliveGracePeriod: TimeAmount(keepaliveGracePeriod),
            useNativeKeepalive: useNativeKeepalive,
            writeBufferWaterMark: writeBufferWaterMark)
    }

    /// permessage-deflate first, then `extensions`.
    var negotiators: [any WebSocketExtensionNegotiator] {
        (perMessageDeflate.map { [PerMessageDeflate($0)] } ?? []) + extensions
    }
}
