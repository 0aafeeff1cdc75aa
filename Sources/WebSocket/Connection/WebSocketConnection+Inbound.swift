import NIOConcurrencyHelpers
import NIOCore

extension WebSocketConnection {
    // MARK: Flow control

    /// Stops reading from the socket; no more events until ``resume()``.
    public func pause() {
        onLoop { $0.setUserPaused(true) }
    }

    /// Resumes reading after ``pause()``.
    public func resume() {
        onLoop { $0.setUserPaused(false) }
    }
    // MARK: Internals

    /// The consumer of ``messages`` caught up (or left): read on if nothing else holds reading.
    func streamCanResume() {
        onLoop { $0.setStreamBackpressure(false) }
    }

    func onLoop(_ body: @escaping @Sendable (WebSocketConnectionHandler) -> Void) {
        if eventLoop.inEventLoop {
            body(handler)
        } else {
            eventLoop.execute { body(self.handler) }
        }
    }

    /// A listener registered: hand it what waited (on the event loop, in order, as every
    /// handler runs; also after the connection closed, when the handler is gone).
    func consumerAttached() {
        onLoop { handler in
            if self.state.withLockedValue({ $0.closed }) {
                self.flushPending()
            } else {
                handler.consumerAttached()
            }
        }
    }
    /// The outcome of handing an inbound message or frame to the listeners.
    enum Delivery {
        case delivered
        /// The async sequence's buffer is full: stop reading until it asks for more.
        case backpressure
        /// Kept for the async sequence until the read's end (``publishMessages()``).
        case staged
        /// Nobody listens yet and enough waits: stop reading until someone does.
        case awaitingConsumer
    }

    /// What a message waiting for a first listener costs beside its payload (the event, its
    /// slot in the array, a string's or buffer's header), counted against `maxReceivedMessageSize`
    /// with its payload: a flood of empty frames to a connection nobody listens to pauses
    /// reading after 16,384 of them instead of never.
    static let pendingMessageOverhead = 64

    /// Hands a `.message` or `.frame` event to the listeners, or keeps it for the first one.
    ///
    /// One lock per message: whether it must wait, and who gets it, are read together.
    func deliver(_ event: WebSocketReceiver.Event) -> Delivery {
        let target = state.withLockedValue { state -> Target in
            let noListener = state.messageSource == nil && state.handlers.hasNoDataListener
            if noListener || !state.pending.isEmpty {
                state.pending.append(event)
                // Counted with an overhead per message, so that empty messages count too.
                state.pendingBytes += event.payloadSize + Self.pendingMessageOverhead
                return .waiting(overLimit: state.pendingBytes > maxPendingBytes)
            }
            return Self.target(of: event, in: &state)
        }
        return deliver(event, to: target)
    }

    /// Who gets an inbound event.
    private enum Target {
        case waiting(overLimit: Bool)
        case frame(WebSocketConnectionHandlers.List<WebSocketFrame>)
        case message(WebSocketConnectionHandlers.List<WebSocketMessage>, WebSocketMessageBuffer?)
        case nobody
    }

    private static func target(of event: WebSocketReceiver.Event, in state: inout PublicState) -> Target {
        switch event {
        case .frame: return .frame(state.handlers.frame)
        case .message: return .message(state.handlers.message, state.messageSource)
        default: return .nobody
        }
    }

    /// Calls the handlers outside the lock, in registration order, then the async sequence.
    private func deliver(_ event: WebSocketReceiver.Event, to target: Target) -> Delivery {
        switch (event, target) {
        case (_, .waiting(let overLimit)):
            return overLimit ? .awaitingConsumer : .delivered
        case (.frame(let frame), .frame(let handlers)):
            for entry in handlers { entry.handler(frame) }
            return .delivered
        case (.message(let message), .message(let handlers, let source)):
            for entry in handlers { entry.handler(message) }
            guard let source else { return .delivered }
            switch source.yield(message) {
            case .produceMore, .dropped: return .delivered
            case .stopProducing: return .backpressure
            case .staged: return .staged
            }
        default:
            return .delivered
        }
    }

    /// Delivers, in order, what waited for a listener (on the event loop, or after close).
    func flushPending() {
        let waiting = state.withLockedValue { state -> [WebSocketReceiver.Event] in
            let noListener = state.messageSource == nil && state.handlers.hasNoDataListener
            if noListener { return [] }
            defer {
                state.pending.removeAll()
                state.pendingBytes = 0
            }
            return state.pending
        }
        for event in waiting {
            _ = deliver(event, to: state.withLockedValue { Self.target(of: event, in: &$0) })
        }
        if state.withLockedValue({ $0.closed }) { finishMessages() }
    }

    func emitError(_ error: any Error) {
        emit(\.error, error)
        // The close follows; the messages sequence ends with this error then, after any message
        // still waiting for a listener.
        state.withLockedValue { $0.failure = $0.failure ?? error }
    }

    /// Hands the messages staged during a read to the `messages` iterator; true when the
    /// consumer lags (reading should pause). On the event loop.
    func publishMessages() -> Bool {
        guard let source = state.withLockedValue({ $0.messageSource }) else { return false }
        return source.publish() == .stopProducing
    }

    /// Ends the messages sequence: normally, or with the socket error the connection failed with.
    func finishMessages() {
        let (source, error) = state.withLockedValue { state -> (WebSocketMessageBuffer?, (any Error)?) in
            defer { state.messageSource = nil }
            return (state.messageSource, state.failure)
        }
        source?.finish(error)
    }}

/// Passed to `ping` handlers: call it to stop the automatic pong reply to that ping.
public struct WebSocketPingCancel: Sendable {
    private let flag = NIOLockedValueBox(false)

    /// Suppresses the automatic pong for this ping.
    public func callAsFunction() { flag.withLockedValue { $0 = true } }

    /// Whether a handler cancelled the pong.
    var cancelled: Bool { flag.withLockedValue { $0 } }
}
