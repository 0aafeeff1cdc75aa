import NIOConcurrencyHelpers
import NIOCore

// Reconnecting by itself (Configuration.reconnect): the events, stopping, and the connections
// as an async sequence.
extension WebSocketClient {
    // MARK: Events

    /// Registers a handler for `reconnecting`: a connection ended (or a reconnection attempt, or
    /// the first connection's attempt, failed) and the client will connect again after
    /// ``ReconnectAttempt/delay``, to ``ReconnectAttempt/url``; ``ReconnectAttempt/cause`` says
    /// why. Only with ``Configuration/reconnect`` set (or from
    /// ``connections(to:protocols:origin:headers:requestOptions:)``). It runs on the
    /// connection's event loop, after the old connection's `close` handlers; for the
    /// connections of ``connections(to:protocols:origin:headers:requestOptions:)``, also after
    /// the loop body that had the old connection has ended (the iterator asked for the next
    /// connection). ``stopReconnecting()`` called in it cancels the attempt.
    @discardableResult
    public func onReconnecting(_ handler: @escaping @Sendable (ReconnectAttempt) -> Void) -> WebSocketHandlerToken {
        reconnectingHandlers.add(handler)
    }

    /// Registers a handler for `reconnected`: a reconnection attempt opened this connection.
    /// The `connect` handlers (``onConnect(_:)``) have run for it just before, so code that
    /// sets up a connection (registers handlers, subscribes) belongs there and runs for every
    /// connection; this event tells the reconnections apart.
    @discardableResult
    public func onReconnected(_ handler: @escaping @Sendable (WebSocketConnection) -> Void) -> WebSocketHandlerToken {
        reconnectedHandlers.add(handler)
    }

    // MARK: Stopping

    /// Stops every reconnection of this client: a pending attempt is cancelled (no event), an
    /// attempt under way is abandoned, and open connections stay open but are not reconnected
    /// when they close. Connections made after this call reconnect again, as configured.
    ///
    /// Closing a connection yourself (`close()` or `drop()`) already ends its reconnection;
    /// this is for the time between a connection's end and the next attempt, and for
    /// shutting down.
    public func stopReconnecting() {
        for reconnection in reconnections.withLockedValue({ Array($0.values) }) {
            reconnection.stop()
        }
    }

    /// `connect(_:)` with a policy that retries the first connection: a reconnection that
    /// makes the first connection too, reporting through the client's events.
    func connectReconnecting(
        policy: ReconnectPolicy, url: String, protocols: [String], origin: String?, headers: [String: String],
        requestOptions: RequestOptions?
    ) {
        reconnection(
            policy: policy, url: url, protocols: protocols, origin: origin, headers: headers, requestOptions: requestOptions,
            eventLoop: eventLoopGroup.next(), initialPhase: .connecting
        ).begin()
    }

    /// A reconnection following the connections to `url` made by URL.
    func reconnection(
        policy: ReconnectPolicy, url: String, protocols: [String], origin: String?, headers: [String: String],
        requestOptions: RequestOptions?, eventLoop: any EventLoop,
        initialPhase: WebSocketReconnectStateMachine.Phase = .connected, sink: WebSocketReconnection.Sink? = nil
    ) -> WebSocketReconnection {
        WebSocketReconnection(client: self, policy: policy, url: url, eventLoop: eventLoop, initialPhase: initialPhase, sink: sink) {
            [self] url, eventLoop in
            start(
                url: url, protocols: protocols, origin: origin, headers: headers, requestOptions: requestOptions,
                on: eventLoop, quiet: true)
        }
    }

    // MARK: Async

    /// The connections to `url` as an async sequence, reconnecting as
    /// ``Configuration/reconnect`` says (or, when that is `nil`, with the defaults of
    /// ``ReconnectPolicy``): the first element is the first connection, each next one the
    /// connection a reconnection opened. Iterating starts connecting; the parameters are those
    /// of ``connect(url:protocols:origin:headers:requestOptions:)``.
    ///
    /// ```swift
    /// for try await connection in client.connections(to: "ws://node-a:8080/feed") {
    ///     try await connection.write("subscribe prices")   // again on every node
    ///     for try await message in connection.messages { print(message) }
    /// }
    /// ```
    ///
    /// A first connection that fails is retried like a reconnection (unless
    /// ``ReconnectPolicy/retriesFirstConnection`` is off), so a client may start before its
    /// server. How the loop ends tells why:
    /// - it ends (`nil`) when a connection closes without reconnecting (a normal close by the
    ///   server, your own `close()`) or after ``stopReconnecting()``;
    /// - it throws `CancellationError` when the task that iterates is cancelled (a stop, not a
    ///   close: the current connection is closed with 1001, going away);
    /// - it throws ``WebSocketError/Code-swift.struct/reconnectFailed`` when reconnecting gives
    ///   up, and the first attempt's own error when that is not retried.
    ///
    /// ``onReconnecting(_:)`` fires once the loop body that had the old connection has ended
    /// (the iterator asked for the next one), so what that body logs after its `messages`
    /// loop comes first. Leaving the loop in any way (`break`, an error thrown, the task
    /// cancelled) stops reconnecting and closes the current connection with 1001 (going
    /// away): for one connection you keep, use `connect(url:)`. The client's events are
    /// emitted as well.
    public func connections(
        to url: String, protocols: [String] = [], origin: String? = nil, headers: [String: String] = [:],
        requestOptions: RequestOptions? = nil
    ) -> Connections {
        Connections(client: self, url: url, protocols: protocols, origin: origin, headers: headers, requestOptions: requestOptions)
    }

