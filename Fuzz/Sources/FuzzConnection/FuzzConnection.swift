// Fuzz target (b): the connection state machine — the real server pipeline and
// WebSocketConnectionHandler on an EmbeddedChannel — fed arbitrary frame sequences mixed with
// raw bytes, server-side actions (close, drop, pause, resume, send, ping) and the passing of time
// (close timeout, keepalive).
//
// Input layout: byte 0 chooses the configuration (bit 0 permessage-deflate, bit 1 assemble
// fragments, bits 2-3 the size limits, bit 4 a 1 s keepalive, bit 5 a message listener only
// attached later, bit 6 a frame listener too); then operations, each an opcode byte and its
// arguments (see `Op` below).
//
// Checks: no crash; the server answers 101 and then writes only well-formed unmasked frames;
// at most one close frame and no data frame after it; its code is 1002, 1007, 1009, one the server
// was told to close with, or an echo of a close code the peer sent (1000 for a close without
// one); `close` fires exactly once, never a message after it nor after the peer's close frame
// or a protocol failure; messages within the size limit; no connection left open at the end.
import NIOCore
import NIOEmbedded
import NIOConcurrencyHelpers
import WebSocket
import FuzzSupport

/// What the connection's callbacks saw.
private final class Observed: @unchecked Sendable {
    var connection: WebSocketConnection?
    var messages = 0
    var frames = 0
    var closeEvents: [(Int, String)] = []
    /// Codes the test itself closed or dropped the connection with.
    var ownCodes: Set<Int> = []
    /// Whether a late-attached listener may legitimately get messages after the close.
    var lateListener = false
    var listenerAttached = false
    var maxMessageSize = 0
}

/// Follows the bytes sent to the server with the public frame parser, to know which close codes
/// the peer sent (the server may echo those).
private struct PeerShadow {
    var stream = ByteBuffer()
    var stopped = false
    var closeCodes: Set<Int> = []
    var sentEmptyClose = false

    mutating func feed(_ bytes: some Sequence<UInt8>) {
        guard !stopped else { return }
        stream.writeBytes(Array(bytes))
        while true {
            let frame: WebSocketFrame?
            do {
                frame = try WebSocketFrame.parse(from: &stream)
            } catch {
                stopped = true
                return
            }
            guard var frame else { return }
            if frame.opcode == .connectionClose {
                if frame.length == 0 {
                    sentEmptyClose = true
                } else if let code = frame.binaryPayload.readInteger(as: UInt16.self) {
                    closeCodes.insert(Int(code))
                }
            }
        }
    }
}

/// Parses what the server wrote after its 101 and checks every frame.
private struct ServerOutput {
    var stream = ByteBuffer()
    var closeCode: Int?
    var closeFrames = 0

    mutating func feed(_ bytes: [UInt8], allowedCodes: () -> Set<Int>) {
        stream.writeBytes(bytes)
        while true {
            let parsed: WebSocketFrame?
            do {
                parsed = try WebSocketFrame.parse(from: &stream)
            } catch {
                fatalError("invariant violated: the server wrote a malformed frame: \(error)")
            }
            guard var frame = parsed else { return }
            check(!frame.mask, "the server masked a frame")
            check(frame.opcode.isDefined, "the server sent opcode \(frame.opcode)")
            // After its close frame an endpoint sends no data frame and no second close frame
            // (RFC 6455 §5.5.1); a ping or pong the application asks for may still go out.
            check(closeFrames == 0 || frame.opcode == .ping || frame.opcode == .pong, "the server sent a \(frame.opcode) frame after its close frame")
            if frame.opcode.isControl {
                check(frame.fin && frame.length <= 125, "the server sent a bad control frame (\(frame.length) bytes)")
            }
            if frame.opcode == .connectionClose {
                closeFrames += 1
                check(frame.length != 1, "the server sent a 1-byte close payload")
                if let code = frame.binaryPayload.readInteger(as: UInt16.self) {
                    closeCode = Int(code)
                    let allowed = allowedCodes()
                    check(allowed.contains(Int(code)), "the server closed with \(code); allowed: \(allowed.sorted())")
                }
            }
        }
    }
}

