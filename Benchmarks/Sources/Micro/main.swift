import NIOCore
import WebSocket

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Micro-benchmarks of the library's hot paths, through its public API: frame parse, masking,
// UTF-8 validation, frame serialization. Each case runs for about `seconds`, five times; the
// median is printed in MB/s of payload (and operations per second).
//
//   micro [--seconds 0.3] [--filter NAME]
//   micro --publish-empty N   only N publications to a topic without subscribers, then exit
//                             (Benchmarks/publish-allocs.sh counts their allocations)

var seconds = 0.3
var filter: String?
var publishEmpty: Int?
var argv = CommandLine.arguments.dropFirst()
while let a = argv.popFirst() {
    switch a {
    case "--seconds": seconds = Double(argv.popFirst() ?? "") ?? seconds
    case "--filter": filter = argv.popFirst()
    case "--publish-empty": publishEmpty = Int(argv.popFirst() ?? "")
    default: print("usage: micro [--seconds S] [--filter NAME] | --publish-empty N"); exit(2)
    }
}

if let publishEmpty {
    // A server that does not listen: publishing needs no socket. One subscriber-less topic, text
    // and binary publications, from this thread.
    let server = WebSocketServer()
    let payload = ByteBuffer(bytes: [1, 2, 3, 4])
    var queued = 0
    for index in 0..<publishEmpty {
        queued += try index & 1 == 0 ? server.publish("nobody listens", to: "empty") : server.publish(payload, to: "empty")
    }
    print("published \(publishEmpty) times, queued for \(queued)")
    exit(0)
}

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

@inline(never) func blackHole<T>(_ value: T) { withExtendedLifetime(value) {} }

/// Runs `body` (which processes `bytesPerCall` bytes in `opsPerCall` operations) repeatedly.
@MainActor func bench(_ name: String, bytesPerCall: Int, opsPerCall: Int = 1, _ body: () -> Void) {
    if let filter, !name.contains(filter) { return }
    for _ in 0..<3 { body() }
    var rates: [Double] = []
    for _ in 0..<5 {
        var calls = 0
        let start = now()
        var elapsed = 0.0
        repeat {
            for _ in 0..<16 { body() }
            calls += 16
            elapsed = now() - start
        } while elapsed < seconds
        rates.append(Double(calls) / elapsed)
    }
    rates.sort()
    let callsPerSecond = rates[2]
    let mbps = callsPerSecond * Double(bytesPerCall) / 1e6
    let ops = callsPerSecond * Double(opsPerCall)
    print(pad(name, 40) + pad(fixed(mbps, 1), 10, left: true) + " MB/s" + pad(fixed(ops, 0), 14, left: true) + " ops/s")
}

func fixed(_ v: Double, _ decimals: Int) -> String {
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let n = Int((v * scale).rounded())
    if decimals == 0 { return String(n) }
    var frac = String(n % Int(scale))
    while frac.count < decimals { frac = "0" + frac }
    return "\(n / Int(scale)).\(frac)"
}

func pad(_ s: String, _ width: Int, left: Bool = false) -> String {
    let fill = String(repeating: " ", count: max(0, width - s.count))
    return left ? fill + s : s + fill
}

func randomBytes(_ n: Int, ascii: Bool = false) -> [UInt8] {
    var g = SystemRandomNumberGenerator()
    return (0..<n).map { _ in ascii ? UInt8.random(in: 0x61...0x7A, using: &g) : UInt8.random(in: 0...255, using: &g) }
}

let key = WebSocketMaskingKey(0x12, 0x34, 0x56, 0x78)

// A buffer of `count` masked frames of `size` bytes, as a client sends them.
func maskedFrames(size: Int, count: Int) -> ByteBuffer {
    var buffer = ByteBuffer()
    let payload = ByteBuffer(bytes: randomBytes(size))
    for _ in 0..<count {
        WebSocketFrame(mask: true, maskingKey: key, opcode: .binary, binaryPayload: payload).serialize(into: &buffer)
    }
    return buffer
}

print("micro-benchmarks: median of 5 runs of \(seconds)s each")

// Frame parse (masked client frames, unmasked into a new buffer).
for (size, count) in [(32, 1024), (1024, 256), (65536, 8)] {
    let frames = maskedFrames(size: size, count: count)
    bench("parse masked \(size) B frames", bytesPerCall: size * count, opsPerCall: count) {
        var input = frames
        while let frame = try! WebSocketFrame.parse(from: &input) { blackHole(frame) }
    }
}

// Mask/unmask in place.
for size in [32, 1024, 65536] {
    var bytes = randomBytes(size)
    bench("mask \(size) B", bytesPerCall: size) {
        key.apply(to: &bytes, offset: 1)
    }
}

// UTF-8 validation: ASCII and mixed multi-byte text.
let ascii = randomBytes(65536, ascii: true)
let mixedText = String(repeating: "WebSocket — Größe 速度 🚀 ", count: 2200)
let mixed = Array(mixedText.utf8.prefix(65536))
for (name, bytes) in [("ascii", ascii), ("mixed", mixed)] {
    let valid = UTF8Validator.isValid(bytes)
    bench("utf8 validate 64 KiB \(name)\(valid ? "" : " (invalid)")", bytesPerCall: bytes.count) {
        bytes.withUnsafeBytes { raw in
            var v = UTF8Validator()
            blackHole(v.validate(raw))
        }
    }
}
let small = randomBytes(32, ascii: true)
bench("utf8 validate 32 B ascii", bytesPerCall: 32) {
    small.withUnsafeBytes { raw in
        var v = UTF8Validator()
        blackHole(v.validate(raw))
    }
}

// Frame serialization: server frames (unmasked) and client frames (masked).
for size in [32, 1024, 65536] {
    let payload = ByteBuffer(bytes: randomBytes(size))
    let unmasked = WebSocketFrame(opcode: .binary, binaryPayload: payload)
    let masked = WebSocketFrame(mask: true, maskingKey: key, opcode: .binary, binaryPayload: payload)
    var out = ByteBuffer()
    out.reserveCapacity(size + 16)
    bench("serialize \(size) B", bytesPerCall: size) {
        out.clear()
        unmasked.serialize(into: &out)
    }
    bench("serialize masked \(size) B", bytesPerCall: size) {
        out.clear()
        masked.serialize(into: &out)
    }
}

// Topics: a publication to a topic without subscribers (a lookup under a lock, no allocation).
let topicServer = WebSocketServer()
let topicPayload = ByteBuffer(bytes: [1, 2, 3, 4])
bench("publish to a topic without subscribers", bytesPerCall: 4) {
    blackHole(try! topicServer.publish(topicPayload, to: "empty"))
}

// The opening handshake's Sec-WebSocket-Accept (SHA-1 + base64 of a 60-byte string).
bench("handshake accept value", bytesPerCall: 60) {
    blackHole(WebSocketHandshake.acceptValue(forKey: "dGhlIHNhbXBsZSBub25jZQ=="))
}
