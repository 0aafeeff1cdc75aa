import ArgumentParser
import NIOConcurrencyHelpers
import NIOCore
import WebSocket

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// `ws bench`: a load generator on ``WebSocketClient``, for echo servers.
///
/// It opens `--connections` connections, keeps `--depth` messages of `--size` bytes in flight on
/// each for `--duration` seconds, checks that every echo is the message sent (same kind, same
/// bytes, same order), and reports messages per second, payload megabytes per second and the
/// round-trip latency percentiles. On a terminal a progress line is redrawn every second; the
/// last line is always a machine-readable summary starting with `bench:`.
///
/// Exit status: 0 when every echo was right, 1 when a connection could not be opened, 2 when an
/// echo was wrong, missing or a connection failed during the run.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Load-test a WebSocket echo server: messages per second, MB/s and latency percentiles.",
        discussion: """
            Every echo is checked against the message sent. The last line printed is a summary:
            bench: connections=C depth=D size=S duration=T binary=B messages=N msgs_per_s=… \
            mb_per_s=… p50_us=… p90_us=… p99_us=… max_us=… errors=E
            MB/s counts the payload bytes echoed (one way), in units of 10^6 bytes.
            Exit status: 0 when every echo was right, 1 when a connection could not be opened, \
            2 when an echo was wrong or lost.
            """)

    @Argument(help: "The ws:// or wss:// URL of an echo server.")
    var url: String

    @Option(help: "The number of connections.")
    var connections: Int = 8

    @Option(help: "The number of messages in flight on each connection.")
    var depth: Int = 4

    @Option(help: "The payload size of each message, in bytes.")
    var size: Int = 32

    @Option(help: "How long to send, in seconds.")
    var duration: Double = 5

    @Flag(help: "Send binary messages (default: text).")
    var binary = false

    @Flag(help: "Do not verify the server's TLS certificate (for testing only).")
    var insecure = false

    func validate() throws {
        guard (1...100_000).contains(connections) else { throw ValidationError("--connections must be from 1 to 100000") }
        guard (1...100_000).contains(depth) else { throw ValidationError("--depth must be from 1 to 100000") }
        guard (0...(64 << 20)).contains(size) else { throw ValidationError("--size must be from 0 to 64 MiB") }
        guard duration > 0, duration <= 86_400 else { throw ValidationError("--duration must be above 0 and at most a day") }
    }

    func run() async throws {
        var configuration = WebSocketClient.Configuration()
        configuration.maxReceivedMessageSize = max(configuration.maxReceivedMessageSize, size)
        configuration.maxReceivedFrameSize = max(configuration.maxReceivedFrameSize, size)
        configuration.closeTimeout = .seconds(2)
        if insecure { configuration.tlsConfiguration = try WebSocketClient.tlsConfiguration(verifyCertificates: false) }
        let client = WebSocketClient(configuration: configuration)
        let payloads = BenchPayloads(size: size)

        // Open every connection before the clock starts.
        let opened: [WebSocketConnection]
        do {
            opened = try await Self.connectAll(client: client, url: url, count: connections)
        } catch {
            let message = (error as? WebSocketError).map { "\($0.message) [\($0.code)]" } ?? "\(error)"
            printStandardError("ws bench: could not connect to \(url): \(message)")
            throw ExitCode(1)
        }
        let workers = opened.map { BenchWorker(connection: $0, payloads: payloads, binary: binary, depth: depth) }

        let start = NIODeadline.now()
        for worker in workers { worker.start() }
        let tty = isatty(1) == 1
        let deadline = start + .nanoseconds(Int64(duration * 1e9))
        var lastTick = start
        var lastCount = 0
        while NIODeadline.now() < deadline {
            let remaining = deadline - NIODeadline.now()
            try? await Task.sleep(nanoseconds: UInt64(max(0, min(remaining.nanoseconds, 1_000_000_000))))
            guard tty else { continue }
            let now = NIODeadline.now()
            var count = 0
            var errors = 0
            for worker in workers {
                let progress = worker.progress
                count += progress.completed
                errors += progress.errors
            }
            let interval = Double((now - lastTick).nanoseconds) / 1e9
            let rate = interval > 0 ? Double(count - lastCount) / interval : 0
            let elapsed = Double((now - start).nanoseconds) / 1e9
            writeStandardOutput(
                "\r\u{1B}[K  \(Self.format(elapsed, 1)) s  \(count) messages  \(Self.format(rate, 0)) msg/s  \(errors) errors")
            lastTick = now
            lastCount = count
        }
        if tty { writeStandardOutput("\r\u{1B}[K") }

        // Stop sending, let what is in flight come back (bounded), then gather the results.
        for worker in workers { worker.stop() }
        let drainDeadline = NIODeadline.now() + .seconds(10)
        for worker in workers {
            while !worker.isFinished, NIODeadline.now() < drainDeadline {
                try? await Task.sleep(nanoseconds: 2_000_000)
            }
        }
        var total = BenchResult()
        for worker in workers { total.merge(worker.finish()) }
        for connection in opened where connection.connected {
            try? connection.close()
        }
        for connection in opened {
            _ = try? await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await connection.socket.closeFuture.get() }
                group.addTask { try await Task.sleep(nanoseconds: 3_000_000_000) }
                try await group.next()
                group.cancelAll()
            }
        }

        let elapsed = Double(((total.lastCompletion ?? NIODeadline.now()) - start).nanoseconds) / 1e9
        let rate = elapsed > 0 ? Double(total.completed) / elapsed : 0
        let megabytes = elapsed > 0 ? Double(total.completed) * Double(size) / elapsed / 1e6 : 0
        let micros = { (quantile: Double) in Double(total.latencies.value(at: quantile)) / 1000 }
        let kind = binary ? "binary" : "text"
        printLine("ws bench: \(url): \(connections) connections × \(depth) in flight, \(size)-byte \(kind) messages, \(Self.format(elapsed, 2)) s")
        printLine("  messages  \(total.completed)  (\(Self.format(rate, 0)) msg/s, \(Self.format(megabytes, 2)) MB/s)")
        printLine(
            "  latency   p50 \(Self.format(micros(0.5), 1)) µs  p90 \(Self.format(micros(0.9), 1)) µs  "
                + "p99 \(Self.format(micros(0.99), 1)) µs  max \(Self.format(Double(total.latencies.max) / 1000, 1)) µs")
        printLine("  errors    \(total.errors)\(total.firstError.map { " (first: \($0))" } ?? "")")
        printLine(
            "bench: connections=\(connections) depth=\(depth) size=\(size) duration=\(Self.format(duration, 1)) binary=\(binary) "
                + "messages=\(total.completed) msgs_per_s=\(Self.format(rate, 0)) mb_per_s=\(Self.format(megabytes, 3)) "
                + "p50_us=\(Self.format(micros(0.5), 1)) p90_us=\(Self.format(micros(0.9), 1)) "
                + "p99_us=\(Self.format(micros(0.99), 1)) max_us=\(Self.format(Double(total.latencies.max) / 1000, 1)) "
                + "errors=\(total.errors)")
        if total.errors > 0 { throw ExitCode(2) }
    }

    /// Opens `count` connections, a few dozen handshakes at a time; on the first failure closes
    /// those already open and throws it.
    static func connectAll(client: WebSocketClient, url: String, count: Int) async throws -> [WebSocketConnection] {
        var opened: [WebSocketConnection] = []
        do {
            var next = 0
            while next < count {
                let batch = min(64, count - next)
                try await withThrowingTaskGroup(of: WebSocketConnection.self) { group in
                    for _ in 0..<batch {
                        group.addTask { try await client.connect(url: url) }
                    }
                    for try await connection in group { opened.append(connection) }
                }
                next += batch
            }
        } catch {
            for connection in opened { connection.drop(reasonCode: WebSocketCloseReason.goingAway, description: "") }
            throw error
        }
        return opened
    }

    /// `value` with `digits` decimals, without Foundation.
    static func format(_ value: Double, _ digits: Int) -> String {
        guard value.isFinite else { return "0" }
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let scaled = (value * scale).rounded()
        guard digits > 0 else { return String(Int64(scaled)) }
        let whole = Int64(scaled) / Int64(scale)
        let fraction = Int64(abs(scaled)) % Int64(scale)
        var fractionText = String(fraction)
        while fractionText.count < digits { fractionText = "0" + fractionText }
        return (scaled < 0 && whole == 0 ? "-" : "") + "\(whole).\(fractionText)"
    }
}

