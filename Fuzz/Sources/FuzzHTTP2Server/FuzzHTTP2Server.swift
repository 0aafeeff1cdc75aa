// Fuzz target (h): the server's HTTP/2 path (RFC 8441) — the pipeline `installHTTP2(on:)` sets
// up for a connection that chose h2 (NIOHTTP2's handler and multiplexer, the idle-connection
// manager, `WebSocketHTTP2ServerStreamHandler` on each stream, the stream bridge and the
// connection handler after an accepted extended CONNECT) on an EmbeddedChannel, fed a client's
// bytes.
//
// Input layout: byte 0 chooses what the application does and how the bytes arrive
//   bits 0-1  0, 1: accept every request (with its first protocol); 2: reject with 403;
//             3: accept every other request and leave the rest undecided
//   bit 2     the target sends the client preface itself (else the input must)
//   bit 3     the bytes arrive in pieces of (byte 1 % 64 + 1) bytes, else all at once
//   bit 4     time passes at the end (request timeout, idle timeout, close timeout)
//   bit 5     small limits (handshake 512 bytes, 2 concurrent streams)
// byte 1: the piece size; the rest: what the client sends (the preface, SETTINGS, HEADERS with
// `:method CONNECT`, `:protocol websocket`, DATA carrying WebSocket frames, ...).
//
// Checks: no crash, ASan report or leak; the server's output is a sequence of well-formed
// HTTP/2 frames whose header blocks decode; every stream it answers with `:status 200` is one
// the client opened with HEADERS and whose request (an extended CONNECT, the only kind the
// server hands to the application) the application accepted; nothing is left open at the end.
import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP2
import FuzzSupport

@testable import WebSocket

private final class Seen: @unchecked Sendable {
    var requests = 0
    var acceptedStreams: Set<Int> = []
    var connections = 0
}

private let preface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8) + [0, 0, 0, 4, 0, 0, 0, 0, 0]

/// Follows one direction of an HTTP/2 connection frame by frame (after the preface, if any).
private struct FrameReader {
    var buffer: [UInt8] = []
    var offset = 0

    /// The frames complete so far: (type, flags, stream, payload).
    mutating func next() -> (type: UInt8, flags: UInt8, stream: Int, payload: ArraySlice<UInt8>)? {
        guard buffer.count - offset >= 9 else { return nil }
        let length = Int(buffer[offset]) << 16 | Int(buffer[offset + 1]) << 8 | Int(buffer[offset + 2])
        guard buffer.count - offset - 9 >= length else { return nil }
        let type = buffer[offset + 3]
        let flags = buffer[offset + 4]
        let stream = (Int(buffer[offset + 5]) << 24 | Int(buffer[offset + 6]) << 16 | Int(buffer[offset + 7]) << 8 | Int(buffer[offset + 8])) & 0x7FFF_FFFF
        let payload = buffer[(offset + 9)..<(offset + 9 + length)]
        offset += 9 + length
        return (type, flags, stream, payload)
    }
}

