import BenchSupport
import Dispatch
import Logging
import NIOCore
import NIOPosix
import WebSocket
import WebSocketPostgres
#if canImport(Glibc)
import Glibc
#endif

// One node of the cluster benchmark (cluster.sh): a WebSocketServer whose broker is a
// WebSocketPostgresBroker of its own (its own two PostgreSQL connections). Every connection
// subscribes to the topic its path names (`/room` subscribes to "room", `/` to nothing).
//
//   cluster-node --port P --url postgres://... --node NAME [--threads 1] [--table T]
//   cluster-node ... --publish RATE|max --topic room --duration S [--max-queued N] [--go-file F]
//
// With --publish the node also publishes, from a task of its own, 64-byte binary messages to
// --topic with `server.publish` for --duration seconds: RATE per second (paced every
// millisecond), or `max`: as fast as the broker takes them, keeping at most --max-queued
// publications (default 4,000: four batches of the broker's default 1,000) waiting in its
// queue (`broker.queuedCount`) so that `publish` never meets brokerUnavailable. Each message:
// word 0 the CLOCK_MONOTONIC time of the publish call in ns, word 1 the sequence number (0, 1,
// ...), words 2-7 derived from it (loadgen --mode subscribe checks all 64 bytes, the order and
// that nothing is missing). Then it waits until the queue is stored, prints one line of
// key=value figures and exits. Without --publish it runs until SIGTERM, then prints its
// figures (skipped messages, the last id read) and exits.
var port = 9100
var url = ""
var nodeName = "node"
var threads = 1
var table = "websocket_publications"
var publishRate: Double? = nil  // .infinity: max
var topic = "room"
var duration = 5.0
var maxQueued = 4000
var goFile: String? = nil
var rest = CommandLine.arguments.dropFirst()
func usage() -> Never {
    print("usage: cluster-node --port P --url URL [--node NAME] [--threads N] [--table T] [--publish RATE|max --topic T --duration S --max-queued N --go-file F]")
    exit(2)
}
while let argument = rest.popFirst() {
    guard let value = rest.popFirst() else { usage() }
    switch argument {
    case "--port": port = Int(value) ?? port
    case "--url": url = value
    case "--node": nodeName = value
    case "--threads": threads = Int(value) ?? 1
    case "--table": table = value
    case "--publish": publishRate = value == "max" ? .infinity : Double(value)
    case "--topic": topic = value
    case "--duration": duration = Double(value) ?? duration
    case "--max-queued": maxQueued = Int(value) ?? maxQueued
    case "--go-file": goFile = value
    default: usage()
    }
}
if url.isEmpty { usage() }

func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

func splitmix(_ value: UInt64) -> UInt64 {
    var x = value &+ 0x9E37_79B9_7F4A_7C15
    x = (x ^ (x >> 30)) &* 0xBF58_476D_1CE4_E5B9
    x = (x ^ (x >> 27)) &* 0x94D0_49BB_1331_11EB
    return x ^ (x >> 31)
}

/// The 64-byte message with sequence number `seq`, stamped now.
func message(_ seq: UInt64) -> ByteBuffer {
    var buffer = ByteBufferAllocator().buffer(capacity: 64)
    buffer.writeInteger(monotonicNanoseconds(), endianness: .little)
    buffer.writeInteger(seq, endianness: .little)
    let h = splitmix(seq)
    for k in 2..<8 { buffer.writeInteger(h ^ (UInt64(k) &* 0xD6E8_FEB8_6659_FD93), endianness: .little) }
    return buffer
}

