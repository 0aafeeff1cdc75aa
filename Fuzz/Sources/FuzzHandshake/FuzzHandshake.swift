// Fuzz target (c): the HTTP upgrade parser — bytes into the server's handshake pipeline
// (HTTP decoder, size limiter, handshake handler) on an EmbeddedChannel.
//
// Input layout: byte 0 chooses what the application does and how the bytes arrive
//   bits 0-1  0, 1: accept with the first requested protocol; 2: reject with status 400 + byte 1;
//             3: leave the request undecided
//   bit 2     small limits (head 256 bytes, 5 headers)
//   bit 3     the bytes arrive in pieces of (byte 1 % 32 + 1) bytes, else all at once
//   bit 4     time passes at the end (handshake and request timeouts)
// byte 1: the reject status or piece size; the rest: what the client sends.
//
// Checks: no crash; the server answers at most once, with 101 (and a correct
// Sec-WebSocket-Accept), 400, 404, 426 or 431 — or the application's reject status, or 408/503
// after a timeout — or nothing; after a refusal it says `Connection: close`, sends exactly
// Content-Length bytes of body and closes; nothing is left open at the end.
import NIOCore
import NIOEmbedded
import WebSocket
import FuzzSupport

private final class Seen: @unchecked Sendable {
    var key: String?
    var requests = 0
    var connections = 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    guard let mode = input.byte(), let parameter = input.byte() else { return 0 }
    let decision = mode & 0x03
    let rejectStatus = 400 + Int(parameter % 200)

    var configuration = WebSocketServer.Configuration()
    if mode & 0x04 != 0 {
        configuration.maxHandshakeSize = 256
        configuration.maxHeaderCount = 5
    }
    configuration.perMessageDeflate = .init()
    let embedded = EmbeddedServer(configuration: configuration)
    let seen = Seen()
    embedded.server.onRequest { request in
        seen.requests += 1
        seen.key = request.key
        switch decision {
        case 0, 1: _ = try? request.accept(protocol: request.requestedProtocols.first, origin: request.origin)
        case 2: request.reject(status: rejectStatus, reason: "fuzz\r\nX-Injected: 1")
        default: break
        }
    }
    embedded.server.onConnect { _ in seen.connections += 1 }

    let bytes = input.rest()
    if mode & 0x08 != 0 {
        let piece = Int(parameter % 32) + 1
        var start = bytes.startIndex
        while start < bytes.endIndex && embedded.channel.isActive {
            let end = min(bytes.endIndex, start + piece)
            embedded.send(bytes[start..<end])
            start = end
        }
    } else {
        embedded.send(bytes)
    }
    var timedOut = false
    if mode & 0x10 != 0 {
        timedOut = true
        embedded.loop.advanceTime(by: .seconds(11))
    }
    let output = embedded.written()
    let wasActive = embedded.channel.isActive

    if !output.isEmpty {
        guard let (head, rest) = splitHead(output) else {
            fatalError("invariant violated: the server wrote something that is not an HTTP response: \(output.prefix(200))")
        }
        check(head.hasPrefix("HTTP/1.1 "), "the response starts with \(head.prefix(20).debugDescription)")
        let statusText = head.dropFirst(9).prefix(3)
        guard let status = Int(statusText) else { fatalError("invariant violated: status \(statusText)") }
        var allowed: Set<Int> = [101, 400, 404, 426, 431]
        if decision == 2 { allowed.insert(rejectStatus) }
        if timedOut { allowed.formUnion([408, 503]) }
        check(allowed.contains(status), "the server answered \(status); allowed \(allowed.sorted())")
        let lines = head.split(separator: "\r\n", omittingEmptySubsequences: true)
        check(lines.allSatisfy { !$0.lowercased().hasPrefix("x-injected") }, "a header was injected through the reject reason")
        if status == 101 {
            check(seen.connections == 1, "101 without a connection")
            guard let key = seen.key else { fatalError("invariant violated: 101 without a request") }
            let accept = WebSocketHandshake.acceptValue(forKey: key)
            check(lines.contains("Sec-WebSocket-Accept: \(accept)"), "101 without the right Sec-WebSocket-Accept:\n\(head)")
            check(lines.filter { $0.hasPrefix("HTTP/") }.count == 1, "two status lines")
        } else {
            check(seen.connections == 0, "a connection opened but the answer was \(status)")
            check(lines.contains { $0.lowercased() == "connection: close" }, "a refusal without Connection: close")
            guard let lengthLine = lines.first(where: { $0.lowercased().hasPrefix("content-length:") }),
                let length = Int(String(lengthLine.split(separator: ":")[1].filter { $0 != " " }))
            else { fatalError("invariant violated: a refusal without Content-Length:\n\(head)") }
            check(rest.count == length, "body of \(rest.count) bytes, Content-Length \(length)")
            check(!wasActive, "the server answered \(status) but kept the connection open")
        }
    } else {
        check(seen.connections == 0, "a connection opened without a 101")
    }

    embedded.finish()
    _ = embedded.written()
    check(embedded.server.connectionCount == 0, "\(embedded.server.connectionCount) connections left open")
    return 0
}
