import NIOCore

/// A complete message received from (or sent to) the peer: the `message` event's payload.
///
/// Node's `{ type: "utf8", utf8Data }` / `{ type: "binary", binaryData }` becomes an enum with
/// the same accessors.
public enum WebSocketMessage: Sendable, Equatable {
    /// A text message.
    case utf8(String)
    /// A binary message.
    case binary(ByteBuffer)

    /// The kind of a message, named as in WebSocket-Node.
    public enum MessageType: String, Sendable {
        case utf8
        case binary
    }

    /// `"utf8"` or `"binary"`, as Node's `message.type`.
    public var type: MessageType {
        switch self {
        case .utf8: return .utf8
        case .binary: return .binary
        }
    }

    /// The text of a text message; `nil` for a binary one.
    public var utf8Data: String? {
        if case .utf8(let string) = self { return string }
        return nil
    }

    /// The payload of a binary message; `nil` for a text one.
    public var binaryData: ByteBuffer? {
        if case .binary(let buffer) = self { return buffer }
        return nil
    }
}
