import NIOCore
import NIOHTTP1

/// The fast path for the one request a WebSocket server sees on almost every connection: a
/// bodiless `GET` over HTTP/1.1 with a plain head.
///
/// This parser accepts only a strict subset of HTTP/1.1: the request line `GET /<path> HTTP/1.1`,
/// header fields `token ":" OWS value` with visible ASCII, space and tab in the value, every line
/// ended by CRLF, no `Content-Length` or `Transfer-Encoding`. Anything else, well-formed or not, is
/// `.fallback`, and the server hands the very same bytes to NIO's decoder, so every unusual or
/// hostile request is judged by NIO as before. For what it accepts, it produces the head NIO's
/// decoder produces (a differential test checks this against `HTTPRequestDecoder`, on the accepted
/// requests and on random mutants of them). Two parsers of the same bytes could disagree on where
/// a request ends; here that cannot carry a second request: a head with body framing goes to NIO,
/// and the server never reads another request on a connection (every answer but the 101 closes it).
///
/// What it saves, measured alone (2026-12-05, library at 1ecd617, release build): W4 of
/// `Benchmarks/` (`echo-ours` pinned to one core, the load generator's
/// `--mode handshake --conns 32 --sources 8` to the other, 5 s after 1 s of warm-up), with this
/// parser and without it (every request sent to NIO's decoder, llhttp behind a
/// `ByteToMessageHandler`, by a temporary switch in ``HandshakeRequestReader``; nothing else
/// changed), 20 runs each, interleaved: server CPU per handshake, medians, 57.2 µs with against
/// 70.5 µs without, 13.3 µs or 19% of a handshake; every run with it was below every run without
/// (55.6-58.4 against 67.9-73.5). The machine was shared (load average 9-12 on 2 cores), so both
/// figures are above what a quiet machine gives.
enum HTTPRequestHeadParser {
    enum Result: Equatable {
        /// The head has not ended yet within these bytes.
        case incomplete
        /// A head of the fast-path subset, and the number of bytes it took (through its CRLFCRLF).
        case parsed(HTTPRequestHead, length: Int)
        /// Not of the fast-path subset: let NIO's decoder read these bytes.
        case fallback
    }

    /// At most this many header fields on the fast path (more go to NIO's decoder).
    static let maxFields = 64

    static func parse(_ buffer: ByteBuffer) -> Result {
        buffer.withUnsafeReadableBytes { parse($0) }
    }

    static func parse(_ bytes: UnsafeRawBufferPointer) -> Result {
        let count = bytes.count
        // "GET / HTTP/1.1\r\n" at least.
        guard count >= 4 else {
            return bytes.elementsEqual("GET ".utf8.prefix(count)) ? .incomplete : .fallback
        }
        guard bytes[0] == UInt8(ascii: "G"), bytes[1] == UInt8(ascii: "E"), bytes[2] == UInt8(ascii: "T"),
              bytes[3] == UInt8(ascii: " ")
        else { return .fallback }
        // The request target: origin-form (from "/"), visible ASCII up to one space.
        guard count > 4 else { return .incomplete }
        guard bytes[4] == UInt8(ascii: "/") else { return .fallback }
        var i = 5
        while i < count, bytes[i] > 0x20, bytes[i] < 0x7F { i += 1 }
        guard i < count else { return .incomplete }
        let targetEnd = i
        guard bytes[i] == UInt8(ascii: " ") else { return .fallback }
        i += 1
        let version = "HTTP/1.1\r\n".utf8
        for expected in version {
            guard i < count else { return .incomplete }
            guard bytes[i] == expected else { return .fallback }
            i += 1
        }
        var fields: [(String, String)] = []
        fields.reserveCapacity(12)
        while true {
            guard i < count else { return .incomplete }
            if bytes[i] == UInt8(ascii: "\r") {
                guard i + 1 < count else { return .incomplete }
                guard bytes[i + 1] == UInt8(ascii: "\n") else { return .fallback }
                i += 2
                break
            }
            guard fields.count < maxFields else { return .fallback }
            // field-name: one or more tchar, then ":".
            let nameStart = i
            while i < count, isTokenCharacter(bytes[i]) { i += 1 }
            guard i < count else { return .incomplete }
            guard i > nameStart, bytes[i] == UInt8(ascii: ":") else { return .fallback }
            let nameEnd = i
            i += 1
            // OWS, then the value up to CRLF (trailing whitespace stays, as NIO's decoder keeps it).
            while i < count, bytes[i] == 0x20 || bytes[i] == 0x09 { i += 1 }
            let valueStart = i
            while i < count {
                let byte = bytes[i]
                if byte == UInt8(ascii: "\r") { break }
                guard (byte >= 0x20 && byte < 0x7F) || byte == 0x09 else { return .fallback }
                i += 1
            }
            let valueEnd = i
            guard i + 1 < count else { return .incomplete }
            guard bytes[i + 1] == UInt8(ascii: "\n") else { return .fallback }
            i += 2
            let name = UnsafeRawBufferPointer(rebasing: bytes[nameStart..<nameEnd])
            if equalsIgnoringCase(name, "content-length") || equalsIgnoringCase(name, "transfer-encoding") {
                return .fallback
            }
            fields.append((
                String(decoding: name, as: UTF8.self),
                String(decoding: UnsafeRawBufferPointer(rebasing: bytes[valueStart..<valueEnd]), as: UTF8.self)))
        }
        let target = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[4..<targetEnd]), as: UTF8.self)
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: target, headers: HTTPHeaders(fields))
        return .parsed(head, length: i)
    }

    /// RFC 9110 §5.6.2 tchar.
    @inline(__always)
    static func isTokenCharacter(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
             UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."),
             UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    /// Whether `bytes` spell `lowercase` in any case (`lowercase` is ASCII lower-case).
    private static func equalsIgnoringCase(_ bytes: UnsafeRawBufferPointer, _ lowercase: StaticString) -> Bool {
        guard bytes.count == lowercase.utf8CodeUnitCount else { return false }
        let expected = lowercase.utf8Start
        for index in 0..<bytes.count {
            var byte = bytes[index]
            if byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") { byte |= 0x20 }
            if byte != expected[index] { return false }
        }
        return true
    }
}
