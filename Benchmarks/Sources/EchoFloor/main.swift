import BenchSupport
import NIOCore
import NIOHTTP1
import NIOPosix
import WebSocket

// Not a peer and not a WebSocket server anyone should run: the least work SwiftNIO can do to
// serve the load generator's traffic, as a floor for what any library on NIO can reach. One
// handler per connection and no pipeline changes: it finds the end of the upgrade request and
// its Sec-WebSocket-Key with a byte search (no HTTP parser, no header validation), answers 101,
// then echoes each frame unmasked (no UTF-8 check, no limits, no fragmentation rules, no
// extensions, no timers, no events). It answers ping with pong and close with close, then
// closes. The Sec-WebSocket-Accept value comes from this library's public
// `WebSocketHandshake.acceptValue(forKey:)` (0.85 µs; every server must compute it).
final class FloorHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var upgraded: Bool

    init(upgraded: Bool = false) { self.upgraded = upgraded }
    private var pending: ByteBuffer?
    private var closing = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if var buffer = pending {
            buffer.writeBuffer(&incoming)
            pending = nil
            process(context: context, buffer: &buffer)
        } else {
            process(context: context, buffer: &incoming)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    private func process(context: ChannelHandlerContext, buffer: inout ByteBuffer) {
        if !upgraded {
            guard let key = Self.upgradeKey(in: &buffer) else {
                pending = buffer
                return
            }
            upgraded = true
            let response = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Accept: \(WebSocketHandshake.acceptValue(forKey: key))\r\n\r\n"
            context.write(wrapOutboundOut(context.channel.allocator.buffer(string: response)), promise: nil)
        }
        while !closing, let frame = Self.nextFrame(in: &buffer, allocator: context.channel.allocator) {
            switch frame.opcode {
            case 0x9:
                context.write(wrapOutboundOut(Self.frame(opcode: 0xA, payload: frame.payload, allocator: context.channel.allocator)), promise: nil)
            case 0x8:
                closing = true
                var payload = frame.payload
                let code = payload.readSlice(length: min(2, payload.readableBytes)) ?? ByteBuffer()
                let reply = Self.frame(opcode: 0x8, payload: code, allocator: context.channel.allocator)
                context.writeAndFlush(wrapOutboundOut(reply)).whenComplete { _ in context.close(promise: nil) }
            case 0xA:
                break
            default:
                context.write(wrapOutboundOut(frame.echo), promise: nil)
            }
        }
        if buffer.readableBytes > 0 { pending = buffer }
    }

    /// The key of a complete upgrade request at the front of `buffer` (which it consumes), or nil
    /// while the request's end has not arrived.
    private static func upgradeKey(in buffer: inout ByteBuffer) -> String? {
        // Plain byte loops: the standard library's generic `firstRange(of:)` costs more than
        // the rest of this handler's handshake put together.
        let found: (key: String, end: Int)? = buffer.withUnsafeReadableBytes { bytes in
            let count = bytes.count
            var end = 3
            while end < count {
                if bytes[end] == 10 && bytes[end - 1] == 13 && bytes[end - 2] == 10 && bytes[end - 3] == 13 { break }
                end += 1
            }
            guard end < count else { return nil }
            let name: StaticString = "\nsec-websocket-key:"
            let nameLength = name.utf8CodeUnitCount
            let namePointer = name.utf8Start
            var i = 0
            while i + nameLength <= end {
                var j = 0
                while j < nameLength {
                    var byte = bytes[i + j]
                    if byte >= 65 && byte <= 90 { byte |= 0x20 }
                    if byte != namePointer[j] { break }
                    j += 1
                }
                if j == nameLength {
                    var start = i + j
                    while bytes[start] == 32 { start += 1 }
                    var stop = start
                    while bytes[stop] != 13 && bytes[stop] != 32 { stop += 1 }
                    return (String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<stop]), as: UTF8.self), end + 1)
                }
                i += 1
            }
            return ("", end + 1)
        }
        guard let found else { return nil }
        buffer.moveReaderIndex(forwardBy: found.end)
        return found.key
    }

    private struct Frame {
        var opcode: UInt8
        var payload: ByteBuffer
        var echo: ByteBuffer
    }

    /// The next whole frame at the front of `buffer`, unmasked: its payload, and the same frame
    /// to send back (header and unmasked payload in one buffer).
    private static func nextFrame(in buffer: inout ByteBuffer, allocator: ByteBufferAllocator) -> Frame? {
        guard buffer.readableBytes >= 2,
              let b0 = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self),
              let b1 = buffer.getInteger(at: buffer.readerIndex + 1, as: UInt8.self) else { return nil }
        var headerLength = 2
        var length = Int(b1 & 0x7F)
        if length == 126 {
            guard let l = buffer.getInteger(at: buffer.readerIndex + 2, as: UInt16.self) else { return nil }
            length = Int(l)
            headerLength = 4
        } else if length == 127 {
            guard let l = buffer.getInteger(at: buffer.readerIndex + 2, as: UInt64.self) else { return nil }
            length = Int(l)
            headerLength = 10
        }
        let masked = b1 & 0x80 != 0
        let maskLength = masked ? 4 : 0
        guard buffer.readableBytes >= headerLength + maskLength + length else { return nil }
        var key: UInt32 = 0
        if masked { key = buffer.getInteger(at: buffer.readerIndex + headerLength, endianness: .little, as: UInt32.self)! }
        buffer.moveReaderIndex(forwardBy: headerLength + maskLength)
        var echo = allocator.buffer(capacity: 10 + length)
        writeHeader(b0, length: length, to: &echo)
        let payloadStart = echo.writerIndex
        buffer.withUnsafeReadableBytes { source in
            echo.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { target in
                unmask(UnsafeRawBufferPointer(rebasing: source[0..<length]), key: key, into: target)
                return length
            }
        }
        buffer.moveReaderIndex(forwardBy: length)
        let payload = echo.getSlice(at: payloadStart, length: length)!
        return Frame(opcode: b0 & 0x0F, payload: payload, echo: echo)
    }

    private static func frame(opcode: UInt8, payload: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        var out = allocator.buffer(capacity: 10 + payload.readableBytes)
        writeHeader(0x80 | opcode, length: payload.readableBytes, to: &out)
        out.writeImmutableBuffer(payload)
        return out
    }

    private static func writeHeader(_ b0: UInt8, length: Int, to out: inout ByteBuffer) {
        out.writeInteger(b0)
        if length < 126 {
            out.writeInteger(UInt8(length))
        } else if length <= 0xFFFF {
            out.writeInteger(UInt8(126))
            out.writeInteger(UInt16(length))
        } else {
            out.writeInteger(UInt8(127))
            out.writeInteger(UInt64(length))
        }
    }

    /// XOR with the masking key, eight bytes at a time.
    private static func unmask(_ source: UnsafeRawBufferPointer, key: UInt32, into target: UnsafeMutableRawBufferPointer) {
        let count = source.count
        let key64 = UInt64(key) | UInt64(key) << 32
        var i = 0
        while i + 8 <= count {
            target.storeBytes(of: source.loadUnaligned(fromByteOffset: i, as: UInt64.self) ^ key64, toByteOffset: i, as: UInt64.self)
            i += 8
        }
        while i < count {
            target[i] = source[i] ^ UInt8(truncatingIfNeeded: key >> (UInt32(i & 3) * 8))
            i += 1
        }
    }
}

