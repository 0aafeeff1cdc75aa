/// A close status code (RFC 6455 §7.4) as a value with named constants: `.normal`,
/// `.goingAway`, `.protocolError`, … An integer literal works too (`4000`), so every API that
/// takes one accepts both forms, and the Node-style `Int` constants
/// (``WebSocketConnection/CLOSE_REASON_NORMAL``, ``WebSocketCloseReason``) stay.
///
/// A struct rather than an enum, so codes outside the list (the 3000-4999 application range)
/// are values like the others and new registry entries never break a `switch`.
public struct WebSocketCloseCode: RawRepresentable, Hashable, Sendable, ExpressibleByIntegerLiteral, CustomStringConvertible {
    /// The code's number.
    public var rawValue: Int

    /// The code `rawValue`.
    public init(rawValue: Int) { self.rawValue = rawValue }

    /// The code `value`.
    public init(_ value: Int) { self.rawValue = value }

    /// The code of an integer literal.
    public init(integerLiteral value: Int) { self.rawValue = value }

    /// 1000: the purpose of the connection has been fulfilled.
    public static let normal = WebSocketCloseCode(1000)
    /// 1001: an endpoint is going away (server shutdown, page navigation).
    public static let goingAway = WebSocketCloseCode(1001)
    /// 1002: a protocol error.
    public static let protocolError = WebSocketCloseCode(1002)
    /// 1003: a data type the endpoint cannot accept.
    public static let unprocessableInput = WebSocketCloseCode(1003)
    /// 1005: no status code was present (reported, never sent).
    public static let notProvided = WebSocketCloseCode(1005)
    /// 1006: the connection closed without a close frame (reported, never sent).
    public static let abnormal = WebSocketCloseCode(1006)
    /// 1007: data inconsistent with the message type (invalid UTF-8 in a text message).
    public static let invalidData = WebSocketCloseCode(1007)
    /// 1008: a message violates the endpoint's policy.
    public static let policyViolation = WebSocketCloseCode(1008)
    /// 1009: a message too big to process.
    public static let messageTooBig = WebSocketCloseCode(1009)
    /// 1010: the client expected an extension the server did not negotiate.
    public static let extensionRequired = WebSocketCloseCode(1010)
    /// 1011: the server met an unexpected condition.
    public static let internalServerError = WebSocketCloseCode(1011)
    /// 1012: the service is restarting.
    public static let serviceRestart = WebSocketCloseCode(1012)
    /// 1013: try again later.
    public static let tryAgainLater = WebSocketCloseCode(1013)
    /// 1014: a gateway or proxy received an invalid response.
    public static let badGateway = WebSocketCloseCode(1014)
    /// 1015: the TLS handshake failed (reported, never sent).
    public static let tlsHandshakeFailed = WebSocketCloseCode(1015)

    /// Whether the code may be sent in a close frame (see ``WebSocketCloseReason/isValidOnWire(_:)``).
    public var isValidOnWire: Bool { WebSocketCloseReason.isValidOnWire(rawValue) }

    /// The default description, as WebSocket-Node's `CLOSE_DESCRIPTIONS`.
    public var defaultDescription: String { WebSocketCloseReason.description(for: rawValue) }

    /// The number and its default description, e.g. `1000 (Normal connection closure)`.
    public var description: String { "\(rawValue) (\(defaultDescription))" }
}
