import NIOCore

extension W3CWebSocket {
    // MARK: Sending

    /// Sends a text message. Throws when the socket is not ``OPEN``.
    public func send(_ text: String) throws {
        let connection = try openConnection()
        let count = text.utf8.count
        queued(count)
        connection.sendUTF(text) { _ in self.written(count) }
    }

    /// Sends a binary message. Throws when the socket is not ``OPEN``.
    public func send(_ buffer: ByteBuffer) throws {
        let connection = try openConnection()
        let count = buffer.readableBytes
        queued(count)
        connection.sendBytes(buffer) { _ in self.written(count) }
    }

    /// Sends a binary message from bytes. Throws when the socket is not ``OPEN``.
    public func send(_ bytes: some Sequence<UInt8>) throws {
        let connection = try openConnection()
        try send(connection.socket.allocator.buffer(bytes: bytes))
    }

    // MARK: Closing

    /// Closes the connection, with the browser's checks.
    ///
    /// - Parameters:
    ///   - code: 1000 or 3000-4999; default: 1000.
    ///   - reason: at most 123 bytes of UTF-8; default: the standard description of the code.
    /// - Throws: a ``WebSocketError`` with code `.invalidCloseCode` for another code (the
    ///   browser's InvalidAccessError) or `.invalidArgument` for a longer reason (SyntaxError).
    ///   Nothing happens when the socket is already ``CLOSING`` or ``CLOSED``; while
    ///   ``CONNECTING``, the attempt is abandoned and `onerror` and `onclose` (1006) follow.
    public func close(code: Int? = nil, reason: String? = nil) throws {
        if let code, !(code == 1000 || (3000...4999).contains(code)) {
            throw WebSocketError(.invalidCloseCode, "InvalidAccessError: the close code must be 1000 or in 3000-4999, not \(code)")
        }
        if let reason, reason.utf8.count > 123 {
            throw WebSocketError(.invalidArgument, "SyntaxError: the close reason is \(reason.utf8.count) bytes of UTF-8; at most 123 are allowed")
        }
        enum Action { case none, abort, close(WebSocketConnection) }
        let action = state.withLockedValue { state -> Action in
            switch state.readyState {
            case Self.CONNECTING:
                state.readyState = Self.CLOSING
                state.closeWhileConnecting = (code, reason)
                return .abort
            case Self.OPEN:
                state.readyState = Self.CLOSING
                return state.connection.map { .close($0) } ?? .none
            default:
                return .none
            }
        }
        switch action {
        case .none:
            break
        case .abort:
            client.abort()
        case .close(let connection):
            try connection.close(reasonCode: code ?? WebSocketCloseReason.normal, description: reason)
        }
    }

    /// ``close(code:reason:)`` with a ``WebSocketCloseCode`` (`.normal`, or a 3000-4999 code).
    public func close(code: WebSocketCloseCode, reason: String? = nil) throws {
        try close(code: code.rawValue, reason: reason)
    }

    // MARK: Internals

    private func openConnection() throws -> WebSocketConnection {
        try state.withLockedValue { state in
            guard state.readyState == Self.OPEN, let connection = state.connection else {
                throw WebSocketError(.notConnected, "InvalidStateError: cannot call send() while not connected (readyState \(state.readyState))")
            }
            return connection
        }
    }

    private func queued(_ count: Int) {
        state.withLockedValue { $0.bufferedAmount += count }
    }

    private func written(_ count: Int) {
        state.withLockedValue { $0.bufferedAmount -= count }
    }
}