/// The streams the client opened with a HEADERS frame, read from its bytes (after the preface).
private func streamsOpened(by bytes: [UInt8]) -> Set<Int> {
    guard bytes.count >= 24, bytes[..<24].elementsEqual(preface[..<24]) else { return [] }
    var reader = FrameReader(buffer: bytes, offset: 24)
    var streams: Set<Int> = []
    while let frame = reader.next() {
        if frame.type == 1 { streams.insert(frame.stream) }
    }
    return streams
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    guard let mode = input.byte(), let parameter = input.byte() else { return 0 }
    let decision = mode & 0x03

    var configuration = WebSocketServer.Configuration()
    configuration.perMessageDeflate = .init()
    if mode & 0x20 != 0 {
        configuration.maxHandshakeSize = 512
        configuration.http2MaxConcurrentStreams = 2
    }
    let channel = EmbeddedChannel()
    let loop = channel.embeddedEventLoop
    let server = WebSocketServer(configuration: configuration, eventLoopGroup: loop, logger: silentLogger)
    let seen = Seen()
    server.onRequest { request in
        seen.requests += 1
        let stream = (try? request.socket.syncOptions?.getOption(HTTP2StreamChannelOptions.streamID)).map { Int($0) }
        let accept: Bool
        switch decision {
        case 0, 1: accept = true
        case 2:
            request.reject(status: 403, reason: "fuzz")
            return
        default: accept = seen.requests % 2 == 1
        }
        guard accept else { return }
        guard let stream else { fatalError("invariant violated: a request without an HTTP/2 stream id") }
        if let connection = try? request.accept(protocol: request.requestedProtocols.first, origin: request.origin) {
            seen.acceptedStreams.insert(stream)
            _ = connection.onMessage { [weak connection] message in connection?.send(message) }
        }
    }
    server.onConnect { _ in seen.connections += 1 }
    do {
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 40_000)).wait()
        try server.installHTTP2(on: channel)
    } catch {
        fatalError("could not set up the embedded HTTP/2 server: \(error)")
    }
    loop.run()

    var bytes = Array(input.rest())
    if mode & 0x04 != 0 { bytes = preface + bytes }
    var output: [UInt8] = []
    func collect() {
        while true {
            let item: Any?
            do {
                item = try channel.readOutbound(as: Any.self)
            } catch {
                fatalError("unreadable outbound item: \(error)")
            }
            guard let item else { return }
            switch item {
            case let buffer as ByteBuffer: output += buffer.readableBytesView
            case let data as IOData:
                guard case .byteBuffer(let buffer) = data else { fatalError("the server wrote a file region") }
                output += buffer.readableBytesView
            default: fatalError("the server wrote an unexpected \(type(of: item))")
            }
        }
    }
    func feed(_ piece: ArraySlice<UInt8>) {
        guard channel.isActive else { return }
        do {
            try channel.writeInbound(ByteBuffer(bytes: piece))
        } catch {
            // An error the pipeline passed on (HTTP/2 answers it with GOAWAY or RST_STREAM).
        }
        loop.run()
        collect()
    }
    if mode & 0x08 != 0 {
        let piece = Int(parameter % 64) + 1
        var start = 0
        while start < bytes.count && channel.isActive {
            let end = min(bytes.count, start + piece)
            feed(bytes[start..<end])
            start = end
        }
    } else {
        feed(bytes[...])
    }
    if mode & 0x10 != 0 {
        loop.advanceTime(by: .seconds(11))
        collect()
        loop.advanceTime(by: .seconds(61))
        collect()
    }

    // The server's frames: well formed, header blocks decodable, 200 only where accepted.
    let opened = streamsOpened(by: bytes)
    var reader = FrameReader(buffer: output)
    var decoder = HPACKDecoder(allocator: ByteBufferAllocator(), maxDynamicTableSize: 1 << 16)
    var block: [UInt8] = []
    var blockStream: Int?
    while let frame = reader.next() {
        switch frame.type {
        case 1, 9:  // HEADERS, CONTINUATION
            var payload = frame.payload
            if frame.type == 1 {
                check(blockStream == nil, "HEADERS inside another header block")
                check(frame.stream != 0, "HEADERS on stream 0")
                var start = payload.startIndex
                var end = payload.endIndex
                if frame.flags & 0x08 != 0, let pad = payload.first {  // PADDED
                    start += 1
                    end -= Int(pad)
                }
                if frame.flags & 0x20 != 0 { start += 5 }  // PRIORITY
                check(start <= end, "a malformed HEADERS frame")
                payload = payload[start..<end]
                blockStream = frame.stream
                block = []
            } else {
                check(blockStream == frame.stream, "CONTINUATION outside its header block")
            }
            block += payload
            if frame.flags & 0x04 != 0 {  // END_HEADERS
                var buffer = ByteBuffer(bytes: block)
                let headers: HPACKHeaders
                do {
                    headers = try decoder.decodeHeaders(from: &buffer)
                } catch {
                    fatalError("invariant violated: the server wrote a header block that does not decode: \(error)")
                }
                let stream = blockStream ?? 0
                if headers.first(name: ":status") == "200" {
                    check(opened.contains(stream), "200 on stream \(stream), which the client did not open")
                    check(seen.acceptedStreams.contains(stream), "200 on stream \(stream), whose request was not accepted (accepted: \(seen.acceptedStreams.sorted()))")
                }
                blockStream = nil
            }
        default:
            check(blockStream == nil, "a frame of type \(frame.type) inside a header block")
        }
    }
    check(reader.offset == output.count || channel.isActive, "the server closed after a partial frame")
    check(seen.connections <= seen.acceptedStreams.count, "\(seen.connections) connections for \(seen.acceptedStreams.count) accepted requests")

    channel.close(promise: nil)
    loop.run()
    loop.advanceTime(by: .seconds(3600))
    loop.run()
    collect()
    check(server.connectionCount == 0, "\(server.connectionCount) connections left open")
    return 0
}
