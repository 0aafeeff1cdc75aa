/// The decisions of one reconnecting connection, without I/O: fed what happened (the
/// connection closed, an attempt failed, the timer fired), it returns what to do, and the
/// caller (``WebSocketReconnection``) sets the timers and makes the attempts. The random number
/// for the jitter comes in as a value, so every transition is a plain function of its inputs.
struct WebSocketReconnectStateMachine {
    typealias Policy = WebSocketClient.ReconnectPolicy

    enum Phase: Equatable {
        /// The first attempt of the first connection is under way (`connect(_:)` with
        /// ``WebSocketClient/ReconnectPolicy/retriesFirstConnection``, or
        /// ``WebSocketClient/connections(to:protocols:origin:headers:requestOptions:)``); its
        /// retries, if any, are `waiting` and `attempting` as a reconnection's are.
        case connecting
        /// A connection is open.
        case connected
        /// Waiting for the backoff delay before an attempt.
        case waiting
        /// A reconnection attempt is under way.
        case attempting
        /// Ended: nothing more happens.
        case stopped
    }

    enum Action: Equatable {
        /// Wait `attempt.delay`, then connect to `attempt.url` (and tell the application).
        case retry(WebSocketClient.ReconnectAttempt)
        /// End without a word: the application closed, or the close does not reconnect.
        case stop
        /// End, and report this error (`connectFailed`).
        case giveUp(WebSocketError)
    }

    let policy: Policy
    /// The URL given to `connect`, then the policy's others.
    let urls: [String]
    private(set) var phase: Phase
    /// The index in `urls` of the current (or last) connection or attempt.
    private(set) var urlIndex = 0
    /// Failed attempts since the last open connection (or the number of the one under way).
    private(set) var attempt = 0
    /// Whether a connection has been open: before, the attempts are the first connection's
    /// (its success is no reconnection, and a failure that gives up is no failed reconnection).
    private(set) var hasConnected = false

    init(policy: Policy, url: String, phase: Phase = .connected) {
        self.policy = policy
        self.urls = [url] + policy.urls.filter { $0 != url }
        self.phase = phase
        // A machine made for an open connection follows one that has connected.
        self.hasConnected = phase == .connected
    }

    /// A connection opened: the attempt count starts again.
    mutating func connected() {
        guard phase != .stopped else { return }
        phase = .connected
        attempt = 0
        hasConnected = true
    }

    /// The open connection closed with `code`; `byApplication` when the application closed it.
    mutating func closed(code: Int, description: String, byApplication: Bool, random: Double) -> Action {
        guard phase == .connected else { return .stop }
        let cause = WebSocketClient.ReconnectCause.closed(code: code, description: description)
        guard !byApplication, policy.shouldReconnect(cause) else {
            phase = .stopped
            return .stop
        }
        return next(after: cause, random: random)
    }

    /// The first connection or a reconnection attempt failed with `error`.
    mutating func attemptFailed(_ error: WebSocketError, random: Double) -> Action {
        let cause = WebSocketClient.ReconnectCause.failed(error)
        switch phase {
        case .connecting:
            // The first attempt: its error as is, unless it is retried (an error that would not
            // reconnect is not: nothing was retried, so the plain error says the most).
            guard policy.retriesFirstConnection, error.code != .aborted, policy.shouldReconnect(cause) else {
                phase = .stopped
                return .giveUp(error)
            }
            return next(after: cause, random: random)
        case .attempting:
            break
        case .connected, .waiting, .stopped:
            return .stop
        }
        if error.code == .aborted {
            phase = .stopped
            return .giveUp(error)
        }
        guard policy.shouldReconnect(cause) else {
            phase = .stopped
            let stopped = hasConnected ? "Stopped reconnecting" : "Stopped retrying the first connection"
            return .giveUp(
                WebSocketError(
                    .reconnectFailed,
                    "\(stopped): the attempt to \(urls[urlIndex]) failed with an error that does not reconnect "
                        + "(see ReconnectPolicy.shouldReconnect): \(error.message)",
                    response: error.response))
        }
        return next(after: cause, random: random)
    }

    /// The backoff delay is over: the URL to connect to now, or nil when stopped meanwhile.
    mutating func timerFired() -> String? {
        guard phase == .waiting else { return nil }
        phase = .attempting
        return urls[urlIndex]
    }

    /// Ends the reconnection (the application's `stopReconnecting()`); returns the phase it
    /// was in.
    @discardableResult
    mutating func stop() -> Phase {
        defer { phase = .stopped }
        return phase
    }

    private mutating func next(after cause: WebSocketClient.ReconnectCause, random: Double) -> Action {
        if let maxAttempts = policy.maxAttempts, attempt >= maxAttempts {
            phase = .stopped
            let gaveUp = hasConnected
                ? "Gave up reconnecting after \(attempt) failed attempt\(attempt == 1 ? "" : "s")"
                : "Gave up connecting after the first attempt and \(attempt) failed retr\(attempt == 1 ? "y" : "ies")"
            var error = WebSocketError(
                .reconnectFailed, gaveUp + " (maxAttempts is \(maxAttempts)) to \(urls.joined(separator: ", ")); \(cause)")
            if case .failed(let last) = cause { error.response = last.response }
            return .giveUp(error)
        }
        attempt += 1
        urlIndex = (urlIndex + 1) % urls.count
        phase = .waiting
        let delay = policy.delay(forAttempt: attempt, random: random)
        return .retry(WebSocketClient.ReconnectAttempt(number: attempt, delay: delay, url: urls[urlIndex], cause: cause))
    }
}
