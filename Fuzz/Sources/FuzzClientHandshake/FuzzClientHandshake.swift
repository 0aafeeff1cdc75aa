// Fuzz target (f): the client's side of the opening handshake — bytes fed, as the server's
// answer, into the client's handshake pipeline (HTTPRequestEncoder, HTTPResponseDecoder,
// `WebSocketClientHandshakeHandler`, as `WebSocketClient.connect` installs them) on an
// EmbeddedChannel; after a 101 the same bytes go on as the server's frames.
//
// Input layout: byte 0 chooses the offer and how the bytes arrive
//   bits 0-1  the subprotocols requested: none, [chat], [chat, superchat], [Chat]
//   bit 2     permessage-deflate offered
//   bit 3     the bytes arrive in pieces of (byte 1 % 32 + 1) bytes, else all at once
//   bit 4     the server closes the connection after its bytes
// byte 1: the piece size; the rest: what the server sends, where every "{A}" becomes the
// Sec-WebSocket-Accept value of the key the client sent (so that a valid 101 can be written).
//
// Checks: no crash or hang; the connect promise is complete at the end (closing the channel
// completes it at the latest); it succeeds only for a 101 carrying the right accept value, with
// an offered subprotocol or none and only offered extensions; a failure is a HandshakeFailure
// and nothing is written after it; after a success the client writes only masked frames.
import NIOCore
import NIOEmbedded
import NIOHTTP1
import FuzzSupport

@testable import WebSocket

private final class Outcome: @unchecked Sendable {
    var connection: WebSocketConnection?
    var error: (any Error)?
    var completions = 0
    var writtenAfterFailure = 0
}

private let offeredProtocols: [[String]] = [[], ["chat"], ["chat", "superchat"], ["Chat"]]

/// Everything written outbound since the last call, as bytes.
private func drain(_ channel: EmbeddedChannel) -> [UInt8] {
    var out: [UInt8] = []
    while true {
        let item: Any?
        do {
            item = try channel.readOutbound(as: Any.self)
        } catch {
            fatalError("unreadable outbound item: \(error)")
        }
        guard let item else { return out }
        switch item {
        case let buffer as ByteBuffer: out += buffer.readableBytesView
        case let data as IOData:
            guard case .byteBuffer(let buffer) = data else { fatalError("the client wrote a file region") }
            out += buffer.readableBytesView
        default: fatalError("the client wrote an unexpected \(type(of: item))")
        }
    }
}

private func replacing(_ bytes: ArraySlice<UInt8>, _ token: [UInt8], with value: [UInt8]) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(bytes.count)
    var i = bytes.startIndex
    while i < bytes.endIndex {
        if bytes.endIndex - i >= token.count && bytes[i..<(i + token.count)].elementsEqual(token) {
            out += value
            i += token.count
        } else {
            out.append(bytes[i])
            i += 1
        }
    }
    return out
}

