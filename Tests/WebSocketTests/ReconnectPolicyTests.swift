import Foundation
import Testing

@testable import WebSocket

private typealias Policy = WebSocketClient.ReconnectPolicy
private typealias Machine = WebSocketReconnectStateMachine

/// A generator that always returns `value` (for `delay(forAttempt:using:)`).
private struct Constant: RandomNumberGenerator {
    var value: UInt64
    mutating func next() -> UInt64 { value }
}

private let refused = WebSocketError(.connectionRefused, "Connection refused by 127.0.0.1:1 (nothing listens there?)")

@Suite("Reconnect backoff")
struct ReconnectBackoffTests {
    @Test("without jitter: initialDelay × multiplier^(n−1), capped at maxDelay")
    func exponentialWithCap() {
        let policy = Policy(initialDelay: .seconds(1), maxDelay: .seconds(30), multiplier: 2, jitter: 0)
        let delays = (1...8).map { policy.delay(forAttempt: $0, random: 0.7) }
        #expect(delays == [1, 2, 4, 8, 16, 30, 30, 30].map { Duration.seconds($0) })
        // Far attempts overflow the power, never the cap.
        #expect(policy.delay(forAttempt: 5_000, random: 0) == .seconds(30))
        #expect(policy.delay(forAttempt: Int.max, random: 0) == .seconds(30))
    }

    @Test("jitter takes up to its fraction off the delay: random 0 keeps it, 0.5 takes half the fraction, 1 all of it")
    func jitterValues() {
        let policy = Policy(initialDelay: .milliseconds(100), maxDelay: .seconds(1), multiplier: 3, jitter: 0.5)
        #expect(policy.delay(forAttempt: 1, random: 0) == .milliseconds(100))
        #expect(policy.delay(forAttempt: 1, random: 0.5) == .milliseconds(75))
        #expect(policy.delay(forAttempt: 1, random: 1) == .milliseconds(50))
        #expect(policy.delay(forAttempt: 2, random: 0.5) == .milliseconds(225))
        #expect(policy.delay(forAttempt: 3, random: 0.25) == .milliseconds(787) + .microseconds(500))
        // Capped first, then jittered: the cap is never exceeded, and capped delays still spread.
        #expect(policy.delay(forAttempt: 4, random: 0) == .seconds(1))
        #expect(policy.delay(forAttempt: 4, random: 0.5) == .milliseconds(750))
    }

    @Test("with any random number, every delay lies within [cap-or-base × (1 − jitter), cap-or-base]: never over maxDelay")
    func jitterBoundedByCap() {
        let policy = Policy(initialDelay: .milliseconds(250), maxDelay: .seconds(5), multiplier: 2, jitter: 0.3)
        var generator = SystemRandomNumberGenerator()
        for attempt in 1...40 {
            let base = min(0.25 * pow(2, Double(attempt - 1)), 5)
            for _ in 0..<200 {
                let delay = policy.delay(forAttempt: attempt, using: &generator)
                #expect(delay <= .seconds(5))
                #expect(delay <= .nanoseconds(Int64((base * 1e9).rounded())))
                #expect(delay >= .nanoseconds(Int64((base * 0.7 * 1e9).rounded(.down))))
            }
        }
    }

    @Test("the random number comes from the generator passed in")
    func injectedGenerator() {
        let policy = Policy(initialDelay: .seconds(2), maxDelay: .seconds(2), jitter: 1)
        var zero = Constant(value: 0)
        #expect(policy.delay(forAttempt: 1, using: &zero) == .seconds(2))
        // Whatever bits the standard library takes, the delay is that of the number it makes.
        var bits = Constant(value: 0x5555_5555_5555_5555)
        var same = bits
        let random = Double.random(in: 0..<1, using: &same)
        #expect(random > 0.1 && random < 0.9)
        #expect(policy.delay(forAttempt: 1, using: &bits) == policy.delay(forAttempt: 1, random: random))
        #expect(policy.delay(forAttempt: 1, random: random) < .seconds(2))
    }

    @Test("an unusable policy is refused with .invalidArgument naming the option")
    func validation() throws {
        let bad: [(Policy, String)] = [
            (Policy(initialDelay: .seconds(-1)), "initialDelay"),
            (Policy(initialDelay: .seconds(10), maxDelay: .seconds(1)), "maxDelay"),
            (Policy(multiplier: 0.5), "multiplier"),
            (Policy(multiplier: .infinity), "multiplier"),
            (Policy(jitter: 1.5), "jitter"),
            (Policy(maxAttempts: 0), "maxAttempts"),
            (Policy(urls: ["http://example.com/"]), "http://example.com/"),
        ]
        for (policy, name) in bad {
            let error = #expect(throws: WebSocketError.self) { try policy.validate() }
            #expect(error?.code == .invalidArgument)
            #expect(error?.message.contains(name) == true, "\(error?.message ?? "")")
        }
        try Policy(urls: ["ws://127.0.0.1:1/", "wss://example.com/feed"], maxAttempts: 1).validate()
    }

