import NIOConcurrencyHelpers
import NIOCore

/// One reconnecting connection of a ``WebSocketClient``: carries out the decisions of a
/// ``WebSocketReconnectStateMachine`` (timers on its event loop, attempts, events). Everything
/// it does runs on `eventLoop`: the close of its connections (made there), the timer and the
/// outcome of the attempts; ``stop()`` may come from any thread.
///
/// The client keeps it (in `reconnections`) until it ends, so a client that reconnects
/// forever stays alive until ``WebSocketClient/stopReconnecting()``.
final class WebSocketReconnection: Sendable {
    /// Makes an attempt on the given loop, reporting no events (the reconnection does).
    typealias Connector = @Sendable (_ url: String, _ eventLoop: any EventLoop) -> EventLoopPromise<WebSocketConnection>

    /// What the application receives besides the client's events: the ``WebSocketClient/Connections`` sequence.
    struct Sink: Sendable {
        var yield: @Sendable (WebSocketConnection) -> Void
        var finish: @Sendable ((any Error)?) -> Void
        /// Runs its argument once the consumer is done with the connections handed out so far
        /// (it asks for the next one): a reconnection is announced after the loop that read
        /// the old connection has ended, so the application's lines come in the order things
        /// happened. Dropped when the sequence is gone.
        var whenConsumed: @Sendable (@escaping @Sendable () -> Void) -> Void
    }

    private struct State {
        var machine: WebSocketReconnectStateMachine
        var connection: WebSocketConnection?
        var timer: Scheduled<Void>?
        var attempt: EventLoopPromise<WebSocketConnection>?
        var ended = false
    }

    let id = WebSocketHandlerToken.nextID()
    let eventLoop: any EventLoop
    private let client: WebSocketClient
    private let connector: Connector
    private let random: @Sendable () -> Double
    private let sink: Sink?
    private let state: NIOLockedValueBox<State>

    init(
        client: WebSocketClient, policy: WebSocketClient.ReconnectPolicy, url: String, eventLoop: any EventLoop,
        initialPhase: WebSocketReconnectStateMachine.Phase = .connected, sink: Sink? = nil,
        random: @escaping @Sendable () -> Double = { Double.random(in: 0..<1) }, connector: @escaping Connector
    ) {
        self.client = client
        self.eventLoop = eventLoop
        self.connector = connector
        self.random = random
        self.sink = sink
        self.state = NIOLockedValueBox(State(machine: WebSocketReconnectStateMachine(policy: policy, url: url, phase: initialPhase)))
        client.reconnections.withLockedValue { $0[id] = self }
    }

    /// The open connection, if any.
    var connection: WebSocketConnection? { state.withLockedValue { $0.machine.phase == .connected ? $0.connection : nil } }

    /// The phase, for tests.
    var phase: WebSocketReconnectStateMachine.Phase { state.withLockedValue { $0.machine.phase } }

    /// Makes the first connection (in phase `.connecting`): a failure that is not retried
    /// (see ``WebSocketClient/ReconnectPolicy/retriesFirstConnection``) is reported as a plain
    /// connect's is, and ends the reconnection.
    func begin() {
        let url = state.withLockedValue { $0.machine.urls[0] }
        attempt(url: url)
    }

    /// Follows `connection`, just opened (its `connect` handlers have run).
    func follow(_ connection: WebSocketConnection) {
        let open = state.withLockedValue { state -> Bool in
            guard state.machine.phase != .stopped else { return false }
            state.machine.connected()
            state.connection = connection
            return true
        }
        guard open else {
            // Stopped while the attempt was under way: nobody wants this connection.
            try? connection.close(reasonCode: WebSocketCloseReason.normal, description: "Reconnection stopped")
            return
        }
        sink?.yield(connection)
        connection.onClose { [self] code, description in
            closed(code: code, description: description, byApplication: connection.closedByApplication)
        }
    }

    /// Ends the reconnection: no timer fires, an attempt under way is abandoned, and the
    /// current connection (which stays open) will not be reconnected. `.aborted` on the
    /// attempt or the wait (``WebSocketClient/abort()``) also reports it with `connectFailed`.
    func stop(reporting error: WebSocketError? = nil) {
        let (phase, timer, attempt) = state.withLockedValue { state in
            (state.machine.stop(), state.timer, state.attempt)
        }
        timer?.cancel()
        let abandoned = WebSocketError(.aborted, "The reconnection was stopped")
        attempt?.fail(error ?? abandoned)
        if let error, phase == .waiting || phase == .attempting {
            end(reporting: error)
        } else {
            end(reporting: nil)
        }
    }

