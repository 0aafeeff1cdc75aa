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
    /// The cap of the Node-style sends' queue and what a send past it meets.
    var maxSendBackpressure = 16 << 20
    var sendBackpressurePolicy = WebSocketServer.BackpressurePolicy.close(.policyViolation)
    /// The connection runs on an HTTP/2 stream (RFC 8441): socket options (watermarks, TCP
    /// keepalive) do not apply to it; the stream's flow control and the HTTP/2 connection's
    /// watermarks do.
    var isHTTP2Stream = false
}

/// The write buffer's watermarks, in bytes: when more than `high` bytes wait to be written the
/// channel is not writable (async sends wait, `W3CWebSocket.bufferedAmount` grows); `drain` fires
/// when it falls back below `low`. Default 32 KiB and 64 KiB, NIO's defaults.
///
/// The two values are checked together when made: ``init(low:high:)`` throws for a negative
/// `low` or a `low` above `high`, so a configuration never holds a pair NIO would refuse.
public struct WebSocketWriteBufferWaterMark: Sendable, Hashable {
    /// The low watermark (default 32 KiB).
    public private(set) var low: Int
    /// The high watermark (default 64 KiB).
    public private(set) var high: Int

    /// NIO's default watermarks: 32 KiB and 64 KiB.
    public init() {
        self.low = 32 * 1024
        self.high = 64 * 1024
    }

    /// Watermarks of `low` and `high` bytes; throws ``WebSocketError/Code-swift.struct/invalidArgument``
    /// unless `0 <= low <= high`.
    public init(low: Int, high: Int) throws(WebSocketError) {
        guard low >= 0, low <= high else {
            throw WebSocketError(
                .invalidArgument,
                "Write buffer watermarks low=\(low) high=\(high) are invalid: low must be at least 0 and at most high")
        }
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
    /// The longest time the library schedules anything for: about 100 years. Longer durations
    /// (a `keepaliveInterval` of `.seconds(.max)`, say) mean "never" and are cut to this, so that
    /// no arithmetic on deadlines overflows.
    static let longest = TimeAmount.hours(24 * 365 * 100)

    /// `duration` in nanoseconds, saturating: negative durations become zero, durations over
    /// ``longest`` become ``longest``.
    init(scheduling duration: Duration) {
        let (seconds, attoseconds) = duration.components
        if seconds < 0 || (seconds == 0 && attoseconds < 0) {
            self = .zero
        } else if seconds >= TimeAmount.longest.nanoseconds / 1_000_000_000 {
            self = TimeAmount.longest
        } else {
            self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
        }
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
    var maxSendBackpressure: Int { get }
    var sendBackpressurePolicy: WebSocketServer.BackpressurePolicy { get }
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
            closeTimeout: TimeAmount(scheduling: closeTimeout),
            keepalive: keepalive,
            keepaliveInterval: TimeAmount(scheduling: keepaliveInterval),
            dropConnectionOnKeepaliveTimeout: dropConnectionOnKeepaliveTimeout,
            keepaliveGracePeriod: TimeAmount(scheduling: keepaliveGracePeriod),
            useNativeKeepalive: useNativeKeepalive,
            writeBufferWaterMark: writeBufferWaterMark,
            maxSendBackpressure: maxSendBackpressure,
            sendBackpressurePolicy: sendBackpressurePolicy)
    }

    /// permessage-deflate first, then `extensions`.
    var negotiators: [any WebSocketExtensionNegotiator] {
        (perMessageDeflate.map { [PerMessageDeflate($0)] } ?? []) + extensions
    }
}
