import NIOConcurrencyHelpers

/// A request's place under ``WebSocketServer/Configuration/maxConnections`` while it is being
/// decided: handshakes in progress count against the cap, so a flood of upgrade requests that
/// nobody decides cannot pass it. Released once, when the request is decided (an accepted one
/// is counted as a connection then), when its client goes away, or at the latest when the
/// request is freed.
final class WebSocketConnectionSlot: Sendable {
    /// The outcome of asking for a place.
    enum Reservation {
        /// The cap is reached: answer 503.
        case refused
        /// Go on; the slot to release (nil when there is no cap).
        case admitted(WebSocketConnectionSlot?)
    }

    private let server: WebSocketServer
    private let released = NIOLockedValueBox(false)

    init(server: WebSocketServer) {
        self.server = server
    }

    /// Gives the place back (once; later calls do nothing).
    func release() {
        let first = released.withLockedValue { released -> Bool in
            defer { released = true }
            return !released
        }
        if first { server.releaseConnectionSlot() }
    }

    deinit {
        release()
    }
}
