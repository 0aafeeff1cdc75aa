import NIOHTTP1

/// An error from a WebSocket operation, with a message a person can act on.
///
/// A struct around a private code so that new cases never break users; compare with the static
/// members (`error.code == .notConnected`).
public struct WebSocketError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A stable identifier of the kind of error.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        let raw: String
        /// The connection is closing or closed; nothing more can be sent.
        public static let notConnected = Code(raw: "notConnected")
        /// A ping, pong or close payload over the 125 bytes a control frame may carry.
        public static let controlFrameTooLarge = Code(raw: "controlFrameTooLarge")
        /// A close code that may not be sent on the wire.
        public static let invalidCloseCode = Code(raw: "invalidCloseCode")
        /// The peer broke the protocol (the connection was failed with a close code).
        public static let protocolViolation = Code(raw: "protocolViolation")
        /// The opening handshake failed (client side: see the message for the cause).
        public static let handshakeFailed = Code(raw: "handshakeFailed")
        /// A URL that cannot be connected to.
        public static let invalidURL = Code(raw: "invalidURL")
        /// A TCP connection could not be established (refused, unreachable, DNS).
        public static let connectionFailed = Code(raw: "connectionFailed")
        /// An operation did not finish within its time limit.
        public static let timeout = Code(raw: "timeout")
        /// The operation was cancelled (for example by `abort()`).
        public static let aborted = Code(raw: "aborted")
        /// The connection was accepted or rejected already.
        public static let alreadyDecided = Code(raw: "alreadyDecided")
        /// An argument that is not acceptable (see the message).
        public static let invalidArgument = Code(raw: "invalidArgument")
        /// Client: the server's host name could not be resolved (DNS).
        public static let dnsFailed = Code(raw: "dnsFailed")
        /// Client: the server (or proxy) refused the TCP connection.
        public static let connectionRefused = Code(raw: "connectionRefused")
        /// Client: the TLS handshake failed (untrusted or mismatched certificate, protocol error).
        public static let tlsFailed = Code(raw: "tlsFailed")
        /// Client: the server answered the upgrade request with a status other than 101.
        public static let unexpectedStatus = Code(raw: "unexpectedStatus")
        /// Client: the server's `Sec-WebSocket-Accept` does not match the key sent.
        public static let invalidAcceptKey = Code(raw: "invalidAcceptKey")
        /// Client: the server chose a subprotocol the client did not offer.
        public static let protocolNotOffered = Code(raw: "protocolNotOffered")
        /// Client: the server accepted an extension the client did not offer.
        public static let extensionNotOffered = Code(raw: "extensionNotOffered")
        /// Client: the HTTP proxy refused or failed the `CONNECT` request.
        public static let proxyFailed = Code(raw: "proxyFailed")
        /// A second iterator over a sequence that allows one (``WebSocketConnection/messages``).
        public static let alreadyIterating = Code(raw: "alreadyIterating")
        /// The cluster's broker cannot take a publication (its store is unreachable and its
        /// queue is full, or it is not running); nothing was published.
        public static let brokerUnavailable = Code(raw: "brokerUnavailable")
        /// Client: reconnecting by itself (``WebSocketClient/Configuration/reconnect``) ended
        /// without a connection: `maxAttempts` attempts failed in a row, or one failed with an
        /// error that does not reconnect. The message names the URLs and the last error.
        public static let reconnectFailed = Code(raw: "reconnectFailed")
        /// A Node-style send was refused: the peer reads too slowly and the connection's send
        /// buffer holds ``WebSocketServer/Configuration/maxSendBackpressure`` bytes already
        /// (with ``WebSocketServer/Configuration/sendBackpressurePolicy`` `.skip`). The message
        /// was not sent; the connection stays open.
        public static let backpressure = Code(raw: "backpressure")
        public var description: String { raw }
    }

    /// What kind of error this is.
    public var code: Code
    /// What happened, in words.
    public var message: String
    /// The server's answer, when the error is a refused opening handshake
    /// (``WebSocketError/Code/unexpectedStatus``): its status, headers and
    /// `X-WebSocket-Reject-Reason`. `nil` for every other error.
    public var response: HTTPResponseInfo?

    /// Creates an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// Creates an error that carries the server's answer (see ``response``).
    public init(_ code: Code, _ message: String, response: HTTPResponseInfo?) {
        self.code = code
        self.message = message
        self.response = response
    }

    /// A server's answer to an opening handshake it refused, as typed fields: what a client
    /// needs to act on a refusal without parsing ``WebSocketError/message``.
    ///
    /// The body is not kept here; ``WebSocketClient/onHttpResponse(_:)`` gives it (up to 64 KiB).
    public struct HTTPResponseInfo: Sendable, Equatable {
        /// The status code, e.g. 403. Over HTTP/2, the `:status`.
        public var statusCode: Int
        /// The reason phrase, e.g. `Forbidden` (over HTTP/2, which sends none, the standard
        /// phrase for the code).
        public var statusMessage: String
        /// The response headers (over HTTP/2, without the `:status` pseudo-header).
        public var headers: HTTPHeaders

        /// The `X-WebSocket-Reject-Reason` header, the reason a WebSocket-Node style server
        /// gave to `reject(status:reason:)`; `nil` if the answer has none.
        public var rejectReason: String? { headers.first(name: "X-WebSocket-Reject-Reason") }

        /// Creates the fields of a response.
        public init(statusCode: Int, statusMessage: String, headers: HTTPHeaders) {
            self.statusCode = statusCode
            self.statusMessage = statusMessage
            self.headers = headers
        }

        /// The fields of `head`.
        init(_ head: HTTPResponseHead) {
            self.init(statusCode: Int(head.status.code), statusMessage: head.status.reasonPhrase, headers: head.headers)
        }
    }

    public var description: String { message }
}
