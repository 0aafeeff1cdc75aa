/// Close status codes (RFC 6455 §7.4) under the names WebSocket-Node gives them, with their
/// default descriptions.
public enum WebSocketCloseReason {
    /// 1000: the purpose of the connection has been fulfilled.
    public static let normal = 1000
    /// 1001: an endpoint is going away (server shutdown, page navigation).
    public static let goingAway = 1001
    /// 1002: a protocol error.
    public static let protocolError = 1002
    /// 1003: a data type the endpoint cannot accept.
    public static let unprocessableInput = 1003
    /// 1004: reserved, undefined meaning.
    public static let reserved = 1004
    /// 1005: no status code was present (never sent on the wire).
    public static let notProvided = 1005
    /// 1006: the connection closed without a close frame (never sent on the wire).
    public static let abnormal = 1006
    /// 1007: data inconsistent with the message type (invalid UTF-8 in a text message).
    public static let invalidData = 1007
    /// 1008: a message violates the endpoint's policy.
    public static let policyViolation = 1008
    /// 1009: a message too big to process.
    public static let messageTooBig = 1009
    /// 1010: the client expected an extension the server did not negotiate.
    public static let extensionRequired = 1010
    /// 1011: the server met an unexpected condition.
    public static let internalServerError = 1011
    /// 1012: the service is restarting.
    public static let serviceRestart = 1012
    /// 1013: try again later.
    public static let tryAgainLater = 1013
    /// 1014: a gateway or proxy received an invalid response.
    public static let badGateway = 1014
    /// 1015: the TLS handshake failed (never sent on the wire).
    public static let tlsHandshakeFailed = 1015

    /// The default description for a code, as WebSocket-Node's `CLOSE_DESCRIPTIONS`;
    /// "Unknown close code" for others.
    public static func description(for code: Int) -> String {
        switch code {
        case 1000: return "Normal connection closure"
        case 1001: return "Remote peer is going away"
        case 1002: return "Protocol error"
        case 1003: return "Unprocessable input"
        case 1004: return "Reserved"
        case 1005: return "Reason not provided"
        case 1006: return "Abnormal closure, no further detail available"
        case 1007: return "Invalid data received"
        case 1008: return "Policy violation"
        case 1009: return "Message too big"
        case 1010: return "Extension requested by client is required"
        case 1011: return "Internal Server Error"
        case 1012: return "Service restart"
        case 1013: return "Try again later"
        case 1014: return "Bad gateway"
        case 1015: return "TLS Handshake Failed"
        default: return "Unknown close code"
        }
    }

    /// The most bytes of UTF-8 a close frame's description can carry (125 less the 2-byte code).
    public static let maxDescriptionBytes = 123

    /// `description` cut to at most ``maxDescriptionBytes`` bytes of UTF-8 at the last whole
    /// character that fits (never inside a multi-byte character, which would make the frame's
    /// text invalid UTF-8 and so, in the past, empty).
    public static func truncatedDescription(_ description: String, maxBytes: Int = maxDescriptionBytes) -> String {
        if description.utf8.count <= maxBytes { return description }
        var bytes = 0
        var end = description.startIndex
        for index in description.indices {
            let next = description.index(after: index)
            let size = description[index..<next].utf8.count
            if bytes + size > maxBytes { break }
            bytes += size
            end = next
        }
        return String(description[..<end])
    }

    /// Whether `code` may appear in a close frame on the wire (RFC 6455 §7.4 and the IANA
    /// registry): 1000-1003, 1007-1014, and the application ranges 3000-4999. 1004, 1005,
    /// 1006 and 1015 are reserved and never sent.
    public static func isValidOnWire(_ code: Int) -> Bool {
        switch code {
        case 1000...1003, 1007...1014, 3000...4999: return true
        default: return false
        }
    }
}

/// A protocol violation by the peer, with the close code to fail the connection with.
public struct WebSocketProtocolError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The close code the connection is failed with (1002, 1007 or 1009).
    public var closeCode: Int
    /// What the peer did wrong, in words a person can act on.
    public var reason: String

    /// An error that fails the connection with `closeCode`, saying `reason`.
    public init(_ closeCode: Int, _ reason: String) {
        self.closeCode = closeCode
        self.reason = reason
    }

    init(_ code: CloseCodeKind, _ reason: String) {
        self.init(code.rawValue, reason)
    }

    enum CloseCodeKind: Int {
        case protocolError = 1002
        case invalidData = 1007
        case messageTooBig = 1009
    }

    public var description: String { "WebSocket protocol error \(closeCode): \(reason)" }
}
