#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

extension WebSocketClient {
    /// How a client reconnects by itself when a connection it opened ends (not in
    /// WebSocket-Node): ``WebSocketClient/Configuration/reconnect``, `nil` (off) by default.
    ///
    /// When a connection opened by `connect` closes with a code that reconnects (1006 when the
    /// server's node died, 1001 when it shut down, 1011–1014), the client waits a backoff delay
    /// and connects again, to the next URL of the list (the one given to `connect`, then
    /// ``urls``, round and round), with the same subprotocols, headers and options. Failed
    /// attempts that reconnect (refused, reset, timed out, 5xx) are followed by longer delays,
    /// up to ``maxDelay``; each is announced by ``WebSocketClient/onReconnecting(_:)``. When one
    /// succeeds, the `connect` handlers run again with the new connection (so the application
    /// subscribes again there), then ``WebSocketClient/onReconnected(_:)``.
    ///
    /// It never reconnects after the application's own `close()` or `drop()` of the connection,
    /// nor after ``WebSocketClient/stopReconnecting()``. After ``maxAttempts`` failed attempts in
    /// a row, or an error that does not reconnect, `connectFailed` gets a ``WebSocketError``
    /// with code ``WebSocketError/Code-swift.struct/reconnectFailed`` and the last error in its
    /// message, and the client stops trying.
    ///
    /// The first connection is retried the same way (``retriesFirstConnection``, on by default)
    /// when it is made by `connect(_:)` (the Node-style form) or
    /// ``WebSocketClient/connections(to:protocols:origin:headers:requestOptions:)``: a client
    /// started before its server waits for it. `try await connect(url:)`, which returns one
    /// connection, always makes one attempt and throws its error.
    ///
    /// ```swift
    /// var configuration = WebSocketClient.Configuration()
    /// configuration.reconnect = WebSocketClient.ReconnectPolicy(
    ///     urls: ["ws://node-b:8080/feed", "ws://node-c:8080/feed"], maxDelay: .seconds(10))
    /// ```
    public struct ReconnectPolicy: Sendable {
        /// URLs tried in turn after the one given to `connect` (which is left out here if it
        /// is listed too): the other nodes of a cluster. After a connection to one URL ends,
        /// the first attempt goes to the next one. Default none: always the same URL.
        public var urls: [String]
        /// The delay before the first attempt after a connection ended, or after the first
        /// connection failed (before jitter).
        /// Default 1 s: long enough that a node's clients do not all land on the next node in
        /// the same instant, short enough that a failover feels quick.
        public var initialDelay: Duration
        /// The longest delay between attempts (the cap of the exponential growth); jitter
        /// only shortens a delay, so none is ever longer. Default 30 s.
        public var maxDelay: Duration
        /// The factor each failed attempt multiplies the delay by (at least 1). Default 2.
        public var multiplier: Double
        /// The fraction of each delay that is random, from 0 (none) to 1: a delay `d` becomes a
        /// value drawn uniformly from `d × (1 − jitter)` up to `d`, so that the clients of a
        /// node that died spread their attempts. Default 0.5.
        public var jitter: Double
        /// How many failed attempts in a row end the reconnection (with `connectFailed`,
        /// ``WebSocketError/Code-swift.struct/reconnectFailed``); `nil` (default) tries forever.
        /// The count starts again each time a connection opens.
        public var maxAttempts: Int?
        /// Whether a first connection that fails is retried like a reconnection (default
        /// `true`): with `connect(_:)` (the Node-style form) and
        /// ``WebSocketClient/connections(to:protocols:origin:headers:requestOptions:)``, an attempt
        /// that fails with a cause that reconnects (the server refused the connection, is not
        /// up yet, answered 503) is followed by `reconnecting` and the backoff, to the next URL,
        /// as after a lost connection; `connectFailed` (or the sequence's error) comes only when
        /// ``maxAttempts`` retries have failed (``WebSocketError/Code-swift.struct/reconnectFailed``).
        /// An error that does not reconnect (a bad URL, a 403, a TLS failure) still fails the
        /// first attempt as is.
        ///
        /// On by default because a policy says "keep me connected", and a client that starts
        /// before its server (containers, services started in any order, a node restarting) is
        /// the common case: Python `websockets`' reconnecting `async for websocket in
        /// connect(uri)` retries its first attempt too. Set it to `false` to fail fast on a
        /// wrong address. `try await connect(url:)`, which hands back one connection, always
        /// makes one attempt (as Python's `await connect(uri)` does).
        public var retriesFirstConnection: Bool
        /// Decides whether a cause leads to another attempt: a connection that closed
        /// (``ReconnectCause/closed(code:description:)``) or an attempt that failed
        /// (``ReconnectCause/failed(_:)``). Default ``reconnectsByDefault(_:)``. Whatever it
        /// says, the application's own close never reconnects.
        public var shouldReconnect: @Sendable (ReconnectCause) -> Bool

