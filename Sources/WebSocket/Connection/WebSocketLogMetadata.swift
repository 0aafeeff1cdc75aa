import Logging
import NIOConcurrencyHelpers

/// The metadata keys of every log line about a connection.
///
/// Each line the library logs about a connection, an opening handshake or a connection attempt
/// carries all four keys, so that a log aggregator can follow one connection from its request to
/// its close, whatever the level and the message:
///
/// | key | value |
/// | --- | --- |
/// | `websocket.connection_id` | ``WebSocketConnection/id`` (the same as its ``WebSocketRequest/id``) |
/// | `websocket.remote_address` | the peer's address: ``WebSocketConnection/remoteAddress``; for a client's attempt that has no connection yet, the URL's `host:port` |
/// | `websocket.path` | the request's path, without the query (which may hold tokens) |
/// | `websocket.protocol` | the subprotocol chosen, lower-cased |
///
/// A value not known (yet) is the empty string: the subprotocol when none was chosen, the
/// connection id of a client's attempt that failed before it had a connection, the path of an
/// HTTP/2 stream error before its request was read. ``WebSocketConnection/logger`` carries
/// these keys, so the lines an application logs through it carry them too.
public enum WebSocketLogMetadata {
    /// `websocket.connection_id`: the connection's number in this process.
    public static let connectionID = "websocket.connection_id"
    /// `websocket.remote_address`: the peer's address.
    public static let remoteAddress = "websocket.remote_address"
    /// `websocket.path`: the path of the request, without its query.
    public static let path = "websocket.path"
    /// `websocket.protocol`: the subprotocol chosen (empty when none was).
    public static let `protocol` = "websocket.protocol"
    /// The four keys, in the order above.
    public static let keys = [connectionID, remoteAddress, path, `protocol`]

    /// The metadata of a line about a connection (values not known: empty).
    static func metadata(id: UInt64?, remoteAddress: String, path: String, protocol: String?) -> Logger.Metadata {
        [
            Self.connectionID: .string(id.map { String($0) } ?? ""),
            Self.remoteAddress: .string(remoteAddress),
            Self.path: .string(path),
            Self.protocol: .string(`protocol` ?? ""),
        ]
    }

    /// `logger` with the four keys set.
    static func logger(_ logger: Logger, id: UInt64, remoteAddress: String, path: String, protocol: String?) -> Logger {
        var logger = logger
        logger[metadataKey: Self.connectionID] = .string(String(id))
        logger[metadataKey: Self.remoteAddress] = .string(remoteAddress)
        logger[metadataKey: Self.path] = .string(path)
        logger[metadataKey: Self.protocol] = .string(`protocol` ?? "")
        return logger
    }

    /// The path of a request target: up to its query or fragment.
    static func path(of target: String) -> String {
        String(target.prefix { $0 != "?" && $0 != "#" })
    }

    /// The next connection id of this process (requests and client connections draw from it).
    static func nextID() -> UInt64 {
        ids.withLockedValue { next in
            next += 1
            return next
        }
    }

    private static let ids = NIOLockedValueBox<UInt64>(0)
}
