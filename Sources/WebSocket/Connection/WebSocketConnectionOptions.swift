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
