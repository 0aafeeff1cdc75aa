import NIOConcurrencyHelpers
import NIOCore

/// A token returned by every `on…` registration; pass it to `removeHandler(_:)` (or call
/// ``cancel()``) to unregister that handler.
///
/// Tokens are equal only when they were returned for the same registration: ids are unique in
/// the process, across connections, servers and clients.
public struct WebSocketHandlerToken: Sendable, Hashable {
    let id: UInt64
    let remove: @Sendable (UInt64) -> Void

    /// A token for a registration that holds nothing (a close handler registered after the
    /// close ran at once): removing it does nothing, and it equals no other token.
    static func inert() -> WebSocketHandlerToken {
        WebSocketHandlerToken(id: nextID()) { _ in }
    }

    private static let counter = NIOLockedValueBox<UInt64>(0)

    /// A new id, unique in the process (one lock, taken per registration, never per message).
    static func nextID() -> UInt64 {
        counter.withLockedValue { next in
            next += 1
            return next
        }
    }

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
    private let storage = NIOLockedValueBox<[(UInt64, Handler)]>([])

    init() {}

    func add(_ handler: @escaping Handler) -> WebSocketHandlerToken {
        let id = WebSocketHandlerToken.nextID()
        storage.withLockedValue { $0.append((id, handler)) }
        return WebSocketHandlerToken(id: id) { [weak self] id in self?.remove(id) }
    }

    func remove(_ id: UInt64) {
        storage.withLockedValue { $0.removeAll { $0.0 == id } }
    }

    var isEmpty: Bool { storage.withLockedValue { $0.isEmpty } }

    /// Calls every handler with `argument`; returns whether there was any.
    @discardableResult
    func emit(_ argument: Argument) -> Bool {
        let handlers = storage.withLockedValue { $0 }
        for (_, handler) in handlers { handler(argument) }
        return !handlers.isEmpty
    }

    /// Removes every handler and returns them, in registration order.
    func takeAll() -> [Handler] {
        storage.withLockedValue { handlers in
            defer { handlers.removeAll() }
            return handlers.map(\.1)
        }
    }

    func removeAll() {
        storage.withLockedValue { $0.removeAll() }
    }
}

/// The handler lists of one connection's seven events, as a value kept in the connection's
/// locked state: one object and one lock per connection for these and the rest of its shared
/// state (seven lists with a lock each were about 0.7 KiB per idle connection; a separate
/// object with its own lock, another 0.1 KiB and a second lock taken for every message).
/// Handler ids are unique in the process (``WebSocketHandlerToken/nextID()``), so a token
/// removes by id alone.
struct WebSocketConnectionHandlers {
    typealias List<Argument> = [(id: UInt64, handler: @Sendable (Argument) -> Void)]

    var message: List<WebSocketMessage> = []
    var frame: List<WebSocketFrame> = []
    var close: List<(Int, String)> = []
    var error: List<any Error> = []
    var ping: List<(WebSocketPingCancel, ByteBuffer)> = []
    var pong: List<ByteBuffer> = []
    var drain: List<Void> = []

    /// Appends `handler` to `list`; returns its id.
    mutating func add<Argument>(
        _ list: WritableKeyPath<WebSocketConnectionHandlers, List<Argument>>,
        _ handler: @escaping @Sendable (Argument) -> Void
    ) -> UInt64 {
        let id = WebSocketHandlerToken.nextID()
        self[keyPath: list].append((id, handler))
        return id
    }

    mutating func remove(_ id: UInt64) {
        message.removeAll { $0.id == id }
        frame.removeAll { $0.id == id }
        close.removeAll { $0.id == id }
        error.removeAll { $0.id == id }
        ping.removeAll { $0.id == id }
        pong.removeAll { $0.id == id }
        drain.removeAll { $0.id == id }
    }

    /// Whether nobody listens for messages or frames.
    var hasNoDataListener: Bool { message.isEmpty && frame.isEmpty }

    /// Drops every handler (the connection closed: nothing will be emitted any more).
    mutating func removeAll() {
        self = WebSocketConnectionHandlers()
    }
}
