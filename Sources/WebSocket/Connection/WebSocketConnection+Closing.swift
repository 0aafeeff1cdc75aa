import NIOCore

extension WebSocketConnection {
    // MARK: Closing

    /// Closes the connection gracefully: sends a close frame with `reasonCode` and
    /// `description`, then waits up to `closeTimeout` for the peer's close frame before
    /// closing the socket.
    ///
    /// With no description, a standard code's default description is sent; pass `""` to send
    /// none. Throws for a code that may not be sent (see
    /// ``WebSocketCloseReason/isValidOnWire(_:)``) or a description over 123 bytes.
    ///
    /// Only the first close counts. Called again while the connection is closing (by either
    /// side) or once it has closed, it does nothing: no error, no second close frame, no second
    /// `close` event, and ``closeReasonCode`` and ``closeDescription`` keep the first close's
    /// values. The arguments are still checked first, so an invalid code throws even then.
    /// Returns at once; `try await connection.close(code:reason:)` waits for the handshake.
    public func close(reasonCode: Int = WebSocketCloseReason.normal, description: String? = nil) throws {
        guard WebSocketCloseReason.isValidOnWire(reasonCode) else {
            throw WebSocketError(.invalidCloseCode, "Close code \(reasonCode) is not valid: use 1000-1003, 1007-1014 or 3000-4999")
        }
        let text = description ?? WebSocketCloseReason.description(for: reasonCode)
        guard text.utf8.count <= 123 else {
            throw WebSocketError(.controlFrameTooLarge, "Close description is \(text.utf8.count) bytes; at most 123 fit in a close frame")
        }
        // Like the original, the connection counts as closing from this call on.
        markClosing(code: reasonCode, description: text, byApplication: true)
        onLoop { $0.close(code: reasonCode, description: text) }
    }

    /// Sends a close frame with `reasonCode` and closes the socket without waiting for the
    /// peer. For error conditions; the default code is 1002 (protocol error).
    /// `skipCloseFrame` closes the socket without sending a close frame.
    ///
    /// On a connection that is already closed it does nothing (no error, no second `close`
    /// event); on one that is closing it closes the socket without waiting further.
    public func drop(reasonCode: Int = WebSocketCloseReason.protocolError, description: String? = nil, skipCloseFrame: Bool = false) {
        let text = description ?? WebSocketCloseReason.description(for: reasonCode)
        markClosing(code: reasonCode, description: text, byApplication: true)
        onLoop { $0.drop(code: reasonCode, description: text, skipCloseFrame: skipCloseFrame) }
    }

    /// ``close(reasonCode:description:)`` with a ``WebSocketCloseCode`` (`.normal`, `.goingAway`, …).
    public func close(reasonCode: WebSocketCloseCode, description: String? = nil) throws {
        try close(reasonCode: reasonCode.rawValue, description: description)
    }

    /// ``drop(reasonCode:description:skipCloseFrame:)`` with a ``WebSocketCloseCode``.
    public func drop(reasonCode: WebSocketCloseCode, description: String? = nil, skipCloseFrame: Bool = false) {
        drop(reasonCode: reasonCode.rawValue, description: description, skipCloseFrame: skipCloseFrame)
    }

    /// How a connection ended, as the `async` ``close(code:reason:)`` reports it.
    public struct CloseResult: Sendable, Hashable {
        /// The code the connection closed with: ours when we closed first, the peer's when it did.
        public var code: WebSocketCloseCode
        /// The description that goes with ``code``.
        public var description: String
        /// Whether the close handshake completed (both close frames exchanged). False when the
        /// peer did not answer within `closeTimeout`, or the socket died first.
        public var handshakeCompleted: Bool
    }

