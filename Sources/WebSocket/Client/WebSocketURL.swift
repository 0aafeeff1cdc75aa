import NIOCore

/// A parsed `ws://` or `wss://` URL.
struct WebSocketURL: Sendable {
    var scheme: String
    /// The host without brackets (an IPv6 literal is `::1`, not `[::1]`).
    var host: String
    var port: Int
    /// The path and query, at least `/`.
    var resource: String
    /// `user:password` from the URL, if it had one (sent as `Authorization: Basic`, as Node does).
    var userInfo: String?

    var isSecure: Bool { scheme == "wss" }

    /// Whether the host is an IPv4 or IPv6 literal (no SNI is sent for those).
    var hostIsIPAddress: Bool { (try? SocketAddress(ipAddress: host, port: 0)) != nil }

    /// The `Host` header value: the host (IPv6 in brackets) and the port when not the default.
    var hostHeader: String {
        let h = host.contains(":") ? "[\(host)]" : host
        let defaultPort = isSecure ? 443 : 80
        return port == defaultPort ? h : "\(h):\(port)"
    }

    /// `host:port` as a `CONNECT` request target (IPv6 in brackets).
    var authority: String {
        (host.contains(":") ? "[\(host)]" : host) + ":\(port)"
    }

    init(_ url: String) throws {
        let parts = url.split(separator: "://", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else {
            throw WebSocketError(.invalidURL, "Not a WebSocket URL (expected ws://host/path or wss://host/path): \(url)")
        }
        scheme = parts[0].lowercased()
        guard scheme == "ws" || scheme == "wss" else {
            throw WebSocketError(.invalidURL, "Unsupported URL scheme \"\(scheme)\" in \(url); use ws:// or wss://")
        }
        var rest = parts[1]
        var authority = rest
        if let slash = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) {
            authority = rest[..<slash]
            rest = rest[slash...]
            resource = rest.first == "/" ? String(rest) : "/" + rest
        } else {
            resource = "/"
        }
        if let hash = resource.firstIndex(of: "#") { resource = String(resource[..<hash]) }
        if resource.isEmpty { resource = "/" }
        guard !resource.contains(where: { $0 == " " || $0 == "\r" || $0 == "\n" }) else {
            throw WebSocketError(.invalidURL, "The path of \(url) contains a space or line break; percent-encode it")
        }
        if let at = authority.lastIndex(of: "@") {
            let info = authority[..<at]
            userInfo = info.isEmpty ? nil : String(info)
            authority = authority[authority.index(after: at)...]
        }
        port = scheme == "wss" ? 443 : 80
        if authority.first == "[" {
            guard let close = authority.firstIndex(of: "]") else { throw WebSocketError(.invalidURL, "Unterminated IPv6 literal in \(url)") }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if after.first == ":" {
                guard let p = Int(after.dropFirst()), (1...65535).contains(p) else { throw WebSocketError(.invalidURL, "Invalid port in \(url)") }
                port = p
            } else if !after.isEmpty {
                throw WebSocketError(.invalidURL, "Unexpected text after the IPv6 literal in \(url)")
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            guard let p = Int(authority[authority.index(after: colon)...]), (1...65535).contains(p) else {
                throw WebSocketError(.invalidURL, "Invalid port in \(url)")
            }
            port = p
        } else {
            host = String(authority)
        }
        guard !host.isEmpty else { throw WebSocketError(.invalidURL, "No host in \(url)") }
        guard !host.contains(where: { $0 == " " || $0 == "/" || $0 == "\r" || $0 == "\n" }) else {
            throw WebSocketError(.invalidURL, "Invalid host \"\(host)\" in \(url)")
        }
    }
}
