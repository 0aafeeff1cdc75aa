import NIOSSL

extension WebSocketClient {
    /// Options for one `connect` call, the counterpart of the `requestOptions` WebSocket-Node
    /// passes to Node's `http.request`: a proxy, and TLS settings that override the client's.
    public struct RequestOptions: Sendable {
        /// An HTTP proxy to tunnel through with `CONNECT` (for `ws://` and `wss://` alike);
        /// `nil` connects directly. Default `nil`.
        public var proxy: HTTPProxy?
        /// TLS settings for this connection only, replacing the client's
        /// ``WebSocketClient/Configuration/tlsConfiguration``. Default `nil`.
        public var tlsConfiguration: TLSConfiguration?
        /// The server name sent in TLS SNI and checked against the certificate (Node's
        /// `servername`). Default: the URL's host, or none when that is an IP address (the
        /// certificate is then checked against the IP address).
        public var serverName: String?

        /// Creates request options.
        public init(proxy: HTTPProxy? = nil, tlsConfiguration: TLSConfiguration? = nil, serverName: String? = nil) {
            self.proxy = proxy
            self.tlsConfiguration = tlsConfiguration
            self.serverName = serverName
        }
    }

    /// An HTTP proxy that opens a tunnel to the WebSocket server with `CONNECT host:port`.
    public struct HTTPProxy: Sendable, Hashable {
        /// Credentials sent in `Proxy-Authorization`.
        public enum Authorization: Sendable, Hashable {
            /// `Proxy-Authorization: Basic base64(username:password)`.
            case basic(username: String, password: String)
            /// The header value exactly as given, e.g. `Bearer abc`.
            case raw(String)

            /// The `Proxy-Authorization` header value.
            public var headerValue: String {
                switch self {
                case .basic(let username, let password):
                    return "Basic " + Base64.encode(Array("\(username):\(password)".utf8))
                case .raw(let value):
                    return value
                }
            }
        }

        /// The proxy's host name or IP address.
        public var host: String
        /// The proxy's port.
        public var port: Int
        /// Credentials for the proxy, if it wants any. Default `nil`.
        public var authorization: Authorization?

        /// A proxy at `host:port`.
        public init(host: String, port: Int, authorization: Authorization? = nil) {
            self.host = host
            self.port = port
            self.authorization = authorization
        }

        /// A proxy from a URL such as `http://user:password@proxy.example:3128` (the port
        /// defaults to 80; user and password, percent-decoded, become Basic credentials).
        public init(url: String) throws {
            var rest = Substring(url)
            let schemeParts = rest.split(separator: "://", maxSplits: 1, omittingEmptySubsequences: false)
            if schemeParts.count == 2 {
                guard schemeParts[0].lowercased() == "http" else {
                    throw WebSocketError(.invalidURL, "Only http:// proxies are supported, not \(url)")
                }
                rest = schemeParts[1]
            }
            if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
            var authorization: Authorization?
            if let at = rest.lastIndex(of: "@") {
                let info = rest[..<at]
                let (user, password) = info.firstIndex(of: ":").map { (info[..<$0], info[info.index(after: $0)...]) } ?? (info, "")
                authorization = .basic(username: Self.percentDecoded(user), password: Self.percentDecoded(password))
                rest = rest[rest.index(after: at)...]
            }
            var host = rest
            var port = 80
            if rest.first == "[" {
                guard let close = rest.firstIndex(of: "]") else { throw WebSocketError(.invalidURL, "Unterminated IPv6 literal in \(url)") }
                host = rest[rest.index(after: rest.startIndex)..<close]
                let after = rest[rest.index(after: close)...]
                if after.first == ":" {
                    guard let p = Int(after.dropFirst()), (1...65535).contains(p) else { throw WebSocketError(.invalidURL, "Invalid port in \(url)") }
                    port = p
                }
            } else if let colon = rest.lastIndex(of: ":") {
                host = rest[..<colon]
                guard let p = Int(rest[rest.index(after: colon)...]), (1...65535).contains(p) else {
                    throw WebSocketError(.invalidURL, "Invalid port in \(url)")
                }
                port = p
            }
            guard !host.isEmpty else { throw WebSocketError(.invalidURL, "No host in proxy URL \(url)") }
            self.init(host: String(host), port: port, authorization: authorization)
        }

        private static func percentDecoded(_ s: Substring) -> String {
            var bytes: [UInt8] = []
            var utf8 = Array(s.utf8)[...]
            while let byte = utf8.popFirst() {
                if byte == UInt8(ascii: "%"), utf8.count >= 2,
                    let value = UInt8(String(decoding: utf8.prefix(2), as: UTF8.self), radix: 16)
                {
                    bytes.append(value)
                    utf8 = utf8.dropFirst(2)
                } else {
                    bytes.append(byte)
                }
            }
            return String(decoding: bytes, as: UTF8.self)
        }
    }
}