    /// Closes the connection and waits until it is closed: sends a close frame with `code` and
    /// `reason`, waits for the peer's (at most `closeTimeout`, then the socket is closed
    /// anyway), and returns how it ended, including whether the handshake completed or timed out.
    ///
    /// On a connection that is already closing (a close from either side) it starts nothing and
    /// waits for that close; on a closed one it returns at once. Throws for a code that may not
    /// be sent or a reason over 123 bytes, like ``close(reasonCode:description:)``.
    @discardableResult
    public func close(code: WebSocketCloseCode, reason: String? = nil) async throws -> CloseResult {
        if closeReasonCode == -1 {
            try close(reasonCode: code.rawValue, description: reason)
        }
        return await withCheckedContinuation { (continuation: CheckedContinuation<CloseResult, Never>) in
            let done = state.withLockedValue { state -> CloseResult? in
                guard state.closed else {
                    state.closeWaiters.append(continuation)
                    return nil
                }
                return CloseResult(
                    code: WebSocketCloseCode(state.closeReasonCode), description: state.closeDescription ?? "",
                    handshakeCompleted: state.handshakeCompleted)
            }
            if let done { continuation.resume(returning: done) }
        }
    }

    /// Records that a close started (first caller wins); returns false if one had already.
    /// `byApplication`: the application's `close()` or `drop()`.
    @discardableResult
    func markClosing(code: Int, description: String, byApplication: Bool = false) -> Bool {
        let first = state.withLockedValue { state in
            guard state.closeReasonCode == -1 else {
                state.connected = false
                return false
            }
            state.connected = false
            state.closeReasonCode = code
            state.closeDescription = description
            state.closedByApplication = byApplication
            return true
        }
        // A closing connection leaves its topics (after `connected` turned false, so that no
        // subscription slips in after this).
        topicRegistry?.leaveAll(self)
        return first
    }

    /// Called once by the handler when the socket has closed; `handshakeCompleted` tells
    /// whether both close frames were exchanged.
    func didClose(handshakeCompleted: Bool) {
        let (code, description, hasPending, handlers, server, waiters) = state.withLockedValue {
            state -> (Int, String, Bool, [@Sendable ((Int, String)) -> Void], WebSocketServer?, Waiters) in
            state.connected = false
            state.closed = true
            state.handshakeCompleted = handshakeCompleted
            if state.closeReasonCode == -1 {
                state.closeReasonCode = WebSocketCloseReason.abnormal
                state.closeDescription = WebSocketCloseReason.description(for: WebSocketCloseReason.abnormal)
            }
            let server = state.server
            state.server = nil
            let handlers = state.handlers.close.map(\.handler)
            state.handlers.close.removeAll()
            let waiters = Waiters(writes: state.writeWaiters, closes: state.closeWaiters, pings: state.pingWaiters)
            state.writeWaiters = []
            state.closeWaiters = []
            state.pingWaiters = []
            return (state.closeReasonCode, state.closeDescription ?? "", !state.pending.isEmpty, handlers, server, waiters)
        }
        topicRegistry?.leaveAll(self)
        server?.connectionClosed(self, code: code, description: description)
        let closedError = WebSocketError(.notConnected, "The connection closed (\(code) \(description))")
        for waiter in waiters.writes { waiter.resume(throwing: closedError) }
        for waiter in waiters.pings { waiter.continuation.resume(throwing: closedError) }
        let result = CloseResult(code: WebSocketCloseCode(code), description: description, handshakeCompleted: handshakeCompleted)
        for waiter in waiters.closes { waiter.resume(returning: result) }
        // Close handlers first, so code after a `for try await … in messages` loop sees them run.
        for handler in handlers { handler((code, description)) }
        // Messages still waiting for a listener stay for one that comes later (the sequence
        // then yields them and ends).
        if !hasPending { finishMessages() }
        state.withLockedValue { $0.handlers.removeAll() }
    }

    /// What waited for the close, taken out of the state together.
    struct Waiters {
        var writes: [CheckedContinuation<Void, any Error>]
        var closes: [CheckedContinuation<CloseResult, Never>]
        var pings: [PingWaiter]
    }

    /// How a connection ended, for a close handler registered too late.
    struct CloseInfo: Error {
        var code: Int
        var description: String
    }

}
