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
        let attachNow = state.withLockedValue { state -> Bool in
            state.held.append(.open(connection))
            // No handler set yet: `onopen` and `onmessage` may both come, in either order, and the
            // open event must come first. `onmessage` set before the open but no `onopen`: the user
            // set the handlers wanted before the socket opened; the messages do not wait for an
            // `onopen` that may never be set.
            state.messagesWaitForOpen = state.onopen == nil && state.onmessage == nil
            return state.onopen == nil && state.onmessage != nil
        }
        deliverHeldEvents()
        if attachNow { attachMessages(connection) }
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
        let fired = state.withLockedValue { state -> Bool in
            guard !state.errorSent, !state.closeSent else { return false }
            state.errorSent = true
            state.held.append(.error(ErrorEvent(error: error, message: "\(error)")))
            return true
        }
        if fired { deliverHeldEvents() }
    }

    private func dispatchClose(_ event: CloseEvent) {
        let fired = state.withLockedValue { state -> Bool in
            state.readyState = Self.CLOSED
            guard !state.closeSent else { return false }
            state.closeSent = true
            state.held.append(.close(event))
            return true
        }
        if fired { deliverHeldEvents() }
    }

    /// A held event with its handler, ready to be called.
    private enum Delivery {
        case open(@Sendable () -> Void, WebSocketConnection)
        case error(@Sendable (ErrorEvent) -> Void, ErrorEvent)
        case close(@Sendable (CloseEvent) -> Void, CloseEvent)
    }

    /// Calls the handlers of the held events, on the event loop, in the order the events fired.
    ///
    /// Every event goes through `held`: one fired while its handler is set is delivered at once;
    /// one fired before any handler of its kind was set stays until one is (the setter calls this
    /// again), as a browser's handlers set in the script that created the socket see every event.
    /// A held event does not hold back later events of other kinds whose handlers are set: with
    /// `onerror` never set, `onclose` still runs. The handler is read when the event is delivered,
    /// so an event fired while the user set handlers from another thread reaches them in order.
    func deliverHeldEvents() {
        guard eventLoop.inEventLoop else {
            eventLoop.execute { self.deliverHeldEvents() }
            return
        }
        let start = state.withLockedValue { state -> Bool in
            guard !state.delivering else { return false }  // the running call delivers it
            state.delivering = true
            return true
        }
        guard start else { return }
        while let delivery = nextDelivery() {
            switch delivery {
            case .open(let handler, let connection):
                handler()
                attachMessages(connection)
            case .error(let handler, let event):
                handler(event)
            case .close(let handler, let event):
                handler(event)
            }
        }
    }

    /// Takes the first held event whose handler is set; ends the delivery when there is none.
    private func nextDelivery() -> Delivery? {
        state.withLockedValue { state -> Delivery? in
            for (index, event) in state.held.enumerated() {
                switch event {
                case .open(let connection):
                    guard let handler = state.onopen else { continue }
                    state.held.remove(at: index)
                    state.messagesWaitForOpen = false
                    return .open(handler, connection)
                case .error(let errorEvent):
                    guard let handler = state.onerror else { continue }
                    state.held.remove(at: index)
                    return .error(handler, errorEvent)
                case .close(let closeEvent):
                    guard let handler = state.onclose else { continue }
                    state.held.remove(at: index)
                    return .close(handler, closeEvent)
                }
            }
            state.delivering = false
            return nil
        }
    }
}

extension W3CWebSocket.State {
    /// Whether `event` has a handler to be delivered to.
    func handlerIsSet(for event: W3CWebSocket.HeldEvent) -> Bool {
        switch event {
        case .open: return onopen != nil
        case .error: return onerror != nil
        case .close: return onclose != nil
        }
    }
}
