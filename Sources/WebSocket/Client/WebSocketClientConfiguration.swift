import NIOCore
import NIOSSL

extension WebSocketClient {
    /// The client's options, named and defaulted as WebSocket-Node's `WebSocketClient` config.
    public struct Configuration: Sendable {
        /// The largest frame accepted (1009 beyond it). Default 1 MiB.
        public var maxReceivedFrameSize = 0x100000
        /// The largest message accepted (1009 beyond it). Default 8 MiB.
        public var maxReceivedMessageSize = 0x800000
        /// The most fragments one message may have. Default 131072.
        public var maxFragmentsPerMessage = 131_072
        /// Whether outgoing messages over `fragmentationThreshold` are split. Default true.
        public var fragmentOutgoingMessages = true
        /// The frame size outgoing messages are split at. Default 16 KiB.
        public var fragmentationThreshold = 0x4000
        /// The protocol version to speak: 13 (default) or 8.
        public var webSocketVersion = 13
        /// Whether fragmented messages are assembled into one `message` event. Default true.
        public var assembleFragments = true
        /// How long `close()` waits for the server's close frame, and after the close handshake
        /// for the server to close the TCP connection. Default 5 s.
        public var closeTimeout: Duration = .seconds(5)
        /// Whether Nagle's algorithm is disabled (TCP_NODELAY). Default true.
        public var disableNagleAlgorithm = true
        /// How long the TCP connect plus the opening handshake may take. Default 10 s.
        public var handshakeTimeout: Duration = .seconds(10)
        /// Whether to send keepalive pings (off by default on the client).
        public var keepalive = false
        /// Silence before a keepalive ping. Default 20 s.
        public var keepaliveInterval: Duration = .seconds(20)
        /// Whether a server that does not answer a keepalive ping in time is dropped. Default true.
        public var dropConnectionOnKeepaliveTimeout = true
        /// Time allowed for an answer after a keepalive ping was written. Default 10 s.
        public var keepaliveGracePeriod: Duration = .seconds(10)

        /// TLS settings for `wss://` (swift-nio-ssl's own type). The default,
        /// `TLSConfiguration.makeClientConfiguration()`, trusts the system's root certificates
        /// and checks the certificate chain and the host name.
        ///
        /// - A private CA: `tlsConfiguration.trustRoots = .file("/path/ca.pem")` (or
        ///   `.certificates([...])`); `additionalTrustRoots` adds to the system's instead.
        /// - A client certificate: `certificateChain = [.certificate(cert)]` and
        ///   `privateKey = .privateKey(key)` (or `.file(path)`).
        /// - For tests only, skipping verification entirely:
        ///   `tlsConfiguration.certificateVerification = .none`.
        ///
        /// SNI is the URL's host name (see ``WebSocketClient/RequestOptions/serverName``), and
        /// ``WebSocketClient/RequestOptions/tlsConfiguration`` overrides this for one connection.
        public var tlsConfiguration: TLSConfiguration = .makeClientConfiguration()

        /// permessage-deflate (RFC 7692): `nil` (default) does not offer it; set options to
        /// offer it with those parameters. A server that accepts gets compressed messages; one
        /// that does not answers without it and the connection goes on uncompressed.
        public var perMessageDeflate: PerMessageDeflate.Options? = nil
        /// Further extensions to offer, after permessage-deflate. Default none. A server that
        /// accepts an extension not offered fails the connection (`.extensionNotOffered`).
        public var extensions: [any WebSocketExtensionNegotiator] = []

        /// The write buffer's watermarks for `drain`, `bufferedAmount` and for async sends to
        /// wait. Default 32 KiB and 64 KiB.
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

        /// Whether `wss://` connections use HTTP/2 (RFC 8441) when the server offers it: the
        /// client then opens one HTTP/2 connection per host and port (ALPN `h2`) and opens each
        /// WebSocket to that server as a stream of it, like a browser. Where the server does not
        /// choose h2 or does not announce SETTINGS_ENABLE_CONNECT_PROTOCOL, connections go over
        /// HTTP/1.1 as usual (and the client remembers that for the server). Connections with
        /// their own transport in ``WebSocketClient/RequestOptions`` (a proxy, other TLS
        /// settings or server name), and `webSocketVersion` 8, always use HTTP/1.1. The
        /// connections are shared among this client's WebSockets only: a ``W3CWebSocket``, which
        /// has a client of its own, gets a connection of its own. Default false.
        public var http2 = false

        /// Reconnecting by itself when a connection ends (not in WebSocket-Node): `nil`
        /// (default) never does; a ``WebSocketClient/ReconnectPolicy`` gives the other URLs to
        /// try, the backoff (exponential, with jitter and a cap), the attempts allowed and the
        /// close codes and errors that reconnect. It applies to connections made by URL (not
        /// to `connect(url:over:)` on a given HTTP/2 connection). A failed first connection is
        /// retried too (``WebSocketClient/ReconnectPolicy/retriesFirstConnection``, on by
        /// default) by `connect(_:)` and `connections(to:)`; `try await connect(url:)` makes one
        /// attempt. ``W3CWebSocket`` ignores it (a closed browser WebSocket stays closed).
        public var reconnect: ReconnectPolicy? = nil

        /// The client pings (when `keepalive` is on); TCP keepalive is a server option.
        var useNativeKeepalive: Bool { false }

        /// The defaults above.
        public init() {}
    }
}

extension WebSocketClient.Configuration: WebSocketConnectionSettings {}
