import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import Testing

@testable import WebSocket

private typealias Policy = WebSocketClient.ReconnectPolicy

private let refused = WebSocketError(.connectionRefused, "Connection refused by 127.0.0.1:1 (nothing listens there?)")

/// ``WebSocketReconnection``'s timers on virtual time, with attempts that fail at once: the
/// delays are exact, nothing happens a nanosecond early.
@Suite("Reconnection on virtual time")
struct ReconnectionVirtualTimeTests {
    private let tick = TimeAmount.nanoseconds(1)

    /// A reconnection on `loop` whose attempts are refused at once, each recorded with its
    /// virtual time, and the client's events.
    private func makeReconnection(
        _ loop: NIOAsyncTestingEventLoop, policy: Policy, initialPhase: WebSocketReconnectStateMachine.Phase = .connected
    ) -> (WebSocketClient, WebSocketReconnection, Collected<(String, Int64)>, Collected<WebSocketClient.ReconnectAttempt>, Collected<WebSocketError>) {
        let client = WebSocketClient(eventLoopGroup: loop)
        let attempts = Collected<(String, Int64)>()
        let reconnecting = Collected<WebSocketClient.ReconnectAttempt>()
        let failures = Collected<WebSocketError>()
        client.onReconnecting { reconnecting.append($0) }
        client.onConnectFailed { failures.append($0) }
        let reconnection = WebSocketReconnection(
            client: client, policy: policy, url: "ws://a/", eventLoop: loop, initialPhase: initialPhase, random: { 0.5 }
        ) {
            url, eventLoop in
            attempts.append((url, eventLoop.now.uptimeNanoseconds.toInt64))
            let promise = eventLoop.makePromise(of: WebSocketConnection.self)
            promise.fail(refused)
            return promise
        }
        return (client, reconnection, attempts, reconnecting, failures)
    }

    @Test("attempts at exactly the jittered delays, to the URLs in turn, then connectFailed(.reconnectFailed) after maxAttempts")
    func scheduleAndGiveUp() async throws {
        let loop = NIOAsyncTestingEventLoop()
        let policy = Policy(urls: ["ws://b/"], initialDelay: .seconds(1), maxDelay: .seconds(3), multiplier: 2, jitter: 0.5, maxAttempts: 3)
        let (client, reconnection, attempts, reconnecting, failures) = makeReconnection(loop, policy: policy)
        try await loop.executeInContext { reconnection.closed(code: 1006, description: "", byApplication: false) }
        // random 0.5, jitter 0.5: each delay is 3/4 of 1 s, 2 s, 3 s (capped).
        #expect(reconnecting.all.map(\.delay) == [.milliseconds(750)])
        await loop.advanceTime(by: .milliseconds(750) - tick)
        #expect(attempts.all.isEmpty)
        await loop.advanceTime(by: tick)
        #expect(attempts.all.map(\.0) == ["ws://b/"])
        #expect(reconnecting.all.map(\.delay) == [.milliseconds(750), .milliseconds(1500)])
        await loop.advanceTime(by: .milliseconds(1500) - tick)
        #expect(attempts.all.count == 1)
        await loop.advanceTime(by: tick)
        #expect(attempts.all.map(\.0) == ["ws://b/", "ws://a/"])
        #expect(reconnecting.all.last == .init(number: 3, delay: .milliseconds(2250), url: "ws://b/", cause: .failed(refused)))
        #expect(failures.all.isEmpty)
        await loop.advanceTime(by: .milliseconds(2250))
        #expect(attempts.all.map(\.1) == [750, 2250, 4500].map { Int64($0) * 1_000_000 })
        #expect(failures.all.map(\.code) == [.reconnectFailed])
        #expect(reconnection.phase == .stopped)
        #expect(client.reconnections.withLockedValue { $0.isEmpty })
        await loop.advanceTime(by: .seconds(60))
        #expect(attempts.all.count == 3 && reconnecting.all.count == 3)
        await loop.shutdownGracefully()
    }

