import NIOCore

/// How a connection takes published messages, decided once from what it negotiated.
enum WebSocketTopicFraming: Hashable, Sendable {
    /// No extension: the publication's shared uncompressed frames.
    case plain
    /// permessage-deflate without context takeover on our side: the shared compressed frames of
    /// its key (uncompressed ones under the threshold).
    case sharedDeflate(PerMessageDeflateCodec.SharedKey)
    /// Anything else (a compressor that keeps its context, other extensions): each message is
    /// framed and compressed by the connection's own state machine.
    case own

    init(codecs: [any WebSocketExtensionCodec]) {
        if codecs.isEmpty {
            self = .plain
        } else if codecs.count == 1, let deflate = codecs[0] as? PerMessageDeflateCodec, let key = deflate.sharedKey {
            self = .sharedDeflate(key)
        } else {
            self = .own
        }
    }
}

/// One published message, framed once for every kind of subscriber that needs it: the frames
/// are built when it is published and shared (not copied) by every subscriber's write.
final class WebSocketPublication: Sendable {
    /// What was published, before framing.
    enum Payload: Sendable {
        case text(String)
        case binary(ByteBuffer)
    }

    let opcode: WebSocketOpcode
    /// The message itself (for subscribers that frame it themselves).
    let payload: ByteBuffer
    let compress: Bool
    /// The publishing connection, which does not receive it (``WebSocketConnection/publish(_:to:compress:)-(WebSocketMessage,_,_)``).
    let sender: ObjectIdentifier?
    /// The uncompressed frames (empty when no subscriber takes them).
    private let plain: ByteBuffer
    /// The compressed frames per shared compressor key; nil where the message goes uncompressed.
    private let deflated: [(key: PerMessageDeflateCodec.SharedKey, frames: ByteBuffer?)]
    /// The bytes it queues for one subscriber (the uncompressed frames' size).
    let size: Int

    init(
        _ payload: Payload, compress: Bool, sender: ObjectIdentifier?, framings: [WebSocketTopicFraming],
        fragmentationThreshold: Int?
    ) {
        let allocator = ByteBufferAllocator()
        switch payload {
        case .text(let string):
            self.opcode = .text
            var buffer = allocator.buffer(capacity: string.utf8.count)
            buffer.writeString(string)
            self.payload = buffer
        case .binary(let buffer):
            self.opcode = .binary
            self.payload = buffer
        }
        self.compress = compress
        self.sender = sender
        var deflated: [(key: PerMessageDeflateCodec.SharedKey, frames: ByteBuffer?)] = []
        var needsPlain = false
        for framing in framings {
            switch framing {
            case .plain:
                needsPlain = true
            case .sharedDeflate(let key):
                // A failure of zlib (out of memory) sends it uncompressed, which RFC 7692 allows.
                let compressed = compress ? (try? PerMessageDeflateCodec.compressShared(self.payload, key: key, allocator: allocator)) ?? nil : nil
                if let compressed {
                    deflated.append((key, Self.frames(opcode: opcode, payload: compressed, rsv1: true, threshold: fragmentationThreshold, allocator: allocator)))
                } else {
                    deflated.append((key, nil))
                    needsPlain = true
                }
            case .own:
                break
            }
        }
        self.deflated = deflated
        self.plain = needsPlain ? Self.frames(opcode: opcode, payload: self.payload, rsv1: false, threshold: fragmentationThreshold, allocator: allocator) : ByteBuffer()
        self.size = needsPlain ? plain.readableBytes : self.payload.readableBytes
    }

    /// The frames for subscribers of `framing` (not ``WebSocketTopicFraming/own``).
    func frames(for framing: WebSocketTopicFraming) -> ByteBuffer {
        if case .sharedDeflate(let key) = framing, let entry = deflated.first(where: { $0.key == key }), let frames = entry.frames {
            return frames
        }
        return plain
    }

    /// A server's frames of a message: unmasked, split at `threshold` when given, RSV1 on the
    /// first frame of a compressed one. The payload is copied once, behind its headers.
    static func frames(opcode: WebSocketOpcode, payload: ByteBuffer, rsv1: Bool, threshold: Int?, allocator: ByteBufferAllocator) -> ByteBuffer {
        let length = payload.readableBytes
        guard let threshold, length > threshold else {
            let header = WebSocketFrameHeader(fin: true, rsv1: rsv1, opcode: opcode, payloadLength: UInt64(length))
            var buffer = allocator.buffer(capacity: header.encodedLength + length)
            header.write(to: &buffer)
            buffer.writeImmutableBuffer(payload)
            return buffer
        }
        let pieces = (length + threshold - 1) / threshold
        let headerBytes = WebSocketFrameHeader.encodedLength(payloadLength: threshold, masked: false)
        var buffer = allocator.buffer(capacity: length + pieces * headerBytes)
        var rest = payload
        var first = true
        while rest.readableBytes > 0 {
            let pieceLength = min(threshold, rest.readableBytes)
            let piece = rest.readSlice(length: pieceLength)!
            let header = WebSocketFrameHeader(
                fin: rest.readableBytes == 0, rsv1: rsv1 && first, opcode: first ? opcode : .continuation, payloadLength: UInt64(pieceLength))
            header.write(to: &buffer)
            buffer.writeImmutableBuffer(piece)
            first = false
        }
        return buffer
    }
}

/// Consecutive publications for the same subscribers, joined into one buffer per framing (copied
/// once per event loop, then shared by every subscriber's write), with where each message ends.
struct WebSocketJoinedPublications {
    struct Frames {
        let buffer: ByteBuffer
        /// The end offset of each message in `buffer` (from its reader index).
        let ends: [Int]
    }

    private let publications: [WebSocketPublication]
    private var cache: [(framing: WebSocketTopicFraming, frames: Frames)] = []

    init(_ publications: [WebSocketPublication]) {
        self.publications = publications
    }

    mutating func frames(for framing: WebSocketTopicFraming) -> Frames {
        if let hit = cache.first(where: { $0.framing == framing }) { return hit.frames }
        let frames: Frames
        if publications.count == 1 {
            let buffer = publications[0].frames(for: framing)
            frames = Frames(buffer: buffer, ends: [buffer.readableBytes])
        } else {
            let parts = publications.map { $0.frames(for: framing) }
            var buffer = ByteBufferAllocator().buffer(capacity: parts.reduce(0) { $0 + $1.readableBytes })
            var ends: [Int] = []
            ends.reserveCapacity(parts.count)
            for part in parts {
                buffer.writeImmutableBuffer(part)
                ends.append(buffer.readableBytes)
            }
            frames = Frames(buffer: buffer, ends: ends)
        }
        cache.append((framing, frames))
        return frames
    }
}
