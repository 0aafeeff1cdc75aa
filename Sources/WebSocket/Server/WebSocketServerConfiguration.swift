import NIOCore

extension WebSocketServer {
    /// The server's options, named and defaulted as WebSocket-Node's `WebSocketServer` config.
    public struct Configuration: Sendable {
        /// The largest frame accepted; a bigger one closes the connection with 1009 before its
        /// payload is buffered. Default 64 KiB.
        public var maxReceivedFrameSize = 0x10000
        /// The largest (assembled) message accepted; beyond it the connection closes with 1009.
        /// Default 1 MiB.
        public var maxReceivedMessageSize = 0x100000
        /// The most fragments one message may have, so empty fragments cannot keep a peer's
        /// message open forever. Default 131072 (a 4 MiB message in 32-byte fragments).
        public var maxFragmentsPerMessage = 131_072
        /// Whether outgoing messages over `fragmentationThreshold` are split into frames.
        /// Default true.
        public var fragmentOutgoingMessages = true
        /// The frame size outgoing messages are split at. Default 16 KiB.
        public var fragmentationThreshold = 0x4000
        /// Whether to send pings after `keepaliveInterval` of silence. Default true.
        public var keepalive = true
        /// How long a connection may be silent before a keepalive ping. Default 20 s.
        public var keepaliveInterval: Duration = .seconds(20)
        /// Whether a peer that does not answer within `keepaliveGracePeriod` after a keepalive
        /// ping is dropped. Default true.
        public var dropConnectionOnKeepaliveTimeout = true
        /// How long after a keepalive ping has been written the peer has to send anything.
        /// Default 10 s.
        public var keepaliveGracePeriod: Duration = .seconds(10)
        /// Use TCP keepalive (SO_KEEPALIVE, idle time `keepaliveInterval`) instead of pings.
        /// Default false.
        public var useNativeKeepalive = false
        /// Whether fragmented messages are assembled into one `message` event; when false,
        /// each frame is a `frame` event. Default true.
        public var assembleFragments = true
        /// Whether connections are accepted at once (first requested protocol, any origin)
        /// without a `request` event. Default false: decide in `onRequest`.
        public var autoAcceptConnections = false
        /// How long `close()` waits for the peer's close frame before closing the socket.
        /// Default 5 s.
        public var closeTimeout: Duration = .seconds(5)
        /// Whether Nagle's algorithm is disabled (TCP_NODELAY), so small messages go out at
        /// once. Default true.
        public var disableNagleAlgorithm = true
        /// Whether `X-Forwarded-For` is ignored for `remoteAddress`. Default false.
        public var ignoreXForwardedFor = false
        /// The TCP peers whose `X-Forwarded-For` is believed (beyond the original, so that a
        /// client on the open internet cannot spoof its address). Default: the loopback
        /// addresses, where a local reverse proxy connects from.
        public var trustedProxies: Set<String> = ["127.0.0.1", "::1", "::ffff:127.0.0.1"]
        /// Whether `Sec-WebSocket-Extensions` is parsed into `requestedExtensions`. Default true.
        public var parseExtensions = true
        /// Whether `Cookie` is parsed into `cookies`. Default true.
        public var parseCookies = true

        /// How long a `request` may stay undecided (neither accepted nor rejected) before it is
        /// refused with 503. Default 10 s.
        public var requestTimeout: Duration = .seconds(10)
        /// How long a client may take to send its whole upgrade request from the moment it
        /// connected; a client that sends headers one byte at a time is cut off (408). Also how
        /// long it may take to read a plain HTTP answer or a refusal (HTTP/1.1): one that does not
        /// read it is disconnected then, so a large page cannot be held in memory by a client
        /// that never reads. Default 10 s.
        public var handshakeTimeout: Duration = .seconds(10)
        /// The most bytes of request head (request line and headers) accepted; beyond it the
        /// answer is 431. Default 16 KiB.
        public var maxHandshakeSize = 16 * 1024
        /// The most header lines accepted in a request (431 beyond). Default 100.
        public var maxHeaderCount = 100
        /// The most WebSocket connections, counting the open ones and the upgrade requests still
        /// being decided (from their request head to `accept` or `reject`), so that a flood of
        /// handshakes nobody decides cannot pass it; beyond it new upgrades get 503. `nil`
        /// (default) for no cap.
        public var maxConnections: Int? = nil