/// The payload of message number `n`: 16 hexadecimal digits of `n`, then letters from a
/// position that depends on `n`, cut to the message size. ASCII, so valid as text and binary;
/// every message differs from its neighbours, so a lost, repeated or reordered echo is caught.
struct BenchPayloads: Sendable {
    let size: Int
    private let letters: [UInt8]
    private static let digits = Array("0123456789abcdef".utf8)

    init(size: Int) {
        self.size = size
        letters = (0..<(size + 64)).map { UInt8(ascii: "a") + UInt8($0 % 26) }
    }

    /// Writes payload `n` into `destination`, which has room for `size` bytes.
    private func fill(_ n: UInt64, _ destination: UnsafeMutableRawBufferPointer) {
        let offset = Int(n % 64)
        letters.withUnsafeBytes { source in
            destination.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[offset..<(offset + size)]))
        }
        for i in 0..<min(16, size) {
            destination[i] = Self.digits[Int((n >> (60 - 4 * UInt64(i))) & 0xF)]
        }
    }

    /// Payload `n` as a buffer, for a binary message.
    func buffer(_ n: UInt64, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: size)
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { destination in
            fill(n, UnsafeMutableRawBufferPointer(rebasing: destination[0..<size]))
            return size
        }
        return buffer
    }

    /// Payload `n` as a string, for a text message.
    func string(_ n: UInt64) -> String {
        String(unsafeUninitializedCapacity: size) { destination in
            fill(n, UnsafeMutableRawBufferPointer(destination))
            return size
        }
    }

    /// Whether `received` is payload `n`.
    func matches(_ n: UInt64, _ received: UnsafeRawBufferPointer) -> Bool {
        guard received.count == size else { return false }
        for i in 0..<min(16, size) where received[i] != Self.digits[Int((n >> (60 - 4 * UInt64(i))) & 0xF)] {
            return false
        }
        guard size > 16 else { return true }
        let offset = Int(n % 64)
        return letters.withUnsafeBytes { source in
            memcmp(source.baseAddress! + offset + 16, received.baseAddress! + 16, size - 16) == 0
        }
    }
}

