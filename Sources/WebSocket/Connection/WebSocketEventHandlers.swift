import NIOConcurrencyHelpers

/// A token returned by every `on…` registration; pass it to `removeHandler(_:)` (or call
/// ``cancel()``) to unregister that handler.
public struct WebSocketHandlerToken: Sendable, Hashable {
    let id: UInt64
    let remove: @Sendable (UInt64) -> Void

    /// Unregisters the handler this token was returned for.
    public func cancel() { remove(id) }

    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.id == rhs.id }
    public func hash(into hasher: inout Hasher) { hasher.combine(id) }
}

/// An ordered list of handlers for one event, safe to register into from any thread.
///
/// Emission copies the list under the lock and calls the handlers outside it, in registration
/// order, so a handler may register or remove handlers without deadlocking.
final class WebSocketEventHandlers<Argument>: Sendable {
    typealias Handler = @Sendable (Argument) -> Void
    private let storage = NIOLockedValueBox<(next: UInt64, handlers: [(UInt64, Handler)])>((0, []))

    init() {}

    func add(_ handler: @escaping Handler) -> WebSocketHandlerToken {
        let id = storage.withLockedValue { state -> UInt64 in
            state.next += 1
            state.handlers.append((state.next, handler))
            return state.next
        }
        return WebSocketHandlerToken(id: id) { [weak self] id in self?.remove(id) }
    }

    func remove(_ id: UInt64) {
        storage.withLockedValue { $0.handlers.removeAll { $0.0 == id } }
    }

    var isEmpty: Bool { storage.withLockedValue { $0.handlers.isEmpty } }

    /// Calls every handler with `argument`; returns whether there was any.
    @discardableResult
    func emit(_ argument: Argument) -> Bool {
        let handlers = storage.withLockedValue { $0.handlers }
        for (_, handler) in handlers { handler(argument) }
        return !handlers.isEmpty
    }

    /// Removes every handler and returns them, in registration order.
    func takeAll() -> [Handler] {
        storage.withLockedValue { state in
            defer { state.handlers.removeAll() }
            return state.handlers.map(\.1)
        }
    }

    func removeAll() {
        storage.withLockedValue { $0.handlers.removeAll() }
    }
}
