/// A cookie: parsed from a request's `Cookie` header, or set with `accept(cookies:)` as a
/// `Set-Cookie` line of the 101 response.
public struct WebSocketCookie: Sendable, Hashable {
    /// The cookie's name (an HTTP token).
    public var name: String
    /// The cookie's value (RFC 6265 cookie-octets).
    public var value: String
    /// `Path` attribute (only for cookies set on accept).
    public var path: String?
    /// `Domain` attribute.
    public var domain: String?
    /// `Expires` attribute, as an HTTP date string.
    public var expires: String?
    /// `Max-Age` attribute in seconds.
    public var maxAge: Int?
    /// `Secure` attribute.
    public var secure: Bool
    /// `HttpOnly` attribute.
    public var httpOnly: Bool

    /// A cookie `name=value` with optional `Set-Cookie` attributes.
    public init(
        name: String, value: String, path: String? = nil, domain: String? = nil, expires: String? = nil,
        maxAge: Int? = nil, secure: Bool = false, httpOnly: Bool = false
    ) {
        self.name = name
        self.value = value
        self.path = path
        self.domain = domain
        self.expires = expires
        self.maxAge = maxAge
        self.secure = secure
        self.httpOnly = httpOnly
    }

    /// Parses a `Cookie` header value (`a=1; b=2`); items without `=` are skipped.
    public static func parse(_ header: String) -> [WebSocketCookie] {
        header.split(separator: ";").compactMap { item in
            let item = item.trimmingSpaces()
            guard let eq = item.firstIndex(of: "=") else { return nil }
            var value = item[item.index(after: eq)...].trimmingSpaces()
            if value.count >= 2 && value.first == "\"" && value.last == "\"" { value = value.dropFirst().dropLast() }
            return WebSocketCookie(name: String(item[..<eq].trimmingSpaces()), value: String(value))
        }
    }

    private static let separators = Set("()<>@,;:\\\"/[]?={} \t")

    /// Checks the cookie as WebSocket-Node does before writing it; throws with the reason.
    func validate() throws {
        guard !name.isEmpty,
            name.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7F && !Self.separators.contains(Character($0)) })
        else {
            throw WebSocketError(.invalidArgument, "Illegal character in cookie name \"\(name)\"")
        }
        // RFC 6265 cookie-octet: no CTLs, whitespace, DQUOTE, comma, semicolon or backslash.
        let forbidden: Set<UInt32> = [0x22, 0x2C, 0x3B, 0x5C]
        guard value.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7F && !forbidden.contains($0.value) }) else {
            throw WebSocketError(.invalidArgument, "Illegal character in the value of cookie \"\(name)\"")
        }
        for (label, attribute) in [("path", path), ("domain", domain), ("expires", expires)] {
            if let attribute, attribute.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F || $0.value == 0x3B }) {
                throw WebSocketError(.invalidArgument, "Illegal character in the \(label) of cookie \"\(name)\"")
            }
        }
    }

    /// The `Set-Cookie` header value.
    var setCookieValue: String {
        var parts = ["\(name)=\(value)"]
        if let path { parts.append("Path=\(path)") }
        if let domain { parts.append("Domain=\(domain)") }
        if let expires { parts.append("Expires=\(expires)") }
        if let maxAge { parts.append("Max-Age=\(maxAge)") }
        if secure { parts.append("Secure") }
        if httpOnly { parts.append("HttpOnly") }
        return parts.joined(separator: "; ")
    }
}
