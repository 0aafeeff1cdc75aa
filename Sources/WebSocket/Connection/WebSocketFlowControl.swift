import NIOCore

/// One connection's flow control as a value, beside its ``WebSocketConnectionStateMachine``:
/// why reading is held, whether a read is wanted, the outbound budget of the Node-style sends,
/// and the one pong that waits while the outbound buffer is full. The I/O layer reports what
/// happens (a read asked for, the write buffer passing a watermark, a listener arriving) and
/// carries out the answers (``ReadAction``, ``SendVerdict``); nothing here touches a channel.
///
/// A value of its own rather than a part of the state machine: the write buffer's watermarks are
/// crossed inside a write, and a write happens inside a state machine call (a message's frames
/// go to the channel as the machine makes them), so the report of a crossing must not touch the
/// machine (a second, overlapping access to it, which Swift's exclusivity checks stop).
///
/// Bounds it keeps, whatever the peer does:
/// - the outbound buffer: reading pauses while the socket's write buffer is above its high
///   watermark and resumes below the low one, so a peer that stops reading stops being read
///   (TCP backpressure reaches it) and an echo cannot queue more than one read's worth;
/// - Node-style sends: past ``maxSendBackpressure`` bytes queued, a send meets ``sendPolicy``;
/// - pongs: while the buffer is full, only the latest ping is answered, once it drains
///   (RFC 6455 §5.5.3 allows answering only the most recent ping).
struct WebSocketFlowControl {
    /// The reasons reading is held; reading goes on when there is none.
    struct Holds: OptionSet, Hashable {
        let rawValue: UInt8
        /// Nobody listens yet and enough waits for the first listener.
        static let awaitingListener = Holds(rawValue: 1 << 0)
        /// The application called `pause()`.
        static let pausedByUser = Holds(rawValue: 1 << 1)
        /// The `messages` consumer lags behind.
        static let consumerLagging = Holds(rawValue: 1 << 2)
        /// The socket's write buffer is above its high watermark: the peer reads too slowly.
        static let outboundFull = Holds(rawValue: 1 << 3)
        /// This turn of the loop (or, while the `messages` consumer lags, the time since it
        /// last caught up) decoded ``decodeBudget`` bytes: the rest of the input waits unparsed.
        static let decodeBudgetSpent = Holds(rawValue: 1 << 4)
    }

    /// The decoded bytes (payloads, plus ``perMessageOverhead`` each) one turn of the event loop
    /// hands to the application before the rest of what was read waits for the next turn; while
    /// the `messages` consumer lags, the bytes it may be handed beyond what it already holds.
    /// Without compression a turn reads at most a few receive buffers (16 KiB each), so this is
    /// never reached; with permessage-deflate it bounds what a few KiB from the wire can become
    /// (about 1,000 times as much) before backpressure applies.
    static let decodeBudget = 1 << 20
    /// What a decoded message costs beside its payload in ``decodeBudget`` (its event, its slot).
    static let perMessageOverhead = 64

    /// What the I/O layer must do about reading.
    enum ReadAction: Equatable {
        case none
        /// Read from the socket now (a read was asked for while reading was held).
        case read
    }

    /// What happens to a Node-style send.
    enum SendVerdict: Equatable {
        /// Write it.
        case send
        /// Do not write it; report it to the sender (``WebSocketError/Code-swift.struct/backpressure``).
        case refuse
        /// Do not write it; close the connection with this code.
        case close(code: Int)
    }

    private(set) var holds: Holds = []
    /// The channel asked to read while reading was held: read when the last hold goes.
    private(set) var readWanted = false
    /// The most bytes Node-style sends may have queued for this connection.
    let maxSendBackpressure: Int
    /// What a send past ``maxSendBackpressure`` meets.
    let sendPolicy: WebSocketServer.BackpressurePolicy
    /// The write buffer's high watermark: what is queued when it says "full".
    let highWaterMark: Int
    /// Bytes of sends queued since the write buffer passed its high watermark.
    private(set) var queuedWhileFull = 0
    /// The payload of the latest ping that arrived while the write buffer was full.
    private(set) var deferredPong: ByteBuffer?

    init(maxSendBackpressure: Int, sendPolicy: WebSocketServer.BackpressurePolicy, highWaterMark: Int) {
        self.maxSendBackpressure = maxSendBackpressure
        self.sendPolicy = sendPolicy
        self.highWaterMark = highWaterMark
    }

    /// Decoded bytes counted against ``decodeBudget`` since the turn began (or since the lagging
    /// consumer last caught up).
    private(set) var decodedBytes = 0

    /// Input already read is kept unparsed for these holds (nothing may be delivered); for the
    /// others only the next read waits.
    var holdsDelivery: Bool { !holds.isDisjoint(with: [.awaitingListener, .pausedByUser, .decodeBudgetSpent]) }
    /// Whether the next read from the socket waits.
    var holdsReads: Bool { !holds.isEmpty }
    /// Whether the write buffer is above its high watermark.
    var isOutboundFull: Bool { holds.contains(.outboundFull) }

