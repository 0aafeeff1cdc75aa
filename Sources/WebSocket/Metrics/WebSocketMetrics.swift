import CoreMetrics
import NIOConcurrencyHelpers
import NIOCore

// Metrics through swift-metrics (the Metrics article lists the names and dimensions). Nothing is
// recorded unless the application bootstrapped a backend (`MetricsSystem.bootstrap`) before it
// created its servers: each server resolves its metric objects once, when it is created, and
// with the no-op backend it keeps none (every hook is then a nil check).
//
// Per message, a connection only adds to plain integers of its own (on its event loop); they go
// to the backend's counters once per read loop (and after a send outside one, and when the
// connection closes). A backend's increment is an atomic add at most, paid per read loop rather
// than per message.

/// The names of the metrics a ``WebSocketServer`` reports through swift-metrics.
public enum WebSocketMetricNames {
    /// Gauge (a swift-metrics `Meter`): open WebSocket connections of the process's servers.
    public static let connectionsOpen = "websocket_connections_open"
    /// Counter: connections opened (handshake accepted and the connection set up).
    public static let connectionsOpened = "websocket_connections_opened_total"
    /// Counter: connections closed, by `code_class` (see ``WebSocketMetricNames/closeCodeClass(_:)``).
    public static let connectionsClosed = "websocket_connections_closed_total"
    /// Counter: opening handshakes accepted (101, or 200 over HTTP/2).
    public static let handshakesAccepted = "websocket_handshakes_accepted_total"
    /// Counter: opening handshakes refused, by `status` (the HTTP status answered: 400, 403,
    /// 404, 426, 431, 503...).
    public static let handshakesRefused = "websocket_handshakes_refused_total"
    /// Timer: from a valid upgrade request's arrival to the application's decision (accept or
    /// reject), by `result` (`accepted` or `refused`).
    public static let handshakeDuration = "websocket_handshake_duration_seconds"
    /// Counter: messages received, by `kind` (`text` or `binary`).
    public static let messagesReceived = "websocket_messages_received_total"
    /// Counter: payload bytes of the messages received (after decompression), by `kind`.
    public static let bytesReceived = "websocket_received_bytes_total"
    /// Counter: messages sent with `send`/`write` (published messages count as
    /// ``topicPublishes``), by `kind`.
    public static let messagesSent = "websocket_messages_sent_total"
    /// Counter: payload bytes of the messages sent (before compression), by `kind`.
    public static let bytesSent = "websocket_sent_bytes_total"
    /// Counter: connections failed for a protocol error of the peer, by `code` (the close code
    /// sent: 1002, 1007, 1009...).
    public static let protocolFailures = "websocket_protocol_failures_total"
    /// Counter: permessage-deflate bytes, by `direction` (`sent`: compressed by this side;
    /// `received`: decompressed by it) and `stage` (`uncompressed` or `compressed`).
    public static let deflateBytes = "websocket_deflate_bytes_total"
    /// Counter: backpressure pauses, by `direction`: `inbound` (the application reads messages
    /// too slowly: reading from the socket paused) or `outbound` (the socket's send buffer
    /// passed its high watermark: the channel turned unwritable).
    public static let backpressurePauses = "websocket_backpressure_pauses_total"
    /// Gauge (a `Meter`): subscriptions to topics (one per connection and topic).
    public static let topicSubscriptions = "websocket_topic_subscriptions"
    /// Counter: messages published to topics (once per publication, whatever the number of
    /// subscribers).
    public static let topicPublishes = "websocket_topic_publishes_total"

    /// The `code_class` dimension of ``connectionsClosed`` for a close code: `normal` (1000),
    /// `going_away` (1001), `abnormal` (1005, 1006: no close frame), `error` (the other codes
    /// of RFC 6455 and its registry, 1002-2999), `application` (3000-4999), `other`.
    public static func closeCodeClass(_ code: Int) -> String {
        switch code {
        case 1000: "normal"
        case 1001: "going_away"
        case 1005, 1006: "abnormal"
        case 1002...2999: "error"
        case 3000...4999: "application"
        default: "other"
        }
    }
}

/// Where servers find their metrics backend.
enum WebSocketMetricsFactory {
    /// The backend of the servers created in this task instead of `MetricsSystem.factory`
    /// (tests: a backend of their own, without bootstrapping the process's).
    @TaskLocal static var override: (any MetricsFactory)?
}