var logger = Logger(label: "cluster-node.\(nodeName)")
logger.logLevel = .warning
var brokerConfiguration = try WebSocketPostgresBroker.Configuration(url: url)
brokerConfiguration.node = nodeName
brokerConfiguration.table = table
let broker = WebSocketPostgresBroker(configuration: brokerConfiguration, logger: logger)
var configuration = WebSocketServer.Configuration()
configuration.broker = broker
configuration.fragmentOutgoingMessages = false
configuration.maxBackpressure = EchoArguments.maxSize  // every message to every subscriber; skips are counted
let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
let server = WebSocketServer(configuration: configuration, eventLoopGroup: group, logger: logger)
server.onRequest { request in
    guard let connection = try? request.accept() else { return }
    let path = String(request.resourceURL.path.dropFirst())
    if !path.isEmpty {
        do { _ = try connection.subscribe(to: path) } catch { announce("cluster-node: subscribe failed: \(error)") }
    }
}
_ = try await server.listen(host: "127.0.0.1", port: port)
announce("listening node=\(nodeName) port=\(port) pid=\(getpid())")

let name = nodeName
func figures() -> String {
    "node=\(name) skipped=\(server.skippedPublishedMessages) last_seen_id=\(broker.lastSeenID) state=\(broker.state.description.replacingOccurrences(of: " ", with: "_"))"
}

guard let rate = publishRate else {
    // A subscriber node: runs until SIGTERM.
    signal(SIGTERM, SIG_IGN)
    let source = DispatchSource.makeSignalSource(signal: SIGTERM, queue: .main)
    let stop = AsyncStream<Void>.makeStream()
    source.setEventHandler { stop.continuation.yield() }
    source.resume()
    for await _ in stop.stream { break }
    announce(figures())
    await server.shutDown()
    exit(0)
}

// A publishing node. With --go-file it starts when that file exists (at most 120 s from now).
if let goFile {
    let waitEnd = monotonicNanoseconds() + 120_000_000_000
    while access(goFile, F_OK) != 0 {
        guard monotonicNanoseconds() < waitEnd else { announce("cluster-node: no \(goFile) within 120 s"); exit(1) }
        try await Task.sleep(for: .milliseconds(2))
    }
}
var published: UInt64 = 0
var refused = 0
var maxQueuedSeen = 0
var maxQueuedBytesSeen = 0
var fullWaits = 0
let start = monotonicNanoseconds()
let end = start + UInt64(duration * 1e9)
while true {
    let now = monotonicNanoseconds()
    if now >= end { break }
    let due: UInt64
    if rate.isFinite {
        due = UInt64(Double(now - start) / 1e9 * rate) + 1
    } else {
        let queued = broker.queuedCount
        maxQueuedSeen = max(maxQueuedSeen, queued)
        due = queued >= maxQueued ? published : published + UInt64(maxQueued - queued)
    }
    if published >= due {
        if !rate.isFinite { fullWaits += 1 }
        try await Task.sleep(for: rate.isFinite ? .milliseconds(1) : .microseconds(500))
        continue
    }
    var sent = 0
    while published < due && sent < 1000 {
        do {
            try server.publish(message(published), to: topic)
            published += 1
        } catch {
            refused += 1
            break
        }
        sent += 1
    }
    maxQueuedSeen = max(maxQueuedSeen, broker.queuedCount)
    maxQueuedBytesSeen = max(maxQueuedBytesSeen, broker.queuedBytes)
    if sent >= 1000 { await Task.yield() }
}
let publishedAt = monotonicNanoseconds()
let elapsed = Double(publishedAt - start) / 1e9
// Wait (at most 60 s) until the broker has stored everything.
while broker.queuedCount > 0 && monotonicNanoseconds() - publishedAt < 60_000_000_000 {
    try await Task.sleep(for: .milliseconds(1))
}
let drain = Double(monotonicNanoseconds() - publishedAt) / 1e9
announce("published=\(published) publish_s=\(String(format: "%.3f", elapsed)) publish_rate=\(String(format: "%.0f", Double(published) / elapsed)) refused=\(refused) max_queued=\(maxQueuedSeen) max_queued_bytes=\(maxQueuedBytesSeen) left_queued=\(broker.queuedCount) drain_s=\(String(format: "%.3f", drain)) \(figures())")
await server.shutDown()
exit(0)