/// Latencies in nanoseconds, in log-linear buckets (64 per power of two, so within 1.6%),
/// exact below 128 ns. Constant memory, whatever the number of samples.
struct LatencyHistogram: Sendable {
    private(set) var counts = [UInt64](repeating: 0, count: 128 + 64 * 58)
    private(set) var total: UInt64 = 0
    private(set) var max: UInt64 = 0

    private static func bucket(_ value: UInt64) -> Int {
        if value < 128 { return Int(value) }
        let shift = (63 - value.leadingZeroBitCount) - 6
        return 128 + (shift - 1) * 64 + Int(value >> UInt64(shift)) - 64
    }

    /// The largest value a bucket holds.
    private static func upperBound(_ bucket: Int) -> UInt64 {
        if bucket < 128 { return UInt64(bucket) }
        let shift = (bucket - 128) / 64 + 1
        let mantissa = UInt64((bucket - 128) % 64 + 64)
        return ((mantissa + 1) << UInt64(shift)) - 1
    }

    mutating func record(_ value: UInt64) {
        counts[Swift.min(Self.bucket(value), counts.count - 1)] += 1
        total += 1
        if value > max { max = value }
    }

    mutating func merge(_ other: LatencyHistogram) {
        for i in counts.indices { counts[i] += other.counts[i] }
        total += other.total
        max = Swift.max(max, other.max)
    }

    /// The value below which `quantile` of the samples lie (0 with no samples).
    func value(at quantile: Double) -> UInt64 {
        guard total > 0 else { return 0 }
        let rank = UInt64((Double(total) * quantile).rounded(.up))
        var seen: UInt64 = 0
        for (bucket, count) in counts.enumerated() where count > 0 {
            seen += count
            if seen >= Swift.max(rank, 1) { return Swift.min(Self.upperBound(bucket), max) }
        }
        return max
    }
}

/// What one connection (or all of them) did.
struct BenchResult: Sendable {
    var completed = 0
    var errors = 0
    var firstError: String?
    var latencies = LatencyHistogram()
    var lastCompletion: NIODeadline?

    mutating func merge(_ other: BenchResult) {
        completed += other.completed
        errors += other.errors
        firstError = firstError ?? other.firstError
        latencies.merge(other.latencies)
        if let last = other.lastCompletion { lastCompletion = Swift.max(lastCompletion ?? last, last) }
    }
}

/// One connection's share of the load: keeps `depth` messages in flight, checks each echo
/// against the oldest message in flight, and sends the next. Its state lives on the
/// connection's event loop (where the message handler runs); counters for the progress line are
/// read under a lock.
final class BenchWorker: Sendable {
    private struct State {
        var nextSequence: UInt64 = 0
        /// Sequence numbers and send times of the messages in flight, oldest first.
        var inFlight: [(sequence: UInt64, sentAt: UInt64)] = []
        var inFlightHead = 0
        var stopping = false
        var finished = false
        var result = BenchResult()

