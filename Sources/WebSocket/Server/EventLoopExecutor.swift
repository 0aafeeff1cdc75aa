import NIOCore

/// Runs jobs on a NIO event loop, as the serial executor of a scoped handler's isolation and
/// as its task's preferred executor at once; one per event loop. Every job runs isolated to it with it as the task
/// executor, so the runtime's executor checks (`swift_task_switch`) find the task where it
/// should be and run on inline: a resumed task costs one job on the loop, not a hop to the
/// global pool and back, nor a second enqueue between two executors of the same thread
/// (measured with the async echo benchmark, Benchmarks/README.md).
///
/// Jobs enqueued on the loop go to a queue of its own that one NIO task drains at the end of the
/// loop's turn: a job costs an array slot, not a closure and a NIO task each. After a run, the
/// connections whose handlers wrote during it flush, once each (``WebSocketTurnEnd``), instead
/// of each queuing a flush task. A read that delivered a large message runs the queue at its
/// end instead (``runQueuedJobs()``), while the message is in the cache.
@available(macOS 15.0, iOS 18.0, tvOS 18.0, watchOS 11.0, *)
final class EventLoopExecutor: SerialExecutor, TaskExecutor, WebSocketTurnEnd, @unchecked Sendable {
    let eventLoop: any EventLoop
    // Touched on the event loop only (enqueue checks `inEventLoop`, drains run there).
    private var queue: [UnownedJob] = []
    private var spare: [UnownedJob] = []
    private var drainScheduled = false
    private var draining = false
    /// A run is under way (its jobs, or the flushes after them).
    private var running = false
    private var flushes: [WebSocketConnectionHandler] = []
    /// The storage of `flushes` while they run (so that a run allocates nothing).
    private var flushing: [WebSocketConnectionHandler] = []
    /// Batch buffers of flushed writes, for the next turn's writes (see ``spareBatch(capacity:)``).
    private var spareBatches: [ByteBuffer] = []

    init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        guard eventLoop.inEventLoop else {
            eventLoop.execute { self.enqueueOnLoop(job) }
            return
        }
        enqueueOnLoop(job)
    }

    private func enqueueOnLoop(_ job: UnownedJob) {
        queue.append(job)
        guard !drainScheduled else { return }
        drainScheduled = true
        eventLoop.execute { self.drain() }
    }

    /// The loop's turn ended: runs what its handlers queued (what those jobs enqueue waits for the
    /// next turn, after the I/O the loop has pending).
    private func drain() {
        drainScheduled = false
        runJobs()
    }

    /// Runs the jobs queued so far (those they enqueue wait for the next run), then the flushes
    /// they asked for.
    private func runJobs() {
        // A flush below that reaches a read's end (a channel that delivers as it writes) must
        // not start a run inside this one.
        running = true
        defer { running = false }
        swap(&queue, &spare)
        draining = true
        let serial = asUnownedSerialExecutor()
        let taskExecutor = asUnownedTaskExecutor()
        for job in spare {
            job.runSynchronously(isolatedTo: serial, taskExecutor: taskExecutor)
        }
        spare.removeAll(keepingCapacity: true)
        draining = false
        guard !flushes.isEmpty else { return }
        swap(&flushes, &flushing)
        for handler in flushing { handler.turnEnded() }
        flushing.removeAll(keepingCapacity: true)
    }

    func runQueuedJobs() {
        guard eventLoop.inEventLoop, !running, !queue.isEmpty else { return }
        runJobs()
    }

    func flushAtTurnEnd(_ handler: WebSocketConnectionHandler) -> Bool {
        guard draining, eventLoop.inEventLoop else { return false }
        flushes.append(handler)
        return true
    }

    /// Storage for a connection's batch of small frames: one a flush of this loop's handed back
    /// (cleared; it allocates again only if the channel still holds it, a write the socket did
    /// not take whole), else a new one. A turn writes to many connections before it flushes them
    /// all, so their batches, freed together, outnumber glibc's per-thread cache and a new one
    /// costs a trip through its bins (with `malloc_consolidate`): 0.2 µs per message of the
    /// async echo on W1, where every message is a batch of its own.
    func spareBatch(capacity: Int) -> ByteBuffer? {
        guard var buffer = spareBatches.popLast() else { return nil }
        buffer.clear(minimumCapacity: capacity)
        return buffer
    }

    /// Takes a flushed batch back for ``spareBatch(capacity:)``: at most 64 of at most 4 KiB each
    /// per loop.
    func recycle(_ batch: ByteBuffer) {
        guard spareBatches.count < 64, batch.capacity <= 4096 else { return }
        spareBatches.append(batch)
    }

    /// How many batch buffers are spare (for tests).
    var spareBatchCount: Int { spareBatches.count }

    func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    func checkIsolated() {
        eventLoop.preconditionInEventLoop()
    }
}

/// The isolation of a scoped handler: an actor whose executor runs on the connection's event
/// loop. The handler (`nonisolated(nonsending)`) and the connection's nonsending async calls
/// (`messages`, `write`) inherit it.
actor EventLoopIsolation {
    /// An ``EventLoopExecutor`` where task executors exist, else NIO's executor of the loop.
    nonisolated let loopExecutor: any SerialExecutor

    /// The isolation of a handler on `eventLoop`, with the loop's executor from `executors`
    /// (made there if it is the first).
    init(_ eventLoop: any EventLoop, executors: inout [ObjectIdentifier: any Sendable & AnyObject]) {
        if #available(macOS 15.0, iOS 18.0, tvOS 18.0, watchOS 11.0, *) {
            let key = ObjectIdentifier(eventLoop as AnyObject)
            if let existing = executors[key] as? EventLoopExecutor {
                loopExecutor = existing
            } else {
                let executor = EventLoopExecutor(eventLoop)
                executors[key] = executor
                loopExecutor = executor
            }
        } else {
            loopExecutor = eventLoop.executor
        }
    }

    nonisolated var unownedExecutor: UnownedSerialExecutor {
        loopExecutor.asUnownedSerialExecutor()
    }

    /// Runs `body` isolated to the event loop.
    func run(_ body: nonisolated(nonsending) @Sendable () async -> Void) async {
        await body()
    }
}

/// Where a connection's async writes flush when they were made by a job of an executor's turn:
/// at the turn's end, with the other connections of the turn.
protocol WebSocketTurnEnd: AnyObject, Sendable {
    /// Takes `handler` for a flush at the end of the running turn; false when no turn runs here.
    func flushAtTurnEnd(_ handler: WebSocketConnectionHandler) -> Bool
    /// Runs the jobs queued so far now, rather than at the end of the loop's turn (and the
    /// flushes they ask for). On the event loop; nothing when a turn runs already.
    func runQueuedJobs()
    /// A flushed batch buffer to write the next batch into, if one is spare. On the event loop.
    func spareBatch(capacity: Int) -> ByteBuffer?
    /// Hands a flushed batch buffer back for reuse. On the event loop.
    func recycle(_ batch: ByteBuffer)
}
