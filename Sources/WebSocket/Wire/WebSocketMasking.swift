/// A 4-byte masking key (RFC 6455 §5.3).
public struct WebSocketMaskingKey: Sendable, Hashable {
    /// The four key bytes in wire order.
    public var bytes: (UInt8, UInt8, UInt8, UInt8)

    /// Creates a key from four bytes in wire order.
    public init(_ b0: UInt8, _ b1: UInt8, _ b2: UInt8, _ b3: UInt8) {
        self.bytes = (b0, b1, b2, b3)
    }

    /// Creates a key from an array of exactly four bytes; `nil` otherwise.
    public init?(_ array: [UInt8]) {
        guard array.count == 4 else { return nil }
        self.init(array[0], array[1], array[2], array[3])
    }

    /// A fresh key from the system's cryptographically secure random source, as RFC 6455
    /// §5.3 requires for every frame a client sends.
    public static func random() -> WebSocketMaskingKey {
        var generator = SystemRandomNumberGenerator()
        return WebSocketMaskingKey(wireValue: generator.next())
    }

    /// The key as a 32-bit integer whose memory layout (little-endian) is the wire order.
    @usableFromInline var wireValue: UInt32 {
        UInt32(bytes.0) | UInt32(bytes.1) << 8 | UInt32(bytes.2) << 16 | UInt32(bytes.3) << 24
    }

    @usableFromInline init(wireValue v: UInt32) {
        self.bytes = (UInt8(truncatingIfNeeded: v), UInt8(truncatingIfNeeded: v >> 8),
                      UInt8(truncatingIfNeeded: v >> 16), UInt8(truncatingIfNeeded: v >> 24))
    }

    public static func == (lhs: WebSocketMaskingKey, rhs: WebSocketMaskingKey) -> Bool {
        lhs.wireValue == rhs.wireValue
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(wireValue) }

    /// The key byte that applies at `index`.
    public subscript(index: Int) -> UInt8 {
        switch index & 3 {
        case 0: return bytes.0
        case 1: return bytes.1
        case 2: return bytes.2
        default: return bytes.3
        }
    }
}

/// Masking and unmasking (the same XOR), a machine word and more at a time.
///
/// NIO's `WebSocketMaskingKey.unmask` works byte by byte; this is the hot path of every
/// server, so it works on 32 bytes per iteration with four 64-bit XORs, then on 8-byte
/// words, then bytes. Unaligned loads and stores keep it correct on any buffer offset.
enum WebSocketMasking {
    /// XORs `count` bytes from `source` with the key into `destination` (they may be the
    /// same memory). `offset` is the position in the frame payload of the first byte, so a
    /// payload processed in pieces gets the right key rotation. Returns the new offset.
    @inline(__always)
    static func apply(
        key: WebSocketMaskingKey,
        offset: Int,
        source: UnsafeRawPointer,
        destination: UnsafeMutableRawPointer,
        count: Int
    ) {
        // Rotate the key so that byte 0 of this piece lines up with key[offset % 4].
        let shift = UInt32((offset & 3) * 8)
        let key32 = shift == 0 ? key.wireValue : (key.wireValue >> shift) | (key.wireValue << (32 - shift))
        let key64 = UInt64(key32) | UInt64(key32) << 32
        var i = 0
        while i &+ 32 <= count {
            let a = source.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            let b = source.loadUnaligned(fromByteOffset: i &+ 8, as: UInt64.self)
            let c = source.loadUnaligned(fromByteOffset: i &+ 16, as: UInt64.self)
            let d = source.loadUnaligned(fromByteOffset: i &+ 24, as: UInt64.self)
            destination.storeBytes(of: a ^ key64, toByteOffset: i, as: UInt64.self)
            destination.storeBytes(of: b ^ key64, toByteOffset: i &+ 8, as: UInt64.self)
            destination.storeBytes(of: c ^ key64, toByteOffset: i &+ 16, as: UInt64.self)
            destination.storeBytes(of: d ^ key64, toByteOffset: i &+ 24, as: UInt64.self)
            i &+= 32
        }
        while i &+ 8 <= count {
            let a = source.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            destination.storeBytes(of: a ^ key64, toByteOffset: i, as: UInt64.self)
            i &+= 8
        }
        var k = key64
        while i < count {
            let byte = source.load(fromByteOffset: i, as: UInt8.self)
            destination.storeBytes(of: byte ^ UInt8(truncatingIfNeeded: k), toByteOffset: i, as: UInt8.self)
            k >>= 8
            i &+= 1
        }
    }
}

extension WebSocketMaskingKey {
    /// Masks (or unmasks: XOR is its own inverse) `bytes` in place, starting at key
    /// position `offset` within the frame payload.
    public func apply(to bytes: inout [UInt8], offset: Int = 0) {
        let count = bytes.count
        bytes.withUnsafeMutableBytes { raw in
            guard let base = raw.baseAddress else { return }
            WebSocketMasking.apply(key: self, offset: offset, source: base, destination: base, count: count)
        }
    }
}