        var inFlightCount: Int { inFlight.count - inFlightHead }

        mutating func popOldest() -> (sequence: UInt64, sentAt: UInt64)? {
            guard inFlightHead < inFlight.count else { return nil }
            let oldest = inFlight[inFlightHead]
            inFlightHead += 1
            if inFlightHead > 1024 && inFlightHead * 2 > inFlight.count {
                inFlight.removeFirst(inFlightHead)
                inFlightHead = 0
            }
            return oldest
        }

        mutating func fail(_ what: String, count: Int = 1) {
            result.errors += count
            if result.firstError == nil { result.firstError = what }
        }
    }

    let connection: WebSocketConnection
    private let payloads: BenchPayloads
    private let binary: Bool
    private let depth: Int
    private let state = NIOLockedValueBox(State())

    init(connection: WebSocketConnection, payloads: BenchPayloads, binary: Bool, depth: Int) {
        self.connection = connection
        self.payloads = payloads
        self.binary = binary
        self.depth = depth
    }

    /// Registers the handlers and sends the first `depth` messages.
    func start() {
        connection.onMessage { [self] message in received(message) }
        connection.onClose { [self] code, description in
            state.withLockedValue { state in
                if !state.finished {
                    state.fail("connection closed early: \(code) \(description)", count: Swift.max(1, state.inFlightCount))
                    state.finished = true
                }
            }
        }
        connection.onError { [self] error in
            state.withLockedValue { $0.fail("connection error: \(error)") }
        }
        connection.socket.eventLoop.execute { [self] in
            for _ in 0..<depth { sendNext() }
        }
    }

    /// Sends no more messages; the worker finishes once those in flight are back.
    func stop() {
        state.withLockedValue { state in
            state.stopping = true
            if state.inFlightCount == 0 { state.finished = true }
        }
    }

    var isFinished: Bool { state.withLockedValue { $0.finished } }

    var progress: (completed: Int, errors: Int) {
        state.withLockedValue { ($0.result.completed, $0.result.errors) }
    }

    /// The result; messages still in flight count as errors (lost).
    func finish() -> BenchResult {
        state.withLockedValue { state in
            if !state.finished {
                state.fail("\(state.inFlightCount) echoes did not come back", count: state.inFlightCount)
                state.finished = true
            }
            return state.result
        }
    }

    private func sendNext() {
        let sequence = state.withLockedValue { state -> UInt64? in
            guard !state.stopping, !state.finished else { return nil }
            let sequence = state.nextSequence
            state.nextSequence += 1
            state.inFlight.append((sequence, NIODeadline.now().uptimeNanoseconds))
            return sequence
        }
        guard let sequence else { return }
        if binary {
            connection.sendBytes(payloads.buffer(sequence, allocator: connection.socket.allocator), completion: nil)
        } else {
            connection.sendUTF(payloads.string(sequence), completion: nil)
        }
    }

    private func received(_ message: WebSocketMessage) {
        let now = NIODeadline.now()
        let more = state.withLockedValue { state -> Bool in
            guard !state.finished else { return false }
            guard let oldest = state.popOldest() else {
                state.fail("an echo arrived with no message in flight")
                return false
            }
            let correct: Bool
            switch (message, binary) {
            case (.binary(let buffer), true):
                correct = buffer.withUnsafeReadableBytes { payloads.matches(oldest.sequence, $0) }
            case (.utf8(var text), false):
                correct = text.withUTF8 { payloads.matches(oldest.sequence, UnsafeRawBufferPointer($0)) }
            default:
                correct = false
            }
            if correct {
                state.result.completed += 1
                state.result.latencies.record(now.uptimeNanoseconds &- oldest.sentAt)
                state.result.lastCompletion = now
            } else {
                state.fail("echo of message \(oldest.sequence) differs from the message sent")
            }
            if state.stopping && state.inFlightCount == 0 { state.finished = true }
            return !state.stopping
        }
        if more { sendNext() }
    }
}

/// Writes `text` to standard output at once, without a newline (for the progress line).
private func writeStandardOutput(_ text: String) {
    var bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
        let written = bytes.withUnsafeMutableBytes { write(1, $0.baseAddress! + offset, $0.count - offset) }
        if written <= 0 { return }
        offset += written
    }
}
