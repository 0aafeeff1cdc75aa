import NIOCore

// Keepalive: the timer (on the event loop's clock), the ping, and the grace period from the
// moment the ping reached the socket.
extension WebSocketConnectionHandler {
    func scheduleKeepalive(at deadline: NIODeadline) {
        guard let context else { return }
        // Fails only while the event loop shuts down, which closes the connection anyway.
        keepaliveTimer = try? context.eventLoop.assumeIsolated().scheduleCallback(at: deadline, handler: KeepaliveCallback(handler: self))
    }

    /// Calls the handler's `keepaliveFired` when the keepalive timer expires.
    private struct KeepaliveCallback: NIOScheduledCallbackHandler {
        let handler: WebSocketConnectionHandler
        func handleScheduledCallback(eventLoop: some EventLoop) { handler.keepaliveFired() }
    }

    private func keepaliveFired() {
        guard let context else { return }
        switch machine.keepaliveFired(at: context.eventLoop.now, outboundBytes: outboundBytes) {
        case .stop:
            return
        case .drop:
            connection?.logger.debug("WebSocket keepalive timeout: the peer neither read the ping nor sent anything; dropping the connection")
            var output = Output(handler: self)
            let effects = machine.dropUnresponsive(into: &output)
            output.finish(promise: nil)
            perform(effects)
        case .reschedule(let deadline):
            scheduleKeepalive(at: deadline)
        case .ping(let deadline):
            var output = Output(handler: self)
            machine.writeKeepalivePing(into: &output)
            let written = context.eventLoop.makePromise(of: Void.self)
            output.finish(promise: written)
            written.futureResult.assumeIsolated().whenSuccess { self.keepalivePingWritten() }
            scheduleKeepalive(at: deadline)
        }
    }

    /// The keepalive ping reached the socket: the grace period starts now.
    private func keepalivePingWritten() {
        guard let context else { return }
        let writtenAt = context.eventLoop.now
        guard let end = machine.keepalivePingWritten(at: writtenAt) else { return }
        graceTimer?.cancel()
        graceTimer = context.eventLoop.assumeIsolated().scheduleTask(deadline: end) {
            var output = Output(handler: self)
            let effects = self.machine.keepaliveGraceEnded(pingWrittenAt: writtenAt, into: &output)
            if !effects.isEmpty {
                self.connection?.logger.debug("WebSocket keepalive timeout: dropping the connection")
            }
            output.finish(promise: nil)
            self.perform(effects)
        }
    }
}
