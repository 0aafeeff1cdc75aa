import NIOCore
import WebSocket

/// One publication of this node on its way to the table: its sequence number (unique per node,
/// so a batch retried after a lost connection is stored once), topic, opcode and payload.
struct PostgresBrokerItem: Sendable, Equatable {
    var seq: Int64
    var topic: String
    /// 1 text, 2 binary (the WebSocket opcodes).
    var opcode: Int16
    var payload: ByteBuffer

    /// What it holds in memory, for the queue's bound.
    var cost: Int { payload.readableBytes + topic.utf8.count + 64 }

    init(seq: Int64, publication: WebSocketBrokerPublication) {
        self.seq = seq
        self.topic = publication.topic
        switch publication.message {
        case .utf8(let text):
            opcode = 1
            payload = ByteBuffer(string: text)
        case .binary(let bytes):
            opcode = 2
            payload = bytes
        }
    }
}

/// The publications of this node not yet stored, in publish order: a value, so its rules are
/// tested without a database.
///
/// `enqueue` refuses past `maxBytes` (the bound while PostgreSQL is unreachable); the writer
/// takes a batch from the front (`nextBatch`), and removes it only once it is committed
/// (`committed`), so a batch that failed is sent again, whole and first, after the reconnect.
struct PostgresBrokerQueue: Sendable {
    let maxBytes: Int
    let maxBatchCount: Int
    let maxBatchBytes: Int
    private(set) var items: [PostgresBrokerItem] = []
    private var head = 0
    private(set) var bytes = 0
    private var nextSeq: Int64 = 1

    init(maxBytes: Int, maxBatchCount: Int, maxBatchBytes: Int) {
        self.maxBytes = maxBytes
        self.maxBatchCount = max(1, maxBatchCount)
        self.maxBatchBytes = max(1, maxBatchBytes)
    }

    var count: Int { items.count - head }
    var isEmpty: Bool { count == 0 }

    enum EnqueueResult: Equatable {
        case queued(seq: Int64)
        /// Past the bound: `queuedBytes` wait already, `maxBytes` is the bound.
        case full(queuedBytes: Int)
    }

    /// Queues a publication unless the bound is reached. A publication always fits into an
    /// empty queue, whatever its size (one large message is no reason to refuse forever).
    mutating func enqueue(_ publication: WebSocketBrokerPublication) -> EnqueueResult {
        let item = PostgresBrokerItem(seq: nextSeq, publication: publication)
        if !isEmpty && bytes + item.cost > maxBytes { return .full(queuedBytes: bytes) }
        nextSeq += 1
        items.append(item)
        bytes += item.cost
        return .queued(seq: item.seq)
    }

    /// The front of the queue: at most `maxBatchCount` items and `maxBatchBytes` of payload
    /// (always at least one item when not empty), at most `maxCount` when given. Stays queued
    /// until `committed`.
    func nextBatch(maxCount: Int? = nil) -> ArraySlice<PostgresBrokerItem> {
        let maxCount = min(maxBatchCount, max(1, maxCount ?? maxBatchCount))
        var end = head
        var batchBytes = 0
        while end < items.count && end - head < maxCount {
            let cost = items[end].cost
            if end > head && batchBytes + cost > maxBatchBytes { break }
            batchBytes += cost
            end += 1
        }
        return items[head..<end]
    }

    /// Removes the first `count` items: they are stored.
    mutating func committed(_ count: Int) {
        let count = min(count, self.count)
        for index in head..<(head + count) { bytes -= items[index].cost }
        head += count
        if head > 1024 && head * 2 > items.count {
            items.removeFirst(head)
            head = 0
        }
        if isEmpty {
            items.removeAll(keepingCapacity: true)
            head = 0
        }
    }
}

/// Reconnect delays: exponential from `initial`, capped at `maximum`, each with up to `jitter`
/// (a fraction) taken off at random so that nodes that lost the database together do not come
/// back together.
struct PostgresBrokerBackoff: Sendable {
    var initial: Duration
    var maximum: Duration
    var jitter: Double

    /// The delay before attempt `attempt` (0 = the first retry); `random` is in 0..<1.
    func delay(attempt: Int, random: Double) -> Duration {
        let base = min(Double(attempt), 30)
        let initialSeconds = Self.seconds(initial)
        let raw = min(initialSeconds * pow(2, base), Self.seconds(maximum))
        let jittered = raw * (1 - min(max(jitter, 0), 1) * min(max(random, 0), 1))
        return .nanoseconds(Int64(jittered * 1e9))
    }

    static func seconds(_ duration: Duration) -> Double {
        let (seconds, attoseconds) = duration.components
        return Double(seconds) + Double(attoseconds) / 1e18
    }

    private func pow(_ base: Double, _ exponent: Double) -> Double {
        var result = 1.0
        for _ in 0..<Int(exponent) { result *= base }
        return result
    }
}