    /// For ``WebSocketClient/abort()``: a reconnection waiting for its timer or making an
    /// attempt ends with `.aborted`; one whose connection is open goes on.
    func abortPending() {
        guard state.withLockedValue({ $0.machine.phase == .waiting || $0.machine.phase == .attempting }) else { return }
        stop(reporting: WebSocketError(.aborted, "The reconnection was aborted"))
    }

    // MARK: Carrying out the machine's actions

    /// The open connection closed with `code` (`byApplication`: by the application's own close).
    func closed(code: Int, description: String, byApplication: Bool) {
        let random = random()
        let action = state.withLockedValue { state in
            state.connection = nil
            return state.machine.closed(code: code, description: description, byApplication: byApplication, random: random)
        }
        perform(action)
    }

    private func perform(_ action: WebSocketReconnectStateMachine.Action) {
        switch action {
        case .retry(let next):
            guard let sink else {
                announce(next)
                return
            }
            // For the sequence: once the loop over the old connection has ended, on the loop.
            sink.whenConsumed { [self] in
                if eventLoop.inEventLoop { announce(next) } else { eventLoop.execute { [self] in announce(next) } }
            }
        case .stop:
            end(reporting: nil)
        case .giveUp(let error):
            client.logger.debug("WebSocket reconnection ended", metadata: ["error": "\(error)"])
            end(reporting: error)
        }
    }

    /// Tells the application about the attempt to come (the log line and `reconnecting`), then
    /// starts its delay; nothing if the reconnection was stopped meanwhile.
    private func announce(_ next: WebSocketClient.ReconnectAttempt) {
        guard state.withLockedValue({ $0.machine.phase == .waiting }) else { return }
        client.logger.debug(
            "WebSocket reconnecting",
            metadata: ["attempt": "\(next.number)", "delay": "\(next.delay)", "url": "\(next.url)", "cause": "\(next.cause)"])
        // The event first, so that it comes before the attempt whatever thread this is;
        // the timer only if nobody stopped the reconnection meanwhile (in a handler too).
        client.reconnectingHandlers.emit(next)
        state.withLockedValue { state in
            guard state.machine.phase == .waiting else { return }
            state.timer = eventLoop.scheduleTask(in: TimeAmount(scheduling: next.delay)) { [self] in timerFired() }
        }
    }

    private func timerFired() {
        guard let url = state.withLockedValue({ state -> String? in
            state.timer = nil
            return state.machine.timerFired()
        }) else { return }
        attempt(url: url)
    }

    private func attempt(url: String) {
        let promise = connector(url, eventLoop)
        let stopped = state.withLockedValue { state -> Bool in
            state.attempt = promise
            return state.machine.phase == .stopped
        }
        if stopped { promise.fail(WebSocketError(.aborted, "The reconnection was stopped")) }
        promise.futureResult.whenComplete { [self] result in
            state.withLockedValue { $0.attempt = nil }
            switch result {
            case .success(let connection):
                let (wanted, reconnected) = state.withLockedValue { ($0.machine.phase != .stopped, $0.machine.hasConnected) }
                if wanted { client.connectHandlers.emit(connection) }
                follow(connection)
                // The first connection is announced by `connect` alone, however many attempts it took.
                if wanted && reconnected { client.reconnectedHandlers.emit(connection) }
            case .failure(let failure):
                let error = WebSocketClient.webSocketError(failure, url: url)
                let random = random()
                let (first, action) = state.withLockedValue { state in
                    (state.machine.phase == .connecting, state.machine.attemptFailed(error, random: random))
                }
                if first, case .giveUp = action {
                    // Not retried: reported as a plain connect's failure (or its httpResponse).
                    client.emitConnectFailure(failure, url: url)
                    end(reporting: nil, finishing: error)
                } else {
                    perform(action)
                }
            }
        }
    }

    /// Forgets the reconnection (once): reports `error` with `connectFailed` and finishes the
    /// sequence with it (or with `finishing`, already reported).
    private func end(reporting error: WebSocketError?, finishing: WebSocketError? = nil) {
        let first = state.withLockedValue { state -> Bool in
            defer { state.ended = true }
            return !state.ended
        }
        guard first else { return }
        client.reconnections.withLockedValue { _ = $0.removeValue(forKey: id) }
        if let error { client.connectFailedHandlers.emit(error) }
        sink?.finish(error ?? finishing)
    }
}
