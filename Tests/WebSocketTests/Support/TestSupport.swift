import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import WebSocket

/// A failure of a bounded wait in a test.
struct TestTimeout: Error, CustomStringConvertible {
    var what: String
    var description: String { "timed out waiting for \(what)" }
}

/// Runs `body`, failing with ``TestTimeout`` after `seconds`. Every wait in these tests is bounded.
func withTimeout<T: Sendable>(
    _ seconds: Double, _ what: String = "operation", _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
            throw TestTimeout(what: what)
        }
        let result = try await group.next()!
        group.cancelAll()
        return result
    }
}

/// Values that callbacks deliver and a test awaits in order, each wait bounded.
final class Expectation<Value: Sendable>: Sendable {
    private let queue = NIOLockedValueBox<[Value]>([])

    init() {}

    func fulfill(_ value: Value) { queue.withLockedValue { $0.append(value) } }

    /// The next value delivered (in order), waiting at most `seconds`.
    func value(_ seconds: Double = 10, _ what: String = "event") async throws -> Value {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while true {
            if let value = queue.withLockedValue({ $0.isEmpty ? nil : $0.removeFirst() }) { return value }
            guard ContinuousClock.now < deadline else { throw TestTimeout(what: what) }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    /// The values delivered so far, without waiting (after a ``barrier(_:)``: to check that
    /// something did not happen, or happened only once).
    func pending() -> [Value] {
        queue.withLockedValue { values in
            defer { values.removeAll() }
            return values
        }
    }

    /// Every value delivered within the next `seconds` (to check that something did not happen
    /// where no event tells when it would have).
    func values(during seconds: Double) async -> [Value] {
        try? await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
        return queue.withLockedValue { values in
            defer { values.removeAll() }
            return values
        }
    }
}

/// Waits (at most `seconds`) until `condition` holds: for an event that has no callback.
func waitUntil(_ seconds: Double = 10, _ what: String, _ condition: @escaping @Sendable () -> Bool) async throws {
    try await withTimeout(seconds, what) {
        while !condition() { try await Task.sleep(for: .milliseconds(5)) }
    }
}

/// Runs an empty task on `loop` after everything queued there before it: once it has run,
/// whatever that work caused on the loop (events, writes) has happened. Checks that something
/// did not happen wait for this rather than for a while.
func barrier(_ loop: any EventLoop) async throws {
    try await loop.submit {}.get()
}

/// ``barrier(_:)`` on every loop of NIO's shared group (where the tests' servers and clients
/// run), twice: work one loop hands to another is done too.
func barrierAllLoops() async throws {
    for _ in 0..<2 {
        for loop in MultiThreadedEventLoopGroup.singleton.makeIterator() { try await barrier(loop) }
    }
}

final class Collected<Value: Sendable>: Sendable {
    private let box = NIOLockedValueBox<[Value]>([])
    func append(_ value: Value) { box.withLockedValue { $0.append(value) } }
    var all: [Value] { box.withLockedValue { $0 } }
}

/// A server on 127.0.0.1 with a free port, for one test.
struct TestServer {
    let server: WebSocketServer
    let port: Int
    var url: String { "ws://127.0.0.1:\(port)/" }

    static func start(
        _ configure: (inout WebSocketServer.Configuration) -> Void = { _ in },
        setup: (WebSocketServer) -> Void = { _ in }
    ) async throws -> TestServer {
        var configuration = WebSocketServer.Configuration()
        configure(&configuration)
        let server = WebSocketServer(configuration: configuration)
        setup(server)
        let address = try await server.listen(host: "127.0.0.1", port: 0)
        return TestServer(server: server, port: address.port!)
    }

    /// An echo server accepting every request.
    static func echo(_ configure: (inout WebSocketServer.Configuration) -> Void = { _ in }) async throws -> TestServer {
        try await start(configure) { server in
            server.onRequest { request in
                guard let connection = try? request.accept(protocol: request.requestedProtocols.first, origin: request.origin) else { return }
                connection.onMessage { connection.send($0) }
            }
        }
    }

    func stop() async { await server.shutDown() }
}
