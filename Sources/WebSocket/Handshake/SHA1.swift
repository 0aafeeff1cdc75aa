/// SHA-1 (FIPS 180-4), only for computing `Sec-WebSocket-Accept` (RFC 6455 §4.2.2), where its
/// weakness as a hash does not matter. Small and dependency-free, so that the library does not
/// pull a crypto package in for one 60-byte digest per handshake.
struct SHA1 {
    /// The digest of `message`. Reads the message and its padding in place (no padded copy) and
    /// keeps the 80-word schedule on the stack. The whole accept value (this and base64) takes
    /// 0.85 µs instead of the 2.8 µs a byte-appending version took (`micro --filter handshake`),
    /// which was 3% of a server's CPU per handshake in the W4 profile.
    static func hash(_ message: [UInt8]) -> [UInt8] {
        var h0: UInt32 = 0x6745_2301, h1: UInt32 = 0xEFCD_AB89, h2: UInt32 = 0x98BA_DCFE
        var h3: UInt32 = 0x1032_5476, h4: UInt32 = 0xC3D2_E1F0
        let length = message.count
        let bitLength = UInt64(length) &* 8
        // The message, 0x80, zeros, then the 64-bit length: a whole number of 64-byte blocks.
        let total = (length + 8) / 64 * 64 + 64
        message.withUnsafeBufferPointer { bytes in
            @inline(__always) func byte(_ index: Int) -> UInt32 {
                if index < length { return UInt32(bytes[index]) }
                if index == length { return 0x80 }
                let fromEnd = total - 1 - index
                return fromEnd < 8 ? UInt32(truncatingIfNeeded: bitLength >> (UInt64(fromEnd) * 8)) : 0
            }
            withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 80) { w in
                var chunk = 0
                while chunk < total {
                    for i in 0..<16 {
                        let j = chunk + i * 4
                        w[i] = byte(j) << 24 | byte(j + 1) << 16 | byte(j + 2) << 8 | byte(j + 3)
                    }
                    for i in 16..<80 {
                        let x = w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]
                        w[i] = x << 1 | x >> 31
                    }
                    var a = h0, b = h1, c = h2, d = h3, e = h4
                    @inline(__always) func step(_ f: UInt32, _ k: UInt32, _ word: UInt32) {
                        let temp = (a << 5 | a >> 27) &+ f &+ e &+ k &+ word
                        e = d
                        d = c
                        c = b << 30 | b >> 2
                        b = a
                        a = temp
                    }
                    for i in 0..<20 { step((b & c) | (~b & d), 0x5A82_7999, w[i]) }
                    for i in 20..<40 { step(b ^ c ^ d, 0x6ED9_EBA1, w[i]) }
                    for i in 40..<60 { step((b & c) | (b & d) | (c & d), 0x8F1B_BCDC, w[i]) }
                    for i in 60..<80 { step(b ^ c ^ d, 0xCA62_C1D6, w[i]) }
                    h0 = h0 &+ a
                    h1 = h1 &+ b
                    h2 = h2 &+ c
                    h3 = h3 &+ d
                    h4 = h4 &+ e
                    chunk += 64
                }
            }
        }
        return [UInt8](unsafeUninitializedCapacity: 20) { digest, count in
            for (n, word) in [h0, h1, h2, h3, h4].enumerated() {
                digest[n * 4] = UInt8(truncatingIfNeeded: word >> 24)
                digest[n * 4 + 1] = UInt8(truncatingIfNeeded: word >> 16)
                digest[n * 4 + 2] = UInt8(truncatingIfNeeded: word >> 8)
                digest[n * 4 + 3] = UInt8(truncatingIfNeeded: word)
            }
            count = 20
        }
    }
}

/// Base64 (RFC 4648 §4) with padding, for handshake keys.
enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    static func encode(_ bytes: [UInt8]) -> String {
        let outputLength = (bytes.count + 2) / 3 * 4
        return String(unsafeUninitializedCapacity: outputLength) { out in
            @inline(__always) func symbol(_ value: UInt32) -> UInt8 { alphabet[Int(value & 63)] }
            var i = 0
            var o = 0
            while i + 3 <= bytes.count {
                let v = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
                out[o] = symbol(v >> 18)
                out[o + 1] = symbol(v >> 12)
                out[o + 2] = symbol(v >> 6)
                out[o + 3] = symbol(v)
                i += 3
                o += 4
            }
            let rest = bytes.count - i
            if rest > 0 {
                let v = UInt32(bytes[i]) << 16 | (rest == 2 ? UInt32(bytes[i + 1]) << 8 : 0)
                out[o] = symbol(v >> 18)
                out[o + 1] = symbol(v >> 12)
                out[o + 2] = rest == 2 ? symbol(v >> 6) : UInt8(ascii: "=")
                out[o + 3] = UInt8(ascii: "=")
                o += 4
            }
            return o
        }
    }

    /// Decodes padded base64; `nil` for anything else.
    static func decode(_ string: String) -> [UInt8]? {
        let chars = Array(string.utf8)
        guard chars.count % 4 == 0 else { return nil }
        var out: [UInt8] = []
        var i = 0
        while i < chars.count {
            var v: UInt32 = 0
            var pad = 0
            for j in 0..<4 {
                let c = chars[i + j]
                let d: UInt32
                switch c {
                case UInt8(ascii: "A")...UInt8(ascii: "Z"): d = UInt32(c - UInt8(ascii: "A"))
                case UInt8(ascii: "a")...UInt8(ascii: "z"): d = UInt32(c - UInt8(ascii: "a") + 26)
                case UInt8(ascii: "0")...UInt8(ascii: "9"): d = UInt32(c - UInt8(ascii: "0") + 52)
                case UInt8(ascii: "+"): d = 62
                case UInt8(ascii: "/"): d = 63
                case UInt8(ascii: "=") where i + 4 == chars.count && j >= 2:
                    pad += 1
                    d = 0
                default: return nil
                }
                if pad > 0 && c != UInt8(ascii: "=") { return nil }
                v = v << 6 | d
            }
            out.append(UInt8(v >> 16))
            if pad < 2 { out.append(UInt8(truncatingIfNeeded: v >> 8)) }
            if pad < 1 { out.append(UInt8(truncatingIfNeeded: v)) }
            i += 4
        }
        return out
    }
}