private let deflateOffer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    guard let flags = input.byte() else { return 0 }
    let deflate = flags & 0x01 != 0

    var configuration = WebSocketServer.Configuration()
    configuration.assembleFragments = flags & 0x02 != 0
    let limits = [(125, 256), (1024, 4096), (65536, 1 << 20), (200, 100_000)][Int(flags >> 2) & 0x3]
    configuration.maxReceivedFrameSize = limits.0
    configuration.maxReceivedMessageSize = limits.1
    configuration.maxFragmentsPerMessage = 16
    configuration.closeTimeout = .seconds(1)
    configuration.keepalive = flags & 0x10 != 0
    configuration.keepaliveInterval = .seconds(1)
    configuration.keepaliveGracePeriod = .seconds(1)
    configuration.requestTimeout = .seconds(1)
    if deflate { configuration.perMessageDeflate = .init() }

    let observed = Observed()
    observed.lateListener = flags & 0x20 != 0
    observed.maxMessageSize = limits.1
    let embedded = EmbeddedServer(configuration: configuration)
    let server = embedded.server

    @Sendable func attachListener(_ connection: WebSocketConnection) {
        connection.onMessage { message in
            observed.messages += 1
            let size: Int
            switch message {
            case .utf8(let text): size = text.utf8.count
            case .binary(let bytes): size = bytes.readableBytes
            }
            check(size <= observed.maxMessageSize, "a \(size)-byte message over the limit")
            if !observed.lateListener {
                // (Messages that waited for a late listener are handed over whenever it comes.)
                check(observed.closeEvents.isEmpty, "a message after the close event")
                let code = connection.closeReasonCode
                check(
                    code == -1 || observed.ownCodes.contains(code),
                    "a message after the connection started closing with \(code) (\(connection.closeDescription ?? ""))")
            }
        }
    }
    server.onRequest { request in
        _ = try? request.accept(protocol: request.requestedProtocols.first)
    }
    server.onConnect { connection in
        observed.connection = connection
        connection.onClose { code, description in
            observed.closeEvents.append((code, description))
        }
        if flags & 0x40 != 0 {
            connection.onFrame { _ in
                check(observed.closeEvents.isEmpty, "a frame after the close event")
                observed.frames += 1
            }
        }
        if !observed.lateListener { attachListener(connection) }
    }

    embedded.send(upgradeRequest(extra: deflate ? deflateOffer : ""))
    guard let (head, rest) = splitHead(embedded.written()), head.hasPrefix("HTTP/1.1 101 "), let connection = observed.connection else {
        fatalError("invariant violated: the server did not accept a valid upgrade")
    }
    check(!deflate || head.lowercased().contains("permessage-deflate"), "permessage-deflate was not negotiated")

    var shadow = PeerShadow()
    var output = ServerOutput()
    // A client-side compressor, to give the fuzzer valid compressed messages to start from.
    let compressor = deflate ? try? PerMessageDeflate().accepted(response: WebSocketExtension(name: "permessage-deflate")) : nil

    func allowedCodes() -> Set<Int> {
        var allowed: Set<Int> = [1002, 1007, 1009]
        allowed.formUnion(observed.ownCodes)
        allowed.formUnion(shadow.closeCodes.filter(WebSocketCloseReason.isValidOnWire))
        if shadow.sentEmptyClose { allowed.insert(1000) }
        return allowed
    }
    func deliver(_ bytes: [UInt8]) {
        shadow.feed(bytes)
        embedded.send(bytes)
    }
    output.feed(Array(rest), allowedCodes: allowedCodes)

    while !input.isAtEnd && embedded.channel.isActive {
        let op = input.byte()!
        switch op % 8 {
        case 0...3:
            // A frame: first header byte as given (FIN, RSV, opcode), a length, a payload.
            let first = input.byte() ?? 0x82
            let lengthByte = input.byte() ?? 0
            var payload: [UInt8]
            if lengthByte < 0xC0 {
                payload = Array(input.take(Int(lengthByte)))
            } else {
                let length = [126, 127, 1000, 1025, 4096, 65535, 65536, 65537][Int(lengthByte & 7)]
                payload = [UInt8](repeating: lengthByte & 0x08 != 0 ? 0x61 : (input.byte() ?? 0), count: length)
            }
            let masked = op & 0x80 == 0 || op & 0x40 == 0
            deliver(frameBytes(first: first, payload: payload, maskKey: masked ? (op, lengthByte, 0x5A, first) : nil))
        case 4:
            // Raw bytes, as they come.
            let count = Int(input.byte() ?? 0)
            deliver(Array(input.take(count)))
        case 5:
            // Something the server application does.
            switch (input.byte() ?? 0) % 9 {
            case 0:
                observed.ownCodes.insert(1000)
                try? connection.close()
            case 1:
                observed.ownCodes.insert(4000)
                try? connection.close(reasonCode: 4000, description: "fuzz")
            case 2:
                observed.ownCodes.insert(1002)
                connection.drop()
            case 3: connection.pause()
            case 4: connection.resume()
            case 5: connection.sendUTF(String(repeating: "é", count: Int(op >> 3)))
            case 6: try? connection.ping(ByteBuffer(bytes: [op]))
            case 7:
                if observed.lateListener && !observed.listenerAttached {
                    observed.listenerAttached = true
                    attachListener(connection)
                }
            default:
                connection.drop(reasonCode: 1006, description: "gone", skipCloseFrame: true)
                observed.ownCodes.insert(1006)
            }
            embedded.loop.run()
        case 6:
            // Time passes (close timeout, keepalive ping and grace period).
            embedded.loop.advanceTime(by: .milliseconds(Int64(input.byte() ?? 0) * 20))
        default:
            // A compressed message, made by a real compressor, in one or two frames.
            let size = Int(input.byte() ?? 0)
            let text = Array(repeating: Array("abcdefgh".utf8), count: size / 8 + 1).flatMap { $0 }
            guard let compressor,
                let (encoded, _) = try? compressor.encode(
                    message: ByteBuffer(bytes: text), opcode: .text, allowed: true, allocator: ByteBufferAllocator())
            else {
                deliver(frameBytes(first: 0x81, payload: text, maskKey: (1, 2, 3, 4)))
                break
            }
            let bytes = Array(encoded.readableBytesView)
            if op & 0x80 != 0 && bytes.count > 1 {
                let cut = bytes.count / 2
                deliver(frameBytes(first: 0x41, payload: Array(bytes[..<cut]), maskKey: (1, 2, 3, 4)))
                deliver(frameBytes(first: 0x80, payload: Array(bytes[cut...]), maskKey: (5, 6, 7, 8)))
            } else {
                deliver(frameBytes(first: 0xC1, payload: bytes, maskKey: (1, 2, 3, 4)))
            }
        }
        output.feed(embedded.written(), allowedCodes: allowedCodes)
        check(observed.closeEvents.count <= 1, "close fired \(observed.closeEvents.count) times")
    }

    embedded.finish()
    output.feed(embedded.written(), allowedCodes: allowedCodes)
    check(observed.closeEvents.count == 1, "close fired \(observed.closeEvents.count) times")
    let (code, _) = observed.closeEvents[0]
    check(
        code == 1005 || code == 1006 || allowedCodes().contains(code) || shadow.closeCodes.contains(code),
        "close event with code \(code)")
    if let sent = output.closeCode, [1002, 1007, 1009].contains(sent), !observed.ownCodes.contains(sent) {
        // The server failed the connection: that is the reason the close event reports,
        // unless a close had already begun.
        check(code == sent || !observed.ownCodes.isEmpty || !shadow.closeCodes.isEmpty || shadow.sentEmptyClose,
              "the server failed with \(sent) but close reported \(code)")
    }
    check(!connection.connected, "the connection still says it is connected")
    check(server.connectionCount == 0, "the server still counts \(server.connectionCount) connections")
    return 0
}

/// A frame's bytes with `first` as its first header byte, the shortest length encoding, and the
/// payload masked with `maskKey` when given.
private func frameBytes(first: UInt8, payload: [UInt8], maskKey: (UInt8, UInt8, UInt8, UInt8)?) -> [UInt8] {
    var bytes: [UInt8] = [first]
    let maskBit: UInt8 = maskKey == nil ? 0 : 0x80
    if payload.count <= 125 {
        bytes.append(maskBit | UInt8(payload.count))
    } else if payload.count <= 0xFFFF {
        bytes += [maskBit | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
    } else {
        bytes.append(maskBit | 127)
        bytes += (0..<8).reversed().map { UInt8(truncatingIfNeeded: payload.count >> ($0 * 8)) }
    }
    guard let key = maskKey else { return bytes + payload }
    let keyBytes = [key.0, key.1, key.2, key.3]
    bytes += keyBytes
    bytes += payload.enumerated().map { $0.element ^ keyBytes[$0.offset & 3] }
    return bytes
}