    /// The connections of ``connections(to:protocols:origin:headers:requestOptions:)``: one
    /// iterator, which starts connecting.
    public struct Connections: AsyncSequence, Sendable {
        /// An open connection.
        public typealias Element = WebSocketConnection
        let client: WebSocketClient
        let url: String
        let protocols: [String]
        let origin: String?
        let headers: [String: String]
        let requestOptions: RequestOptions?

        /// Starts connecting, and hands out the connections in order.
        public func makeAsyncIterator() -> AsyncIterator {
            let inbox = Inbox()
            let policy = client.configuration.reconnect ?? ReconnectPolicy()
            do {
                try policy.validate()
            } catch {
                inbox.finish(error)
                return AsyncIterator(inbox: inbox)
            }
            let reconnection = client.reconnection(
                policy: policy, url: url, protocols: protocols, origin: origin, headers: headers,
                requestOptions: requestOptions, eventLoop: client.eventLoopGroup.next(), initialPhase: .connecting,
                // Weakly: an iterator dropped (the loop left) ends the reconnection.
                sink: WebSocketReconnection.Sink(
                    yield: { [weak inbox] in inbox?.yield($0) }, finish: { [weak inbox] in inbox?.finish($0) },
                    whenConsumed: { [weak inbox] in inbox?.whenConsumed($0) }))
            inbox.reconnection.withLockedValue { $0 = reconnection }
            reconnection.begin()
            return AsyncIterator(inbox: inbox)
        }

        /// Hands out the connections.
        public struct AsyncIterator: AsyncIteratorProtocol {
            let inbox: Inbox

            /// The next connection; `nil` once reconnecting has ended without an error. Throws
            /// `CancellationError` when the task is cancelled.
            public mutating func next() async throws -> WebSocketConnection? {
                try await inbox.next()
            }
        }

        /// The connections not yet handed out, and the iterator waiting for one.
        final class Inbox: Sendable {
            private struct State {
                var connections: [WebSocketConnection] = []
                var waiter: CheckedContinuation<WebSocketConnection?, any Error>?
                var end: Result<Void, any Error>?
                /// What waits until the consumer comes back for a connection with none buffered
                /// (see ``whenConsumed(_:)``).
                var afterConsumed: [@Sendable () -> Void] = []
            }
            private let state = NIOLockedValueBox(State())
            let reconnection = NIOLockedValueBox<WebSocketReconnection?>(nil)

            func yield(_ connection: WebSocketConnection) {
                let waiter = state.withLockedValue { state -> CheckedContinuation<WebSocketConnection?, any Error>? in
                    guard let waiter = state.waiter else {
                        state.connections.append(connection)
                        return nil
                    }
                    state.waiter = nil
                    return waiter
                }
                waiter?.resume(returning: connection)
            }

            func finish(_ error: (any Error)?) {
                let waiter = state.withLockedValue { state -> CheckedContinuation<WebSocketConnection?, any Error>? in
                    guard state.end == nil else { return nil }
                    state.end = error.map { .failure($0) } ?? .success(())
                    state.afterConsumed = []
                    defer { state.waiter = nil }
                    return state.waiter
                }
                if let error { waiter?.resume(throwing: error) } else { waiter?.resume(returning: nil) }
            }

            /// Runs `action` once the consumer has finished with every connection handed out:
            /// now if it waits for the next one, else when it next asks with none buffered.
            func whenConsumed(_ action: @escaping @Sendable () -> Void) {
                let now = state.withLockedValue { state -> Bool in
                    guard state.end == nil else { return false }
                    if state.waiter != nil && state.connections.isEmpty { return true }
                    state.afterConsumed.append(action)
                    return false
                }
                if now { action() }
            }

            func next() async throws -> WebSocketConnection? {
                try await withTaskCancellationHandler {
                    try await withCheckedThrowingContinuation { continuation in
                        let (outcome, consumed) = state.withLockedValue {
                            state -> (Result<WebSocketConnection?, any Error>?, [@Sendable () -> Void]) in
                            if !state.connections.isEmpty { return (.success(state.connections.removeFirst()), []) }
                            let consumed = state.afterConsumed
                            state.afterConsumed = []
                            switch state.end {
                            case .success?:
                                return (.success(nil), [])
                            case .failure(let error)?:
                                state.end = .success(())  // thrown once; then the sequence is over
                                return (.failure(error), [])
                            case nil:
                                state.waiter = continuation
                                return (nil, consumed)
                            }
                        }
                        if let outcome { continuation.resume(with: outcome) }
                        for action in consumed { action() }
                    }
                } onCancel: {
                    cancel(byTask: true)
                }
            }

            /// The iterating task was cancelled (`byTask`: the loop throws `CancellationError`),
            /// or the iterator is gone (the loop was left): stop reconnecting, close the current
            /// connection.
            private func cancel(byTask: Bool = false) {
                if byTask {
                    // Before the reconnection's own end (a plain `nil`): a stop, not a close.
                    let (waiter, unread) = state.withLockedValue {
                        state -> (CheckedContinuation<WebSocketConnection?, any Error>?, [WebSocketConnection]) in
                        guard state.end == nil else { return (nil, []) }
                        state.end = .failure(CancellationError())
                        state.afterConsumed = []
                        defer {
                            state.waiter = nil
                            state.connections = []
                        }
                        return (state.waiter, state.connections)
                    }
                    waiter?.resume(throwing: CancellationError())
                    for connection in unread { try? connection.close(reasonCode: WebSocketCloseReason.goingAway) }
                }
                guard let reconnection = reconnection.withLockedValue({ $0 }) else { return }
                let current = reconnection.connection
                reconnection.stop()  // ends the sequence
                try? current?.close(reasonCode: WebSocketCloseReason.goingAway)
            }

            deinit {
                cancel()
            }
        }
    }
}
