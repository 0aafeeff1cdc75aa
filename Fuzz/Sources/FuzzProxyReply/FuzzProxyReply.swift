// Fuzz target (g): the HTTP CONNECT proxy's reply — bytes, in pieces, into
// `WebSocketProxyConnectHandler` on an EmbeddedChannel, with a recorder behind it playing the
// handlers the tunnel carries (it writes before the reply, so that the write is held).
//
// Input layout: byte 0 chooses how the bytes arrive
//   bit 0     a Proxy-Authorization value is sent
//   bit 1     the bytes arrive in pieces of (byte 1 % 64 + 1) bytes, else all at once
//   bit 2     the proxy closes the connection after its bytes
// byte 1: the piece size; the rest: what the proxy answers.
//
// Checks: no crash; the handler sends one CONNECT head and nothing else before the tunnel is
// open; the tunnel opens (channelActive passed on) only after a complete head whose status
// line is `HTTP/1.x` with a 2xx status, and then every byte after the head reaches the recorder
// unchanged, the held write follows the CONNECT, and the handler has left the pipeline;
// otherwise no byte passes, and a failure (a `.proxyFailed` WebSocketError, reported once, the
// held write failed, the channel closed) comes for a refusal, a malformed status line, a head
// over 16 KiB or a close before the answer.
import NIOCore
import NIOEmbedded
import FuzzSupport

@testable import WebSocket

private final class Recorder: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    var active = 0
    var received: [UInt8] = []

    func channelActive(context: ChannelHandlerContext) {
        active += 1
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        received += unwrapInboundIn(data).readableBytesView
    }
}

private final class Seen: @unchecked Sendable {
    var failures: [WebSocketError] = []
    var heldWrite: Result<Void, any Error>?
}

private func drain(_ channel: EmbeddedChannel) -> [UInt8] {
    var out: [UInt8] = []
    while let buffer = try? channel.readOutbound(as: ByteBuffer.self) { out += buffer.readableBytesView }
    return out
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    guard let mode = input.byte(), let parameter = input.byte() else { return 0 }
    let target = "example.com:443"
    let authorization = mode & 0x01 != 0 ? "Basic dXNlcjpwYXNz" : nil

    let channel = EmbeddedChannel()
    let loop = channel.embeddedEventLoop
    let seen = Seen()
    let proxy = WebSocketProxyConnectHandler(target: target, proxyDescription: "127.0.0.1:3128", authorization: authorization) {
        seen.failures.append($0)
    }
    let recorder = Recorder()
    do {
        try channel.pipeline.syncOperations.addHandlers([proxy, recorder])
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 3128)).wait()
    } catch {
        fatalError("could not set up the embedded channel: \(error)")
    }
    // The tunnel's first bytes, written before the reply: held until it opens.
    let early: [UInt8] = Array("GET / HTTP/1.1\r\n".utf8)
    channel.writeAndFlush(ByteBuffer(bytes: early)).whenComplete { seen.heldWrite = $0 }
    loop.run()
    var expectedConnect = "CONNECT \(target) HTTP/1.1\r\nHost: \(target)\r\n"
    if let authorization { expectedConnect += "Proxy-Authorization: \(authorization)\r\n" }
    expectedConnect += "\r\n"
    let connect = drain(channel)
    check(connect == Array(expectedConnect.utf8), "the handler sent \(String(decoding: connect, as: UTF8.self).debugDescription)")
    check(recorder.active == 0, "channelActive passed on before the reply")

    let bytes = Array(input.rest())
    var fed = 0
    func feed(_ piece: ArraySlice<UInt8>) {
        guard channel.isActive else { return }
        try? channel.writeInbound(ByteBuffer(bytes: piece))
        fed += piece.count
        loop.run()
    }
    if mode & 0x02 != 0 {
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
    if mode & 0x04 != 0 {
        channel.close(promise: nil)
        loop.run()
    }
    let after = drain(channel)

    // Where the head ends, and its status line.
    let terminator: [UInt8] = [13, 10, 13, 10]
    var headEnd: Int?
    if bytes.count >= 4 {
        for i in 0...(bytes.count - 4) where bytes[i..<(i + 4)].elementsEqual(terminator) {
            headEnd = i + 4
            break
        }
    }

    check(seen.failures.count <= 1, "\(seen.failures.count) failures reported")
    check(recorder.active <= 1, "channelActive passed on \(recorder.active) times")
    for failure in seen.failures {
        check(failure.code == .proxyFailed, "a failure with the code \(failure.code): \(failure.message)")
    }
    if recorder.active == 1 {
        check(seen.failures.isEmpty, "the tunnel opened and failed")
        guard let headEnd else { fatalError("invariant violated: the tunnel opened without a complete head") }
        let head = String(decoding: bytes[..<headEnd], as: UTF8.self)
        let statusLine = head.split(separator: "\r\n", maxSplits: 1).first.map(String.init) ?? ""
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        check(parts.count >= 2 && parts[0].hasPrefix("HTTP/1."), "the tunnel opened on the status line \(statusLine.debugDescription)")
        // The status is read as an integer (so "+200" and "0200" pass as 200).
        check(Int(parts[1]).map { (200..<300).contains($0) } ?? false, "the tunnel opened on the status \(parts[1].debugDescription)")
        check(recorder.received == Array(bytes[headEnd..<fed]), "the bytes after the head reached the tunnel changed: \(recorder.received.count) of \(fed - headEnd)")
        check(after == early, "after the reply the handler wrote \(after.count) bytes, not the held write")
        if case .failure(let error)? = seen.heldWrite { fatalError("invariant violated: the held write failed: \(error)") }
        check((try? channel.pipeline.syncOperations.handler(type: WebSocketProxyConnectHandler.self)) == nil, "the handler stayed in the pipeline")
    } else {
        check(recorder.received.isEmpty, "\(recorder.received.count) bytes passed without an open tunnel")
        check(after.isEmpty, "\(after.count) bytes written without an open tunnel")
        if !seen.failures.isEmpty {
            check(!channel.isActive, "the channel stayed open after the failure")
            if case .success? = seen.heldWrite { fatalError("invariant violated: the held write succeeded after the failure") }
        }
        if let headEnd, headEnd <= fed {
            check(seen.failures.count == 1, "a complete head that did not open the tunnel but no failure")
        } else if fed > 16 * 1024 {
            check(seen.failures.count == 1, "\(fed) bytes without a head end and no failure")
        }
        if mode & 0x04 != 0 {
            check(seen.failures.count == 1, "the proxy closed before the tunnel opened but no failure")
        }
    }

    channel.close(promise: nil)
    loop.run()
    if recorder.active == 0 {
        check(seen.failures.count == 1, "the channel closed without the tunnel and no failure")
    }
    return 0
}
