import CompressNIO
import NIOCore

/// One connection's permessage-deflate state: a raw-DEFLATE compressor for outgoing messages and
/// a decompressor for incoming ones (RFC 7692 §7.2), each kept across messages (context
/// takeover) or reset after each, as negotiated. Lives on the connection's event loop.
final class PerMessageDeflateCodec: WebSocketExtensionCodec {
    let negotiated: WebSocketExtension
    var reservedBits: UInt8 { 0x40 }

    private let options: PerMessageDeflate.Options
    private let compressWindowBits: Int
    private let resetCompressor: Bool
    private let resetDecompressor: Bool
    /// Made on first use, and dropped after each message when the context is not kept, so an
    /// idle connection without context takeover holds no zlib state.
    private var compressor: ZlibCompressor?
    private var decompressor: ZlibDecompressor?
    /// The connection's counts for swift-metrics; nil without a metrics backend.
    var metrics: WebSocketConnectionMetrics?

    /// The empty stored block that ends every compressed message (RFC 7692 §7.2.1).
    private static let tail: [UInt8] = [0x00, 0x00, 0xFF, 0xFF]

    init?(negotiated: WebSocketExtension, options: PerMessageDeflate.Options, compressWindowBits: Int, resetCompressor: Bool, resetDecompressor: Bool) {
        self.negotiated = negotiated
        self.options = options
        self.compressWindowBits = compressWindowBits
        self.resetCompressor = resetCompressor
        self.resetDecompressor = resetDecompressor
    }

    // MARK: Outgoing

    func encode(message: ByteBuffer, opcode: WebSocketOpcode, allowed: Bool, allocator: ByteBufferAllocator) throws -> (payload: ByteBuffer, reservedBits: UInt8)? {
        // zlib cannot make raw DEFLATE with an 8-bit window (it refuses, and a 9-bit stream would
        // break the agreement): under an 8-bit limit, messages go out uncompressed, which RFC 7692
        // always allows.
        guard allowed, compressWindowBits >= 9, message.readableBytes >= options.threshold else { return nil }
        let compressor = try self.compressor ?? Self.makeCompressor(options: options, windowBits: compressWindowBits)
        let output = try Self.deflate(message, with: compressor, allocator: allocator)
        metrics?.deflated(from: message.readableBytes, to: output.readableBytes)
        if resetCompressor { self.compressor = nil } else { self.compressor = compressor }
        return (output, 0x40)
    }

    /// What makes two connections' compressed output of one message the same bytes: no context
    /// takeover on our side (every message starts a fresh DEFLATE stream), the same window,
    /// level and memory level, and the same threshold. Topics compress a published message once
    /// for all subscribers with the same key (uWebSockets' shared compressor).
    struct SharedKey: Hashable, Sendable {
        var windowBits: Int
        var compressionLevel: Int
        var memoryLevel: Int
        var threshold: Int
    }

    /// This connection's ``SharedKey``; nil when its compressor keeps its context between
    /// messages (each of its messages depends on the ones before: compressed for it alone).
    var sharedKey: SharedKey? {
        guard resetCompressor else { return nil }
        return SharedKey(windowBits: compressWindowBits, compressionLevel: options.compressionLevel, memoryLevel: options.memoryLevel, threshold: options.threshold)
    }

    /// The compressed payload every connection of `key` would send for `message` (with RSV1 on
    /// its first frame); nil when such a connection sends it uncompressed (under the threshold,
    /// or an 8-bit window).
    static func compressShared(_ message: ByteBuffer, key: SharedKey, allocator: ByteBufferAllocator) throws -> ByteBuffer? {
        guard key.windowBits >= 9, message.readableBytes >= key.threshold else { return nil }
        var options = PerMessageDeflate.Options()
        options.compressionLevel = key.compressionLevel
        options.memoryLevel = key.memoryLevel
        return try deflate(message, with: makeCompressor(options: options, windowBits: key.windowBits), allocator: allocator)
    }

