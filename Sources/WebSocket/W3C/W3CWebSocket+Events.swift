import NIOCore

extension W3CWebSocket {
    // MARK: Event types

    /// How binary messages are handed to ``onmessage``.
    public enum BinaryType: String, Sendable, Hashable {
        /// As an array of bytes, ``MessageData/arrayBuffer(_:)`` (the default, as in the original).
        case arraybuffer
        /// As the NIO buffer received, ``MessageData/byteBuffer(_:)``, without a copy.
        case bytebuffer
    }

    /// The payload of a message event.
    public enum MessageData: Sendable, Equatable {
        /// A text message.
        case text(String)
        /// A binary message, with ``BinaryType/arraybuffer``.
        case arrayBuffer([UInt8])
        /// A binary message, with ``BinaryType/bytebuffer``.
        case byteBuffer(ByteBuffer)

        /// The text of a text message; `nil` for a binary one.
        public var text: String? {
            if case .text(let text) = self { return text }
            return nil
        }

        /// The bytes of a binary message (either binary type); `nil` for a text one.
        public var bytes: [UInt8]? {
            switch self {
            case .text: return nil
            case .arrayBuffer(let bytes): return bytes
            case .byteBuffer(let buffer): return Array(buffer.readableBytesView)
            }
        }
    }

    /// The `message` event.
    public struct MessageEvent: Sendable {
        /// The message.
        public var data: MessageData
        /// The origin of the message: the URL's scheme, host and port, as browsers give it.
        public var origin: String
    }

    /// The `close` event.
    public struct CloseEvent: Sendable, Equatable {
        /// The close code; 1006 when the connection failed or ended without a close frame.
        public var code: Int
        /// The close reason.
        public var reason: String
        /// Whether the connection ended with a closing handshake (false for code 1006).
        public var wasClean: Bool
    }

    /// The `error` event.
    public struct ErrorEvent: Sendable {
        /// What went wrong, when known.
        public var error: (any Error)?
        /// The error in words.
        public var message: String
    }
}
