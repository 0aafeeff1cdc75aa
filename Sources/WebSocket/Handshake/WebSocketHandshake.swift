import NIOHTTP1

/// The rules of the opening handshake shared by both ends (RFC 6455 §4).
public enum WebSocketHandshake {
    /// The GUID appended to the key before hashing (RFC 6455 §1.3).
    static let guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    /// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key`.
    public static func acceptValue(forKey key: String) -> String {
        Base64.encode(SHA1.hash(Array((key + guid).utf8)))
    }

    /// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64-encoded.
    public static func makeKey() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<16).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        return Base64.encode(bytes)
    }

    /// Whether a `Sec-WebSocket-Key` is well formed: base64 of exactly 16 bytes.
    public static func isValidKey(_ key: String) -> Bool {
        // Base64 of 16 bytes: 22 characters of the alphabet, then "==" (checked in place: this
        // runs in every handshake, and decoding allocated twice).
        let utf8 = key.utf8
        guard utf8.count == 24 else { return false }
        var index = 0
        for byte in utf8 {
            if index >= 22 {
                guard byte == UInt8(ascii: "=") else { return false }
            } else {
                switch byte {
                case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                     UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "+"), UInt8(ascii: "/"):
                    break
                default:
                    return false
                }
            }
            index += 1
        }
        return true
    }

    /// The comma-separated tokens of every `name` header, trimmed, empty ones dropped.
    static func tokens(_ headers: HTTPHeaders, _ name: String) -> [Substring] {
        headers[name].flatMap { $0.split(separator: ",") }.map { $0.trimmingSpaces() }.filter { !$0.isEmpty }
    }

    /// Whether a comma-separated header `name` contains `token` (case-insensitively).
    /// `token` is lowercase ASCII. Compares bytes in place (no split, no lowercased copies):
    /// it runs twice in every handshake.
    static func headerContainsToken(_ headers: HTTPHeaders, _ name: String, _ token: String) -> Bool {
        let wanted = token.utf8
        for value in headers[name] {
            var rest = value.utf8[...]
            while true {
                let end = rest.firstIndex(of: UInt8(ascii: ",")) ?? rest.endIndex
                var part = rest[rest.startIndex..<end]
                while let first = part.first, first == UInt8(ascii: " ") || first == UInt8(ascii: "\t") { part.removeFirst() }
                while let last = part.last, last == UInt8(ascii: " ") || last == UInt8(ascii: "\t") { part.removeLast() }
                if part.elementsEqual(wanted, by: { byte, wantedByte in
                    (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte) == wantedByte
                }) {
                    return true
                }
                guard end < rest.endIndex else { break }
                rest = rest[rest.index(after: end)...]
            }
        }
        return false
    }
}

/// An extension as named in `Sec-WebSocket-Extensions`: a name and its parameters.
public struct WebSocketExtension: Sendable, Hashable, CustomStringConvertible {
    /// One `name[=value]` parameter.
    public struct Parameter: Sendable, Hashable {
        /// The parameter's name, e.g. `client_max_window_bits`.
        public var name: String
        /// Its value, or `nil` for a parameter given without one.
        public var value: String?
        /// A parameter `name[=value]`.
        public init(name: String, value: String? = nil) {
            self.name = name
            self.value = value
        }
    }

    /// The extension token, e.g. `permessage-deflate`.
    public var name: String
    /// The parameters in the order given.
    public var parameters: [Parameter]

    /// An extension `name` with `parameters`.
    public init(name: String, parameters: [Parameter] = []) {
        self.name = name
        self.parameters = parameters
    }

    /// The header form, e.g. `permessage-deflate; client_max_window_bits`.
    public var description: String {
        ([name] + parameters.map { p in p.value.map { "\(p.name)=\($0)" } ?? p.name }).joined(separator: "; ")
    }

    /// Parses every `Sec-WebSocket-Extensions` value: `ext; p; p=v, ext2`. Quoted values are
    /// unquoted. Malformed items are skipped.
    public static func parse(_ values: [String]) -> [WebSocketExtension] {
        var result: [WebSocketExtension] = []
        for value in values {
            for item in splitOutsideQuotes(value, separator: ",") {
                let parts = splitOutsideQuotes(item, separator: ";").map { $0.trimmingSpaces() }
                guard let name = parts.first, !name.isEmpty else { continue }
                var parameters: [Parameter] = []
                for part in parts.dropFirst() where !part.isEmpty {
                    if let eq = part.firstIndex(of: "=") {
                        var v = part[part.index(after: eq)...].trimmingSpaces()
                        if v.count >= 2 && v.first == "\"" && v.last == "\"" { v = v.dropFirst().dropLast() }
                        parameters.append(Parameter(name: String(part[..<eq].trimmingSpaces()), value: String(v)))
                    } else {
                        parameters.append(Parameter(name: String(part)))
                    }
                }
                result.append(WebSocketExtension(name: String(name), parameters: parameters))
            }
        }
        return result
    }

    private static func splitOutsideQuotes(_ s: some StringProtocol, separator: Character) -> [Substring] {
        var parts: [Substring] = []
        var inQuotes = false
        let str = Substring(s)
        var start = str.startIndex
        var i = str.startIndex
        while i < str.endIndex {
            let c = str[i]
            if c == "\"" { inQuotes.toggle() }
            if c == separator && !inQuotes {
                parts.append(str[start..<i])
                start = str.index(after: i)
            }
            i = str.index(after: i)
        }
        parts.append(str[start...])
        return parts
    }
}

extension StringProtocol {
    func trimmingSpaces() -> Substring {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return s
    }
}