        /// permessage-deflate (RFC 7692): `nil` (default) does not negotiate it; set options to
        /// accept clients' offers. Off by default like `ws`: compression costs CPU and per
        /// connection memory, and can leak secrets (see ``PerMessageDeflate``).
        public var perMessageDeflate: PerMessageDeflate.Options? = nil
        /// Further extensions to negotiate, after permessage-deflate. Default none.
        public var extensions: [any WebSocketExtensionNegotiator] = []

        /// Whether TLS listeners offer HTTP/2 by ALPN (`h2`, then `http/1.1`) and accept
        /// WebSockets as extended CONNECT streams (RFC 8441), so a browser that loaded the page
        /// over HTTP/2 opens its WebSockets on the same connection. Plain `ws://` listeners stay
        /// HTTP/1.1. A TLS configuration that sets its own `applicationProtocols` keeps them.
        /// Default false.
        public var http2 = false
        /// The most concurrent streams (WebSockets and plain requests) one HTTP/2 connection
        /// may have open. Default 100.
        public var http2MaxConcurrentStreams = 100
        /// How long an HTTP/2 connection may have no open stream before the server closes it
        /// (with GOAWAY). Default 60 s.
        public var http2IdleTimeout: Duration = .seconds(60)

        /// The write buffer's watermarks for `drain` and for async sends to wait. Default 32 KiB
        /// and 64 KiB.
        public var writeBufferWaterMark = WebSocketWriteBufferWaterMark()

        /// The most bytes the Node-style sends (``WebSocketConnection/sendUTF(_:compress:completion:)``,
        /// `sendBytes`, `send`, `sendFrame`) may have queued for one connection: the write buffer's
        /// high watermark plus what they queued since it passed it. A send that would go past it
        /// meets ``sendBackpressurePolicy``; a send to a connection below its high watermark always
        /// goes, however large. Default 16 MiB. WebSocket-Node has no such cap (its `send` queues
        /// without end, so one peer that stops reading can exhaust the server); uWebSockets has
        /// `maxBackpressure`. The async ``WebSocketConnection/write(_:compress:)-(WebSocketMessage,_)``
        /// waits instead, and reading pauses while the write buffer is full, so an echo never
        /// meets this cap. Must be at least `writeBufferWaterMark.high`.
        public var maxSendBackpressure = 16 << 20
        /// What a Node-style send past ``maxSendBackpressure`` meets. Default
        /// `.close(.policyViolation)`: the connection closes with 1008 and the message is not
        /// sent, so no message is lost without a close saying so. `.skip` keeps the connection
        /// open and fails that send: its completion gets ``WebSocketError/Code-swift.struct/backpressure``,
        /// and ``WebSocketConnection/refusedSends`` counts it.
        public var sendBackpressurePolicy = WebSocketServer.BackpressurePolicy.close(.policyViolation)

        /// The most bytes of published messages (``WebSocketServer/publish(_:to:compress:)-(WebSocketMessage,_,_)``)
        /// queued for one connection and not yet written to its socket; a message that would go
        /// past it meets ``backpressurePolicy``. A message always goes to a connection with
        /// nothing queued, however large. Default 1 MiB (uWebSockets' `maxBackpressure`; its
        /// default is 64 KiB, which a burst of publications to a healthy reader on a busy
        /// loopback already reaches).
        public var maxBackpressure = 1 << 20
        /// What happens to a published message that would take a connection past
        /// `maxBackpressure`. Default ``WebSocketServer/BackpressurePolicy/skip``.
        public var backpressurePolicy = BackpressurePolicy.skip

        /// Carries publications to the other servers of a cluster and theirs to this one.
        /// Default ``WebSocketLocalBroker``: no other server, topics stay in this process. The
        /// `WebSocketPostgres` product has a PostgreSQL one. Started by the first `listen`.
        public var broker: any WebSocketBroker = WebSocketLocalBroker()

        /// The defaults above.
        public init() {}
    }

    /// What happens when a published message would take a slow connection past
    /// ``Configuration/maxBackpressure``.
    public enum BackpressurePolicy: Sendable, Hashable {
        /// That connection does not get the message; it is counted in
        /// ``WebSocketConnection/skippedPublishedMessages`` and
        /// ``WebSocketServer/skippedPublishedMessages``. The connection stays open and gets the
        /// messages published once it has caught up.
        case skip
        /// That connection does not get the message and is closed with `code`: usually
        /// ``WebSocketCloseCode/policyViolation`` (1008) or ``WebSocketCloseCode/tryAgainLater``
        /// (1013). The close frame goes out behind what is queued; a peer that never reads is cut
        /// off after `closeTimeout`.
        case close(WebSocketCloseCode)
    }
}

extension WebSocketServer.Configuration: WebSocketConnectionSettings {}