    @Test("a refused first connection is retried at the jittered delays, to the next URL, then given up with connectFailed(.reconnectFailed)")
    func firstConnectionRetried() async throws {
        let loop = NIOAsyncTestingEventLoop()
        let policy = Policy(urls: ["ws://b/"], initialDelay: .seconds(1), maxDelay: .seconds(3), multiplier: 2, jitter: 0.5, maxAttempts: 2)
        let (client, reconnection, attempts, reconnecting, failures) = makeReconnection(loop, policy: policy, initialPhase: .connecting)
        try await loop.executeInContext { reconnection.begin() }
        #expect(attempts.all.map(\.0) == ["ws://a/"])
        #expect(reconnecting.all == [.init(number: 1, delay: .milliseconds(750), url: "ws://b/", cause: .failed(refused))])
        #expect(failures.all.isEmpty, "a first attempt that is retried is no connectFailed")
        await loop.advanceTime(by: .milliseconds(750) - tick)
        #expect(attempts.all.count == 1)
        await loop.advanceTime(by: tick)
        #expect(attempts.all.map(\.0) == ["ws://a/", "ws://b/"])
        #expect(reconnecting.all.last == .init(number: 2, delay: .milliseconds(1500), url: "ws://a/", cause: .failed(refused)))
        await loop.advanceTime(by: .milliseconds(1500))
        #expect(attempts.all.map(\.1) == [0, 750, 2250].map { Int64($0) * 1_000_000 })
        #expect(failures.all.map(\.code) == [.reconnectFailed])
        #expect(failures.all.first?.message.contains("Gave up connecting after the first attempt and 2 failed retries") == true)
        #expect(reconnection.phase == .stopped)
        #expect(client.reconnections.withLockedValue { $0.isEmpty })
        await loop.shutdownGracefully()
    }

    @Test("retriesFirstConnection: false: the first attempt's error is connectFailed as is, no event, no timer")
    func firstConnectionNotRetried() async throws {
        let loop = NIOAsyncTestingEventLoop()
        let (client, reconnection, attempts, reconnecting, failures) = makeReconnection(
            loop, policy: Policy(retriesFirstConnection: false), initialPhase: .connecting)
        try await loop.executeInContext { reconnection.begin() }
        await loop.advanceTime(by: .seconds(120))
        #expect(attempts.all.count == 1 && reconnecting.all.isEmpty)
        #expect(failures.all == [refused])
        #expect(client.reconnections.withLockedValue { $0.isEmpty })
        await loop.shutdownGracefully()
    }

    @Test("stopReconnecting() during the wait: the timer never fires, no event")
    func stopDuringWait() async throws {
        let loop = NIOAsyncTestingEventLoop()
        let (client, reconnection, attempts, reconnecting, failures) = makeReconnection(loop, policy: Policy(initialDelay: .seconds(1)))
        try await loop.executeInContext { reconnection.closed(code: 1006, description: "", byApplication: false) }
        #expect(reconnecting.all.count == 1)
        client.stopReconnecting()
        await loop.advanceTime(by: .seconds(120))
        #expect(attempts.all.isEmpty)
        #expect(failures.all.isEmpty)
        #expect(reconnection.phase == .stopped)
        #expect(client.reconnections.withLockedValue { $0.isEmpty })
        await loop.shutdownGracefully()
    }

    @Test("abort() during the wait ends the reconnection with connectFailed(.aborted)")
    func abortDuringWait() async throws {
        let loop = NIOAsyncTestingEventLoop()
        let (client, reconnection, attempts, _, failures) = makeReconnection(loop, policy: Policy(initialDelay: .seconds(1)))
        try await loop.executeInContext { reconnection.closed(code: 1001, description: "", byApplication: false) }
        client.abort()
        await loop.advanceTime(by: .seconds(120))
        #expect(attempts.all.isEmpty)
        #expect(failures.all.map(\.code) == [.aborted])
        #expect(client.reconnections.withLockedValue { $0.isEmpty })
        await loop.shutdownGracefully()
    }

    @Test("the application's close: no attempt, no event")
    func applicationClose() async throws {
        let loop = NIOAsyncTestingEventLoop()
        let (client, reconnection, attempts, reconnecting, failures) = makeReconnection(loop, policy: Policy())
        try await loop.executeInContext { reconnection.closed(code: 1006, description: "", byApplication: true) }
        await loop.advanceTime(by: .seconds(120))
        #expect(attempts.all.isEmpty && reconnecting.all.isEmpty && failures.all.isEmpty)
        #expect(client.reconnections.withLockedValue { $0.isEmpty })
        await loop.shutdownGracefully()
    }
}

extension UInt64 {
    fileprivate var toInt64: Int64 { Int64(self) }
}