private func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
    guard haystack.count >= needle.count, !needle.isEmpty else { return needle.isEmpty }
    for i in 0...(haystack.count - needle.count) where haystack[i..<(i + needle.count)].elementsEqual(needle) {
        return true
    }
    return false
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    guard let mode = input.byte(), let parameter = input.byte() else { return 0 }
    let protocols = offeredProtocols[Int(mode & 0x03)]
    let deflate = mode & 0x04 != 0

    let channel = EmbeddedChannel()
    let loop = channel.embeddedEventLoop
    let promise = loop.makePromise(of: WebSocketConnection.self)
    let outcome = Outcome()
    promise.futureResult.whenComplete { result in
        outcome.completions += 1
        switch result {
        case .success(let connection): outcome.connection = connection
        case .failure(let error): outcome.error = error
        }
    }
    let request = WebSocketClientHandshakeHandler.Request(
        target: "/chat", host: "127.0.0.1", protocols: protocols, origin: nil, headers: [],
        version: 13, options: WebSocketClient.Configuration().connectionOptions,
        logger: silentLogger, peerDescription: "127.0.0.1:80", negotiators: deflate ? [PerMessageDeflate()] : [])
    do {
        let encoder = HTTPRequestEncoder()
        let decoder = ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .fireError))
        let handshake = WebSocketClientHandshakeHandler(request: request, encoder: encoder, decoder: decoder, promise: promise)
        try channel.pipeline.syncOperations.addHandlers([encoder, decoder, handshake])
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 80)).wait()
    } catch {
        fatalError("could not set up the embedded client: \(error)")
    }
    loop.run()

    // The request: its key gives the accept value "{A}" stands for.
    let sent = String(decoding: drain(channel), as: UTF8.self)
    guard let keyLine = sent.split(separator: "\r\n").first(where: { $0.lowercased().hasPrefix("sec-websocket-key:") }) else {
        fatalError("invariant violated: the client sent no Sec-WebSocket-Key:\n\(sent)")
    }
    let key = String(keyLine.split(separator: ":", maxSplits: 1)[1].filter { $0 != " " })
    let accept = Array(WebSocketHandshake.acceptValue(forKey: key).utf8)
    check(sent.hasPrefix("GET /chat HTTP/1.1\r\n") && sent.hasSuffix("\r\n\r\n"), "the request is not one GET head:\n\(sent)")
    let bytes = replacing(input.rest(), Array("{A}".utf8), with: accept)

    var clientWrote: [UInt8] = []
    func collect() {
        let out = drain(channel)
        if outcome.error != nil { outcome.writtenAfterFailure += out.count }
        clientWrote += out
    }
    func feed(_ piece: ArraySlice<UInt8>) {
        guard channel.isActive else { return }
        // The failure callback ran before: what is collected now was written after it.
        collect()
        do {
            try channel.writeInbound(ByteBuffer(bytes: piece))
        } catch {
            // An error the pipeline passed on (the client closes the channel for these).
        }
        loop.run()
        if outcome.error != nil { collect() } else { clientWrote += drain(channel) }
    }
    if mode & 0x08 != 0 {
        let piece = Int(parameter % 32) + 1
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
        channel.close(promise: nil)  // the server closed: the handlers see channelInactive
        loop.run()
    }
    check(outcome.completions <= 1, "the connect promise completed \(outcome.completions) times")

    if let connection = outcome.connection {
        check(contains(bytes, Array("101".utf8)), "success without a 101 in the answer")
        check(contains(bytes, accept), "success without the right Sec-WebSocket-Accept")
        if let chosen = connection.protocol {
            check(protocols.contains { $0.lowercased() == chosen.lowercased() }, "the subprotocol \(chosen) was not offered (\(protocols))")
        }
        for ext in connection.extensions {
            check(deflate && ext.name.lowercased() == "permessage-deflate", "the extension \(ext.name) was not offered")
        }
        check(connection.extensions.count <= 1, "\(connection.extensions.count) extensions accepted")
    }
    if let error = outcome.error {
        check(error is WebSocketClient.HandshakeFailure, "the promise failed with \(type(of: error)): \(error)")
    }

    channel.close(promise: nil)
    loop.run()
    loop.advanceTime(by: .seconds(3600))
    loop.run()
    collect()
    check(outcome.completions == 1, "the connect promise completed \(outcome.completions) times once the channel closed")
    check(outcome.writtenAfterFailure == 0, "the client wrote \(outcome.writtenAfterFailure) bytes after the handshake failed")

    if outcome.connection != nil {
        // After the 101 the client writes only frames, all masked.
        var buffer = ByteBuffer(bytes: clientWrote)
        var frames = 0
        while true {
            let frame: WebSocketFrame?
            do {
                frame = try WebSocketFrame.parse(from: &buffer)
            } catch {
                fatalError("invariant violated: the client wrote a malformed frame: \(error)")
            }
            guard let frame else { break }
            frames += 1
            check(frame.mask, "the client wrote an unmasked frame (\(frame.opcode))")
        }
        check(buffer.readableBytes == 0, "the client wrote \(buffer.readableBytes) bytes that are not a whole frame")
        _ = frames
    }
    return 0
}