/// A server's metric objects, resolved once. Thread-safe (the backend's objects are).
final class WebSocketServerMetrics: Sendable {
    let factory: any MetricsFactory
    let open: Meter
    let opened: Counter
    let closed: [String: Counter]
    let accepted: Counter
    let acceptedDuration: Timer
    let refusedDuration: Timer
    private let refused: WebSocketLazyCounters
    private let failures: WebSocketLazyCounters
    let messagesIn: (text: Counter, binary: Counter)
    let bytesIn: (text: Counter, binary: Counter)
    let messagesOut: (text: Counter, binary: Counter)
    let bytesOut: (text: Counter, binary: Counter)
    let deflateOut: (uncompressed: Counter, compressed: Counter)
    let inflateIn: (compressed: Counter, uncompressed: Counter)
    let pausesIn: Counter
    let pausesOut: Counter

    /// The metrics of a new server: nil with swift-metrics' no-op backend.
    static func resolve() -> WebSocketServerMetrics? {
        let factory = WebSocketMetricsFactory.override ?? MetricsSystem.factory
        if factory is NOOPMetricsHandler { return nil }
        return WebSocketServerMetrics(factory: factory)
    }

    init(factory: any MetricsFactory) {
        typealias N = WebSocketMetricNames
        func counter(_ label: String, _ dimensions: [(String, String)] = []) -> Counter {
            Counter(label: label, dimensions: dimensions, factory: factory)
        }
        func kinds(_ label: String) -> (text: Counter, binary: Counter) {
            (counter(label, [("kind", "text")]), counter(label, [("kind", "binary")]))
        }
        self.factory = factory
        open = Meter(label: N.connectionsOpen, dimensions: [], factory: factory)
        opened = counter(N.connectionsOpened)
        var closed: [String: Counter] = [:]
        for name in ["normal", "going_away", "abnormal", "error", "application", "other"] {
            closed[name] = counter(N.connectionsClosed, [("code_class", name)])
        }
        self.closed = closed
        accepted = counter(N.handshakesAccepted)
        acceptedDuration = Timer(label: N.handshakeDuration, dimensions: [("result", "accepted")], factory: factory)
        refusedDuration = Timer(label: N.handshakeDuration, dimensions: [("result", "refused")], factory: factory)
        refused = WebSocketLazyCounters(label: N.handshakesRefused, dimension: "status", factory: factory)
        failures = WebSocketLazyCounters(label: N.protocolFailures, dimension: "code", factory: factory)
        messagesIn = kinds(N.messagesReceived)
        bytesIn = kinds(N.bytesReceived)
        messagesOut = kinds(N.messagesSent)
        bytesOut = kinds(N.bytesSent)
        deflateOut = (
            counter(N.deflateBytes, [("direction", "sent"), ("stage", "uncompressed")]),
            counter(N.deflateBytes, [("direction", "sent"), ("stage", "compressed")])
        )
        inflateIn = (
            counter(N.deflateBytes, [("direction", "received"), ("stage", "compressed")]),
            counter(N.deflateBytes, [("direction", "received"), ("stage", "uncompressed")])
        )
        pausesIn = counter(N.backpressurePauses, [("direction", "inbound")])
        pausesOut = counter(N.backpressurePauses, [("direction", "outbound")])
    }

    func connectionOpened() {
        opened.increment()
        open.increment()
    }

    func connectionClosed(code: Int) {
        open.decrement()
        closed[WebSocketMetricNames.closeCodeClass(code)]?.increment()
    }

    func handshakeAccepted(since start: NIODeadline) {
        accepted.increment()
        acceptedDuration.recordNanoseconds((NIODeadline.now() - start).nanoseconds)
    }

    /// A refusal; with `start`, one the application decided (its time is recorded).
    func handshakeRefused(status: Int, since start: NIODeadline? = nil) {
        refused.increment(status)
        if let start { refusedDuration.recordNanoseconds((NIODeadline.now() - start).nanoseconds) }
    }

    func protocolFailure(code: Int) {
        failures.increment(code)
    }
}

/// Counters with one dimension whose values are known only when they occur (a status, a close
/// code): each made on first use and kept. Rare events only (a lock per increment).
final class WebSocketLazyCounters: Sendable {
    private let label: String
    private let dimension: String
    private let factory: any MetricsFactory
    private let counters = NIOLockedValueBox<[Int: Counter]>([:])

