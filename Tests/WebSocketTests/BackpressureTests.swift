import NIOCore
import Testing

@testable import WebSocket

#if canImport(Glibc)
import Glibc
#endif

/// The resident memory of this process, in bytes (from /proc/self/statm).
func residentMemory() -> Int {
    guard let file = fopen("/proc/self/statm", "r") else { return 0 }
    defer { fclose(file) }
    var size = 0
    var resident = 0
    guard withUnsafeMutablePointer(to: &size, { s in withUnsafeMutablePointer(to: &resident) { r in
        fscanf_statm(file, s, r)
    } }) else { return 0 }
    return resident * Int(sysconf(Int32(_SC_PAGESIZE)))
}

private func fscanf_statm(_ file: UnsafeMutablePointer<FILE>, _ size: UnsafeMutablePointer<Int>, _ resident: UnsafeMutablePointer<Int>) -> Bool {
    var line = [CChar](repeating: 0, count: 256)
    guard fgets(&line, 256, file) != nil else { return false }
    let fields = String(cString: line).split(separator: " ")
    guard fields.count >= 2, let s = Int(fields[0]), let r = Int(fields[1]) else { return false }
    size.pointee = s
    resident.pointee = r
    return true
}

@Suite("Backpressure", .serialized)
struct BackpressureTests {
    @Test("1 GiB to a peer that stops reading: async sends wait, memory stays bounded, then all of it arrives")
    func gigabyteToSlowPeer() async throws {
        let (server, accepted) = try await WebSocketConnectionTests.serverWithConnections {
            $0.writeBufferWaterMark = try! WebSocketWriteBufferWaterMark(low: 256 * 1024, high: 1024 * 1024)
            // The raw peer never answers pings: where the transfer outlasts keepaliveInterval +
            // keepaliveGracePeriod (30 s; under ThreadSanitizer it does), keepalive would drop it.
            $0.keepalive = false
        }
        defer { Task { await server.stop() } }
        let raw = try await RawClient.connected(port: server.port)
        let connection = try await accepted.value()
        try await raw.setReading(false)

        let chunk = ByteBuffer(repeating: 0x5A, count: 1 << 20)
        let total = 1024
        let sent = Collected<Int>()
        let sender = Task {
            for i in 0..<total {
                try await connection.write(chunk)
                sent.append(i)
            }
        }
        defer { sender.cancel() }
        let before = residentMemory()
        try await Task.sleep(for: .milliseconds(1500))
        let stalledAt = sent.all.count
        let during = residentMemory()
        #expect(stalledAt < total / 4, "the sender must wait for a peer that does not read (sent \(stalledAt) MiB)")
        #expect(during - before < 48 << 20, "memory grew by \((during - before) >> 20) MiB while the peer did not read")

        raw.discardIncoming()
        try await raw.setReading(true)
        try await withTimeout(120, "1 GiB to arrive") { try await sender.value }
        // 1 MiB messages go out as 64 frames of 16 KiB (fragmentationThreshold), 4 header bytes each.
        let expected = total * ((1 << 20) + 64 * 4)
        try await withTimeout(30, "the last bytes") {
            while raw.discardIncoming() < expected { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(raw.discardIncoming() == expected)
        print("backpressure: sender stalled after \(stalledAt) MiB; resident memory grew \((during - before) >> 10) KiB while the peer did not read")
    }
}