    @Test("by default: 1001, 1006, 1011–1014 and unreachable servers reconnect; 1000, client faults, 4xx, TLS do not")
    func defaultDecisions() {
        let decide = Policy.reconnectsByDefault
        for code in [1001, 1006, 1011, 1012, 1013, 1014] { #expect(decide(.closed(code: code, description: ""))) }
        for code in [1000, 1002, 1003, 1007, 1008, 1009, 1010, 4000] { #expect(!decide(.closed(code: code, description: ""))) }
        for code: WebSocketError.Code in [.connectionRefused, .connectionFailed, .timeout, .dnsFailed, .handshakeFailed] {
            #expect(decide(.failed(WebSocketError(code, ""))))
        }
        for code: WebSocketError.Code in [.tlsFailed, .invalidURL, .invalidArgument, .aborted, .invalidAcceptKey] {
            #expect(!decide(.failed(WebSocketError(code, ""))))
        }
        func refusal(_ status: Int) -> WebSocketClient.ReconnectCause {
            .failed(WebSocketError(.unexpectedStatus, "", response: .init(statusCode: status, statusMessage: "", headers: [:])))
        }
        #expect(decide(refusal(503)) && decide(refusal(502)) && decide(refusal(429)))
        #expect(!decide(refusal(403)) && !decide(refusal(404)))
    }
}

@Suite("Reconnect state machine")
struct ReconnectStateMachineTests {
    private func retry(_ action: Machine.Action) -> WebSocketClient.ReconnectAttempt? {
        if case .retry(let attempt) = action { return attempt }
        return nil
    }

    @Test("a dead node: the next URL first, then round the list, with growing delays; an open connection starts the count again")
    func roundTheList() throws {
        let policy = Policy(urls: ["ws://b/", "ws://a/", "ws://c/"], initialDelay: .seconds(1), jitter: 0)
        var machine = Machine(policy: policy, url: "ws://a/")
        #expect(machine.urls == ["ws://a/", "ws://b/", "ws://c/"])

        let first = try #require(retry(machine.closed(code: 1006, description: "dropped", byApplication: false, random: 0)))
        #expect(first == .init(number: 1, delay: .seconds(1), url: "ws://b/", cause: .closed(code: 1006, description: "dropped")))
        #expect(machine.timerFired() == "ws://b/")
        let second = try #require(retry(machine.attemptFailed(refused, random: 0)))
        #expect(second == .init(number: 2, delay: .seconds(2), url: "ws://c/", cause: .failed(refused)))
        #expect(machine.timerFired() == "ws://c/")
        #expect(try #require(retry(machine.attemptFailed(refused, random: 0))).url == "ws://a/")
        #expect(machine.timerFired() == "ws://a/")
        machine.connected()
        #expect(machine.phase == .connected && machine.attempt == 0)
        let again = try #require(retry(machine.closed(code: 1001, description: "", byApplication: false, random: 0)))
        #expect(again.number == 1 && again.delay == .seconds(1) && again.url == "ws://b/")
    }

    @Test("a normal close, a close code that does not reconnect, and the application's own close stop")
    func closesThatStop() {
        for (code, byApplication) in [(1000, false), (1008, false), (1001, true), (1006, true)] {
            var machine = Machine(policy: Policy(), url: "ws://a/")
            #expect(machine.closed(code: code, description: "", byApplication: byApplication, random: 0) == .stop)
            #expect(machine.phase == .stopped)
            #expect(machine.timerFired() == nil)
        }
    }

    @Test("maxAttempts failed attempts give up with .reconnectFailed naming the count, the URLs and the last error")
    func maxAttempts() throws {
        var machine = Machine(policy: Policy(urls: ["ws://b/"], jitter: 0, maxAttempts: 2), url: "ws://a/")
        _ = machine.closed(code: 1006, description: "", byApplication: false, random: 0)
        _ = machine.timerFired()
        #expect(retry(machine.attemptFailed(refused, random: 0))?.number == 2)
        _ = machine.timerFired()
        guard case .giveUp(let error) = machine.attemptFailed(refused, random: 0) else {
            Issue.record("expected to give up")
            return
        }
        #expect(error.code == .reconnectFailed)
        #expect(error.message.contains("after 2 failed attempts (maxAttempts is 2) to ws://a/, ws://b/"))
        #expect(error.message.contains("Connection refused by 127.0.0.1:1"))
        #expect(machine.phase == .stopped)
    }

    @Test("an attempt failing with an error that does not reconnect gives up at once, keeping the response")
    func errorThatDoesNotReconnect() {
        var machine = Machine(policy: Policy(), url: "ws://a/")
        _ = machine.closed(code: 1012, description: "", byApplication: false, random: 0)
        _ = machine.timerFired()
        let forbidden = WebSocketError(
            .unexpectedStatus, "The server answered 403", response: .init(statusCode: 403, statusMessage: "Forbidden", headers: [:]))
        guard case .giveUp(let error) = machine.attemptFailed(forbidden, random: 0) else {
            Issue.record("expected to give up")
            return
        }
        #expect(error.code == .reconnectFailed)
        #expect(error.message.contains("ws://a/") && error.message.contains("403"))
        #expect(error.response?.statusCode == 403)
    }

    @Test("stopped while waiting: the timer does nothing, a late outcome does nothing; an abort is reported as such")
    func stopAndAbort() {
        var machine = Machine(policy: Policy(), url: "ws://a/")
        _ = machine.closed(code: 1006, description: "", byApplication: false, random: 0)
        #expect(machine.stop() == .waiting)
        #expect(machine.timerFired() == nil)
        #expect(machine.attemptFailed(refused, random: 0) == .stop)

        var aborted = Machine(policy: Policy(), url: "ws://a/")
        _ = aborted.closed(code: 1006, description: "", byApplication: false, random: 0)
        _ = aborted.timerFired()
        let abort = WebSocketError(.aborted, "The connection attempt was aborted")
        #expect(aborted.attemptFailed(abort, random: 0) == .giveUp(abort))
    }

    @Test("retriesFirstConnection off: the first connection is one attempt, its error as is")
    func firstConnectNotRetried() {
        var machine = Machine(policy: Policy(retriesFirstConnection: false), url: "ws://a/", phase: .connecting)
        #expect(machine.attemptFailed(refused, random: 0) == .giveUp(refused))
        #expect(machine.phase == .stopped)
    }

    @Test("the first connection is retried by default: the next URL, growing delays, then connected (no reconnection yet)")
    func firstConnectRetried() throws {
        #expect(Policy().retriesFirstConnection)
        var machine = Machine(policy: Policy(urls: ["ws://b/"], initialDelay: .seconds(1), jitter: 0), url: "ws://a/", phase: .connecting)
        let first = try #require(retry(machine.attemptFailed(refused, random: 0)))
        #expect(first == .init(number: 1, delay: .seconds(1), url: "ws://b/", cause: .failed(refused)))
        #expect(!machine.hasConnected)
        #expect(machine.timerFired() == "ws://b/")
        let second = try #require(retry(machine.attemptFailed(refused, random: 0)))
        #expect(second == .init(number: 2, delay: .seconds(2), url: "ws://a/", cause: .failed(refused)))
        #expect(machine.timerFired() == "ws://a/")
        machine.connected()
        #expect(machine.hasConnected && machine.phase == .connected && machine.attempt == 0)
    }

    @Test("a first connection's error that retrying cannot fix (403, a bad URL, an abort) is reported as is, at once")
    func firstConnectErrorsThatDoNotRetry() {
        let forbidden = WebSocketError(
            .unexpectedStatus, "The server answered 403", response: .init(statusCode: 403, statusMessage: "Forbidden", headers: [:]))
        for error in [forbidden, WebSocketError(.invalidURL, "not a URL"), WebSocketError(.aborted, "aborted")] {
            var machine = Machine(policy: Policy(), url: "ws://a/", phase: .connecting)
            #expect(machine.attemptFailed(error, random: 0) == .giveUp(error))
            #expect(machine.phase == .stopped)
        }
    }

    @Test("the first connection's retries end after maxAttempts with .reconnectFailed saying so")
    func firstConnectGivesUp() throws {
        var machine = Machine(policy: Policy(jitter: 0, maxAttempts: 2), url: "ws://a/", phase: .connecting)
        #expect(retry(machine.attemptFailed(refused, random: 0))?.number == 1)
        _ = machine.timerFired()
        #expect(retry(machine.attemptFailed(refused, random: 0))?.number == 2)
        _ = machine.timerFired()
        guard case .giveUp(let error) = machine.attemptFailed(refused, random: 0) else {
            Issue.record("expected to give up")
            return
        }
        #expect(error.code == .reconnectFailed)
        #expect(error.message.contains("Gave up connecting after the first attempt and 2 failed retries (maxAttempts is 2)"), "\(error.message)")
        #expect(error.message.contains("Connection refused by 127.0.0.1:1"))
    }
}
