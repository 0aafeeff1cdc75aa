import NIOConcurrencyHelpers
import NIOCore

// Delivery of queued publications, on each inbox's event loop (see WebSocketTopicRegistry).
extension WebSocketTopicRegistry {
    // MARK: - Delivery (on the inbox's event loop)

    func drain(_ inbox: Inbox) {
        let batch = lock.withLock { () -> [Delivery] in
            defer {
                inbox.pending.removeAll(keepingCapacity: false)
                inbox.pendingBytes = 0
                inbox.scheduled = false
            }
            return inbox.pending
        }
        var touched: [WebSocketConnectionHandler] = []
        var start = batch.startIndex
        while start < batch.endIndex {
            var end = start + 1
            while end < batch.endIndex, batch[end].group == batch[start].group, batch[end].version == batch[start].version {
                end += 1
            }
            deliver(batch[start..<end], touched: &touched)
            start = end
        }
        for handler in touched { handler.flushPublished() }
    }

    /// Delivers consecutive publications that go to the same subscribers.
    func deliver(_ group: ArraySlice<Delivery>, touched: inout [WebSocketConnectionHandler]) {
        let publications = group.map(\.publication)
        let senders = publications.compactMap(\.sender)
        var joined = WebSocketJoinedPublications(publications)
        var skippedConnections: [(WebSocketConnection, Int)] = []
        for subscriber in group[group.startIndex].subscribers {
            let connection = subscriber.connection
            let handler = connection.handler
            guard handler.acceptsPublished else { continue }
            if !handler.publishFlushPending {
                handler.publishFlushPending = true
                touched.append(handler)
            }
            let excluded = senders.contains(subscriber.id)
            let skipped: Int
            switch connection.topicFraming {
            case .own:
                skipped = deliverOwn(publications, to: handler, excluding: excluded ? subscriber.id : nil)
            case .plain, .sharedDeflate:
                let bytes = joined.frames(for: connection.topicFraming)
                skipped = deliverShared(bytes, count: publications.count, to: handler, excluding: excluded ? subscriber.id : nil, publications: publications)
            }
            if skipped > 0 { skippedConnections.append((connection, skipped)) }
        }
        if !skippedConnections.isEmpty {
            var total = 0
            for (connection, count) in skippedConnections {
                connection.recordSkippedPublications(count)
                total += count
            }
            lock.withLock { skippedTotal += total }
        }
    }

    /// Writes the joined frames (or, when `excluding` sent some of them, the runs between those)
    /// as far as the subscriber's backpressure allows; returns how many messages were skipped.
    ///
    /// What the socket takes at once is not backpressure: so that the limit counts only what
    /// waits in memory, a run is flushed every ``flushChunk`` bytes (the kernel takes it and the
    /// write completes, or it stays queued and counts).
    func deliverShared(
        _ bytes: WebSocketJoinedPublications.Frames, count: Int, to handler: WebSocketConnectionHandler,
        excluding: ObjectIdentifier?, publications: [WebSocketPublication]
    ) -> Int {
        let total = bytes.buffer.readableBytes
        if excluding == nil, total <= Self.flushChunk, handler.publishedBytesInFlight + total <= maxBackpressure {
            handler.writePublished(bytes.buffer)
            return 0
        }
        // Message by message: runs of consecutive messages that fit go out as one slice.
        var skipped = 0
        var runStart: Int?
        var runBytes = 0
        func writeRun(upTo index: Int) {
            guard let start = runStart else { return }
            let from = start == 0 ? 0 : bytes.ends[start - 1]
            let to = bytes.ends[index - 1]
            handler.writePublished(bytes.buffer.getSlice(at: bytes.buffer.readerIndex + from, length: to - from)!)
            runStart = nil
            runBytes = 0
        }
        for index in 0..<count {
            if let excluding, publications[index].sender == excluding {
                writeRun(upTo: index)
                continue
            }
            let size = bytes.ends[index] - (index == 0 ? 0 : bytes.ends[index - 1])
            if runBytes > 0, runBytes + size > Self.flushChunk || !fits(size, handler, plus: runBytes) {
                // Hand the run over and let the socket take what it can before judging this one.
                writeRun(upTo: index)
                handler.flushPublishedNow()
            }
            if fits(size, handler, plus: runBytes) {
                if runStart == nil { runStart = index }
                runBytes += size
                continue
            }
            skipped += 1
            if overLimit(handler) { return skipped }
        }
        writeRun(upTo: count)
        return skipped
    }

    /// How many bytes of published messages go to one connection between flushes within a drain.
    static let flushChunk = 64 * 1024

    /// Frames and compresses each publication on the subscriber's own state machine.
    func deliverOwn(_ publications: [WebSocketPublication], to handler: WebSocketConnectionHandler, excluding: ObjectIdentifier?) -> Int {
        var skipped = 0
        for publication in publications where excluding == nil || publication.sender != excluding {
            guard fits(publication.size, handler) else {
                skipped += 1
                if overLimit(handler) { return skipped }
                continue
            }
            handler.writePublished(publication)
            if handler.publishedBytesUnflushed >= Self.flushChunk { handler.flushPublishedNow() }
        }
        return skipped
    }

    /// Whether `size` more bytes (after `pending` bytes not yet handed over) keep the subscriber
    /// within `maxBackpressure`. A message always fits when nothing is queued: one larger than
    /// the limit still reaches a reader that keeps up.
    func fits(_ size: Int, _ handler: WebSocketConnectionHandler, plus pending: Int = 0) -> Bool {
        let queued = handler.publishedBytesInFlight + pending
        return queued == 0 || queued + size <= maxBackpressure
    }

    /// A message did not fit: with the close policy, the connection closes (returns true; it
    /// then takes no more messages).
    func overLimit(_ handler: WebSocketConnectionHandler) -> Bool {
        guard case .close(let code) = backpressurePolicy else { return false }
        handler.close(code: code.rawValue, description: "The connection reads too slowly for the messages published to it")
        return true
    }
}