        /// Creates a policy; every parameter has the default documented on its property.
        public init(
            urls: [String] = [],
            initialDelay: Duration = .seconds(1),
            maxDelay: Duration = .seconds(30),
            multiplier: Double = 2,
            jitter: Double = 0.5,
            maxAttempts: Int? = nil,
            retriesFirstConnection: Bool = true,
            shouldReconnect: @escaping @Sendable (ReconnectCause) -> Bool = ReconnectPolicy.reconnectsByDefault
        ) {
            self.urls = urls
            self.initialDelay = initialDelay
            self.maxDelay = maxDelay
            self.multiplier = multiplier
            self.jitter = jitter
            self.maxAttempts = maxAttempts
            self.retriesFirstConnection = retriesFirstConnection
            self.shouldReconnect = shouldReconnect
        }

        /// The close codes that reconnect by default: 1001 (going away: the server shut
        /// down), 1006 (the connection died without a close frame: a node killed, a reset),
        /// 1011 (server error), 1012 (service restart), 1013 (try again later) and 1014 (bad
        /// gateway). Not 1000 (a normal close), nor the codes that say the client is at fault
        /// (1002, 1003, 1007, 1008, 1009, 1010): another attempt would end the same way.
        public static let reconnectingCloseCodes: Set<Int> = [1001, 1006, 1011, 1012, 1013, 1014]

        /// The connect errors that reconnect by default: the server could not be reached or
        /// went away during the handshake (`.connectionRefused`, `.connectionFailed`,
        /// `.timeout`, `.dnsFailed`, `.handshakeFailed`), and a refusal with status 429 or 5xx
        /// (`.unexpectedStatus`: a proxy or load balancer in front of a node that is down).
        /// Not a bad URL or argument, a TLS failure, another status (a 403 stays a 403), or
        /// an abort.
        public static let reconnectingErrorCodes: Set<WebSocketError.Code> = [
            .connectionRefused, .connectionFailed, .timeout, .dnsFailed, .handshakeFailed,
        ]

        /// The default ``shouldReconnect``: a close with one of ``reconnectingCloseCodes``, or
        /// a failure with one of ``reconnectingErrorCodes`` or a refusal with status 429 or 5xx.
        /// Call it from a policy of your own to extend it.
        public static func reconnectsByDefault(_ cause: ReconnectCause) -> Bool {
            switch cause {
            case .closed(let code, _):
                return reconnectingCloseCodes.contains(code)
            case .failed(let error):
                if error.code == .unexpectedStatus, let status = error.response?.statusCode {
                    return status == 429 || (500...599).contains(status)
                }
                return reconnectingErrorCodes.contains(error.code)
            }
        }

