import NIOCore

// The client's and the connection's events, turned into the socket's state and its `on…` events.
extension W3CWebSocket {
    /// The client's `connect` (on the connection's event loop, before any message).
    func opened(_ connection: WebSocketConnection) {
        let (proceed, pendingClose, tokens) = state.withLockedValue { state -> (Bool, (code: Int?, reason: String?)?, [WebSocketHandlerToken]) in
            defer { state.clientTokens = [] }
            state.connection = connection
            guard state.readyState == Self.CONNECTING else { return (false, state.closeWhileConnecting, state.clientTokens) }
            state.readyState = Self.OPEN
            state.protocol = connection.protocol ?? ""
            state.extensions = connection.extensions.map(\.description).joined(separator: ", ")
            return (true, nil, state.clientTokens)
        }
        for token in tokens { token.cancel() }
        guard proceed else {
            // close() came first: as the original, close the connection that opened anyway.
            try? connection.close(reasonCode: pendingClose?.code ?? WebSocketCloseReason.normal, description: pendingClose?.reason)
            fail(WebSocketError(.aborted, "The connection was closed before it opened"))
            return
        }
        connection.onError { [self] error in dispatchError(error) }
        connection.onClose { [self] code, description in closed(code: code, reason: description) }
        let onopen = state.withLockedValue { state -> (@Sendable () -> Void)? in
            if state.onopen == nil { state.openUndelivered = true }
            return state.onopen
        }
        if let onopen {
            onopen()
            attachMessages(connection)
        }
    }

    func failedToOpen(_ error: WebSocketError) {
        let tokens = state.withLockedValue { state -> [WebSocketHandlerToken] in
            defer { state.clientTokens = [] }
            return state.clientTokens
        }
        for token in tokens { token.cancel() }
        fail(error)
    }

    /// The connection could not be opened: `error`, then `close` with 1006.
    func fail(_ error: WebSocketError) {
        dispatchError(error)
        dispatchClose(CloseEvent(code: WebSocketCloseReason.abnormal, reason: "connection failed", wasClean: false))
    }

    func received(_ message: WebSocketMessage) {
        let (handler, binaryType) = state.withLockedValue { state in
            (state.readyState == Self.OPEN ? state.onmessage : nil, state.binaryType)
        }
        guard let handler else { return }
        let data: MessageData
        switch message {
        case .utf8(let text):
            data = .text(text)
        case .binary(let buffer):
            data = binaryType == .bytebuffer ? .byteBuffer(buffer) : .arrayBuffer(Array(buffer.readableBytesView))
        }
        handler(MessageEvent(data: data, origin: origin))
    }

    private func closed(code: Int, reason: String) {
        if code == WebSocketCloseReason.abnormal {
            dispatchError(WebSocketError(.notConnected, "The connection ended abnormally (1006): \(reason)"))
        }
        dispatchClose(CloseEvent(code: code, reason: reason, wasClean: code != WebSocketCloseReason.abnormal))
    }

    private func dispatchError(_ error: any Error) {
        let handler = state.withLockedValue { state -> (@Sendable (ErrorEvent) -> Void)? in
            guard !state.errorSent, !state.closeSent else { return nil }
            state.errorSent = true
            return state.onerror
        }
        handler?(ErrorEvent(error: error, message: "\(error)"))
    }

    private func dispatchClose(_ event: CloseEvent) {
        let handler = state.withLockedValue { state -> (@Sendable (CloseEvent) -> Void)? in
            state.readyState = Self.CLOSED
            guard !state.closeSent else { return nil }
            state.closeSent = true
            return state.onclose
        }
        handler?(event)
    }
}