    /// One message through `compressor`, sync-flushed, without the 00 00 FF FF tail.
    private static func deflate(_ message: ByteBuffer, with compressor: ZlibCompressor, allocator: ByteBufferAllocator) throws -> ByteBuffer {
        var input = message
        var output = allocator.buffer(capacity: compressor.maxSize(from: input))
        while true {
            do {
                try compressor.deflate(from: &input, to: &output, flush: .sync)
                if input.readableBytes == 0 && output.writableBytes > 0 { break }
            } catch let error as CompressNIOError where error == .bufferOverflow {
                // Output full: grow and go on.
            }
            output.reserveCapacity(minimumWritableBytes: max(1024, output.capacity / 2))
        }
        // Drop the 00 00 FF FF the sync flush ends with.
        if output.readableBytes >= 4, output.readableBytesView.suffix(4).elementsEqual(Self.tail) {
            output.moveWriterIndex(to: output.writerIndex - 4)
        }
        return output
    }

    private static func makeCompressor(options: PerMessageDeflate.Options, windowBits compressWindowBits: Int) throws -> ZlibCompressor {
        let level = ZlibConfiguration.CompressionLevel(rawValue: Int32(options.compressionLevel)) ?? .defaultCompressionLevel
        let memory = ZlibConfiguration.MemoryLevel(rawValue: Int32(options.memoryLevel)) ?? .defaultMemoryLevel
        var configuration = ZlibConfiguration(compressionLevel: level, memoryLevel: memory)
        configuration.windowSize = Int32(compressWindowBits)
        return try ZlibCompressor(algorithm: .deflate, configuration: configuration)
    }

    // MARK: Incoming

    func startDecoding(reservedBits: UInt8) -> Bool {
        reservedBits == 0x40
    }

    func decode(_ input: inout ByteBuffer, endOfMessage: Bool, into output: inout ByteBuffer, limit: Int) throws {
        let decompressor: ZlibDecompressor
        do {
            // Always inflate with the largest window: it reads anything the peer may send.
            decompressor = try self.decompressor ?? ZlibDecompressor(algorithm: .deflate, windowSize: 15)
        } catch {
            throw WebSocketProtocolError(WebSocketCloseReason.internalServerError, "Could not set up zlib: \(error)")
        }
        if self.decompressor == nil {
            scratch = ByteBufferAllocator().buffer(capacity: 32 * 1024)
        }
        self.decompressor = decompressor
        let start = output.writerIndex
        let compressed = input.readableBytes
        try inflate(&input, decompressor, into: &output, limit: limit)
        metrics?.inflated(from: compressed - input.readableBytes, to: output.writerIndex - start)
        if endOfMessage {
            // The tail can complete a code the input left open: it counts against the same limit.
            var tail = ByteBuffer(bytes: Self.tail)
            try inflate(&tail, decompressor, into: &output, limit: limit - (output.writerIndex - start))
            if resetDecompressor {
                self.decompressor = nil
                scratch = ByteBuffer()
            }
        }
    }

    /// Inflates all of `input` into `output` through a fixed 32 KiB scratch buffer, checking
    /// the limit after each piece: a deflate bomb costs at most the limit plus one piece.
    /// (compress-nio's inflate fills all the writable room of its output buffer, and a
    /// `ByteBuffer`'s room is rounded up to a power of two, so the scratch buffer is what bounds
    /// each step.)
    private func inflate(_ input: inout ByteBuffer, _ decompressor: ZlibDecompressor, into output: inout ByteBuffer, limit: Int) throws {
        var produced = 0
        while true {
            scratch.clear()
            var outputFull = false
            do {
                try decompressor.inflate(from: &input, to: &scratch)
            } catch let error as CompressNIOError where error == .bufferOverflow {
                outputFull = true
            } catch let error as CompressNIOError where error == .inputBufferOverflow {
                // All input consumed, more is needed: normal between frames.
            } catch {
                throw WebSocketProtocolError(WebSocketCloseReason.invalidData, "Invalid compressed data (zlib: \(error))")
            }
            produced += scratch.readableBytes
            if produced > limit {
                throw WebSocketProtocolError(
                    WebSocketCloseReason.messageTooBig, "Decompressed message exceeds the maximum accepted message size")
            }
            output.writeBuffer(&scratch)
            if outputFull { continue }
            guard input.readableBytes > 0 else { return }
            // The peer ended a DEFLATE stream (a final block) and more follows: start a new one.
            do {
                try decompressor.reset()
            } catch {
                throw WebSocketProtocolError(WebSocketCloseReason.invalidData, "Invalid compressed data after the end of a DEFLATE stream")
            }
        }
    }

    /// The inflate output buffer, kept while the decompressor is.
    private var scratch = ByteBuffer()
}