    // MARK: Reading

    /// The channel wants to read: read now, or when the holds are gone.
    mutating func readRequested() -> ReadAction {
        if holdsReads {
            readWanted = true
            return .none
        }
        return .read
    }

    mutating func hold(_ reason: Holds) {
        holds.insert(reason)
    }

    /// Releases `reason`; reads if a read was wanted and nothing holds any more.
    mutating func release(_ reason: Holds) -> ReadAction {
        unhold(reason)
        return readIfWanted()
    }

    /// Releases `reason` without deciding on reading yet (the I/O layer first delivers what was
    /// held, which may hold again, then asks ``readIfWanted()``). The consumer catching up
    /// starts a new decode budget.
    mutating func unhold(_ reason: Holds) {
        holds.remove(reason)
        if reason.contains(.consumerLagging) { resetDecodeBudget() }
    }

    /// The connection is closing: the peer must be read until it goes (its close frame, or its
    /// EOF), whatever held reading.
    mutating func releaseAll() -> ReadAction {
        holds = []
        resetDecodeBudget()
        return readIfWanted()
    }

    // MARK: Decoding

    /// A message or frame of `size` payload bytes was decoded and handed on. True when that
    /// spent the budget: delivery holds (``Holds/decodeBudgetSpent``) and the I/O layer keeps
    /// the rest of its input unparsed and calls ``turnEnded()`` on the loop's next turn.
    mutating func decoded(_ size: Int) -> Bool {
        // Saturating: a configured maxReceivedMessageSize may be near Int.max.
        let cost = size > Int.max - Self.perMessageOverhead ? Int.max : size + Self.perMessageOverhead
        decodedBytes = decodedBytes > Int.max - cost ? Int.max : decodedBytes + cost
        guard decodedBytes > Self.decodeBudget, !holds.contains(.decodeBudgetSpent) else { return false }
        holds.insert(.decodeBudgetSpent)
        return true
    }

    /// A turn of the event loop ended (a read's end, or the turn after the budget was spent):
    /// the next turn gets a new budget, unless the `messages` consumer lags (then its catching
    /// up does, ``unhold(_:)``). True when that lifted ``Holds/decodeBudgetSpent``: deliver
    /// what waits.
    mutating func turnEnded() -> Bool {
        guard !holds.contains(.consumerLagging) else { return false }
        let wasSpent = holds.contains(.decodeBudgetSpent)
        resetDecodeBudget()
        return wasSpent
    }

    /// The channel's reads of one wake-up ended: the next gets a new budget, unless the budget
    /// is spent (the turn ``turnEnded()`` runs on lifts it) or the consumer lags.
    mutating func readsEnded() {
        guard !holds.contains(.decodeBudgetSpent) else { return }
        _ = turnEnded()
    }

    private mutating func resetDecodeBudget() {
        decodedBytes = 0
        holds.remove(.decodeBudgetSpent)
    }

    /// Whether a read wanted earlier may go now (after delivery resumed, say).
    mutating func readIfWanted() -> ReadAction {
        guard readWanted, !holdsReads else { return .none }
        readWanted = false
        return .read
    }

    // MARK: Outbound

    /// The write buffer passed its high watermark.
    mutating func outboundFilled() {
        holds.insert(.outboundFull)
        queuedWhileFull = 0
    }

    /// The write buffer fell below its low watermark: reading may go on, and the deferred pong
    /// (if any) is to be written now (returned).
    mutating func outboundDrained() -> (ReadAction, pong: ByteBuffer?) {
        queuedWhileFull = 0
        let pong = deferredPong
        deferredPong = nil
        return (release(.outboundFull), pong)
    }

    /// The verdict on a Node-style send of `size` bytes. A send to a connection whose write
    /// buffer is below its high watermark always goes, however large (as a published message
    /// to a connection with nothing queued does).
    mutating func verdict(forSendOf size: Int) -> SendVerdict {
        guard isOutboundFull else { return .send }
        let (queued, overflow) = highWaterMark.addingReportingOverflow(queuedWhileFull)
        let (total, overflow2) = queued.addingReportingOverflow(size)
        if !overflow, !overflow2, total <= maxSendBackpressure {
            queuedWhileFull += size
            return .send
        }
        switch sendPolicy {
        case .skip: return .refuse
        case .close(let code): return .close(code: code.rawValue)
        }
    }

    /// A ping arrived: the pong to write now, or nil when it waits for the buffer to drain (a
    /// later ping replaces it: only the latest is answered).
    mutating func pong(for data: ByteBuffer) -> ByteBuffer? {
        guard isOutboundFull else { return data }
        deferredPong = data
        return nil
    }
}