        /// The delay before attempt number `attempt` (1 for the first after a connection
        /// ended): `initialDelay × multiplier^(attempt − 1)`, capped at `maxDelay`, then
        /// shortened by up to `jitter` of itself, by `random` (0 keeps it whole, 1 takes the
        /// whole `jitter` off). A pure function: the client passes a uniform random number
        /// from [0, 1).
        public func delay(forAttempt attempt: Int, random: Double) -> Duration {
            let initial = Self.nanoseconds(initialDelay)
            let cap = Self.nanoseconds(maxDelay)
            let grown = initial * pow(multiplier, Double(max(0, attempt - 1)))
            let base = grown.isNaN ? cap : min(cap, grown)
            let delay = base * (1 - min(max(jitter, 0), 1) * min(max(random, 0), 1))
            return .nanoseconds(Int64(max(0, delay).rounded()))
        }

        /// ``delay(forAttempt:random:)`` with the random number drawn from `generator`.
        public func delay(forAttempt attempt: Int, using generator: inout some RandomNumberGenerator) -> Duration {
            delay(forAttempt: attempt, random: Double.random(in: 0..<1, using: &generator))
        }

        private static func nanoseconds(_ duration: Duration) -> Double {
            let (seconds, attoseconds) = duration.components
            return Double(seconds) * 1e9 + Double(attoseconds) / 1e9
        }

        /// Throws ``WebSocketError/Code-swift.struct/invalidArgument`` for a value the
        /// reconnection cannot work with.
        func validate() throws {
            func fail(_ message: String) -> WebSocketError {
                WebSocketError(.invalidArgument, "Configuration.reconnect: " + message)
            }
            guard initialDelay >= .zero else { throw fail("initialDelay must not be negative (it is \(initialDelay))") }
            guard maxDelay >= initialDelay else {
                throw fail("maxDelay (\(maxDelay)) must be at least initialDelay (\(initialDelay))")
            }
            guard multiplier >= 1, multiplier.isFinite else {
                throw fail("multiplier must be a finite number of at least 1 (it is \(multiplier))")
            }
            guard (0...1).contains(jitter) else { throw fail("jitter must be between 0 and 1 (it is \(jitter))") }
            if let maxAttempts, maxAttempts < 1 {
                throw fail("maxAttempts must be at least 1, or nil to try forever (it is \(maxAttempts)); to turn reconnection off, set reconnect to nil")
            }
            for url in urls {
                do {
                    _ = try WebSocketURL(url)
                } catch let error as WebSocketError {
                    throw fail("the URL \"\(url)\" in urls cannot be used: \(error.message)")
                }
            }
        }
    }

    /// Why the client reconnects (or would): what ``ReconnectPolicy/shouldReconnect`` decides
    /// on, and what ``ReconnectAttempt/cause`` reports.
    public enum ReconnectCause: Sendable, Equatable, CustomStringConvertible {
        /// An open connection closed, with this code and description (1006 when the socket
        /// died without a close frame).
        case closed(code: Int, description: String)
        /// A reconnection attempt failed with this error.
        case failed(WebSocketError)

        /// The cause in words, e.g. `the connection closed with 1006 (Connection dropped)`.
        public var description: String {
            switch self {
            case .closed(let code, let description):
                return "the connection closed with \(code)" + (description.isEmpty ? "" : " (\(description))")
            case .failed(let error):
                return "the attempt failed: \(error.message)"
            }
        }
    }

    /// A reconnection attempt the client has scheduled: the argument of
    /// ``WebSocketClient/onReconnecting(_:)``.
    public struct ReconnectAttempt: Sendable, Equatable {
        /// The attempt's number since the last open connection (or, before the first
        /// connection, since the first attempt): 1, 2, …
        public var number: Int
        /// How long the client waits before it connects (jitter included).
        public var delay: Duration
        /// The URL it connects to.
        public var url: String
        /// What ended the connection, or made the previous attempt (the first connection's
        /// included) fail.
        public var cause: ReconnectCause

        /// Creates the value.
        public init(number: Int, delay: Duration, url: String, cause: ReconnectCause) {
            self.number = number
            self.delay = delay
            self.url = url
            self.cause = cause
        }
    }
}