/// `--http`: the upgrade request goes through NIO's HTTP/1.1 decoder (llhttp) first; on its end
/// the decoder leaves and the frame echo takes over. Measures what NIO's HTTP parsing and the
/// pipeline change cost a handshake.
final class FloorHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = ByteBuffer
    private let decoder: ByteToMessageHandler<HTTPRequestDecoder>
    private var key = ""
    init(decoder: ByteToMessageHandler<HTTPRequestDecoder>) { self.decoder = decoder }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            key = head.headers.first(name: "sec-websocket-key") ?? ""
        case .body:
            break
        case .end:
            let response = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Accept: \(WebSocketHandshake.acceptValue(forKey: key))\r\n\r\n"
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: response)), promise: nil)
            let pipeline = context.pipeline.syncOperations
            try! pipeline.addHandler(FloorHandler(upgraded: true))
            _ = pipeline.removeHandler(context: context)
            _ = pipeline.removeHandler(decoder)
        }
    }
}

let arguments = EchoArguments()
let viaHTTP = CommandLine.arguments.contains("--http")
let group = MultiThreadedEventLoopGroup(numberOfThreads: arguments.threads)
let bootstrap = ServerBootstrap(group: group)
    .serverChannelOption(.backlog, value: 4096)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
    .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
            if viaHTTP {
                let decoder = ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes))
                try channel.pipeline.syncOperations.addHandlers([decoder, FloorHTTPHandler(decoder: decoder)])
            } else {
                try channel.pipeline.syncOperations.addHandler(FloorHandler())
            }
        }
    }
let channel = try await bootstrap.bind(host: "127.0.0.1", port: arguments.port).get()
announce("echo-floor listening on 127.0.0.1:\(arguments.port) threads=\(arguments.threads)")
try await channel.closeFuture.get()