    init(label: String, dimension: String, factory: any MetricsFactory) {
        self.label = label
        self.dimension = dimension
        self.factory = factory
    }

    func increment(_ value: Int) {
        let counter = counters.withLockedValue { counters in
            if let counter = counters[value] { return counter }
            let counter = Counter(label: label, dimensions: [(dimension, String(value))], factory: factory)
            counters[value] = counter
            return counter
        }
        counter.increment()
    }
}

/// One connection's counts since they last went to the backend. Confined to the connection's
/// event loop (its handler and its permessage-deflate codec share it).
final class WebSocketConnectionMetrics: @unchecked Sendable {
    let server: WebSocketServerMetrics

    /// The counts not yet handed to the backend.
    struct Counts {
        var textIn = 0, textBytesIn = 0, binaryIn = 0, binaryBytesIn = 0
        var textOut = 0, textBytesOut = 0, binaryOut = 0, binaryBytesOut = 0
        var deflateBefore = 0, deflateAfter = 0, inflateBefore = 0, inflateAfter = 0
        var dirty = false
    }

    /// Touched on the connection's event loop only. Unchecked: a class's stored `var` costs a
    /// dynamic exclusivity check (swift_beginAccess) per access even in release builds, and
    /// these are touched for every message.
    @exclusivity(unchecked) private var counts = Counts()

    init(server: WebSocketServerMetrics) {
        self.server = server
    }

    /// A message (or frame) handed to the application.
    func received(_ event: WebSocketReceiver.Event) {
        guard case .message(let message) = event else { return }
        switch message {
        case .utf8(let text):
            counts.textIn += 1
            counts.textBytesIn += text.utf8.count
        case .binary(let bytes):
            counts.binaryIn += 1
            counts.binaryBytesIn += bytes.readableBytes
        }
        counts.dirty = true
    }

    /// A message sent; `flushNow` outside a read loop (nothing else would flush soon).
    func sent(opcode: WebSocketOpcode, bytes: Int, flushNow: Bool) {
        if opcode == .text {
            counts.textOut += 1
            counts.textBytesOut += bytes
        } else {
            counts.binaryOut += 1
            counts.binaryBytesOut += bytes
        }
        counts.dirty = true
        if flushNow { flush() }
    }

    /// A message compressed by permessage-deflate.
    func deflated(from before: Int, to after: Int) {
        counts.deflateBefore += before
        counts.deflateAfter += after
        counts.dirty = true
    }

    /// Part of a message decompressed by permessage-deflate.
    func inflated(from before: Int, to after: Int) {
        counts.inflateBefore += before
        counts.inflateAfter += after
        counts.dirty = true
    }

    /// Hands the counts to the backend.
    func flush() {
        guard counts.dirty else { return }
        let c = counts
        counts = Counts()
        func add(_ counter: Counter, _ value: Int) {
            if value != 0 { counter.increment(by: value) }
        }
        add(server.messagesIn.text, c.textIn)
        add(server.bytesIn.text, c.textBytesIn)
        add(server.messagesIn.binary, c.binaryIn)
        add(server.bytesIn.binary, c.binaryBytesIn)
        add(server.messagesOut.text, c.textOut)
        add(server.bytesOut.text, c.textBytesOut)
        add(server.messagesOut.binary, c.binaryOut)
        add(server.bytesOut.binary, c.binaryBytesOut)
        add(server.deflateOut.uncompressed, c.deflateBefore)
        add(server.deflateOut.compressed, c.deflateAfter)
        add(server.inflateIn.compressed, c.inflateBefore)
        add(server.inflateIn.uncompressed, c.inflateAfter)
    }
}

/// The metrics of a server's topics.
final class WebSocketTopicMetrics: Sendable {
    let subscriptions: Meter
    let publishes: Counter

    /// Nil with swift-metrics' no-op backend.
    static func resolve() -> WebSocketTopicMetrics? {
        let factory = WebSocketMetricsFactory.override ?? MetricsSystem.factory
        if factory is NOOPMetricsHandler { return nil }
        return WebSocketTopicMetrics(factory: factory)
    }

    init(factory: any MetricsFactory) {
        subscriptions = Meter(label: WebSocketMetricNames.topicSubscriptions, dimensions: [], factory: factory)
        publishes = Counter(label: WebSocketMetricNames.topicPublishes, dimensions: [], factory: factory)
    }
}
