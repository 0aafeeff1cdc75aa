import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import WebSocket

/// Misuse of the public API and the defects of issue 17, item 1: each test fails without its fix
/// (a crash of the whole test process for the first one).
@Suite("Misuse of the public API")
struct MisuseTests {
    @Test("a second iteration of connection.messages throws alreadyIterating; the first goes on")
    func secondMessagesIterator() async throws {
        let server = try await TestServer.echo()
        defer { Task { await server.stop() } }
        let connection = try await WebSocketClient().connect(url: server.url)
        let claimed = Expectation<Void>()
        let first = Task {
            var iterator = connection.messages.makeAsyncIterator()
            claimed.fulfill(())
            return try await iterator.next()
        }
        try await claimed.value(5, "first iterator")
        var second = connection.messages.makeAsyncIterator()  // NIO's producer would trap here
        await #expect {
            _ = try await second.next()
        } throws: { error in
            (error as? WebSocketError)?.code == .alreadyIterating
        }
        // A third, through the same sequence value, after the first started: refused as well.
        let sequence = connection.messages
        await #expect(throws: WebSocketError.self) {
            for try await _ in sequence {}
        }
        try await connection.write("still works")
        let message = try await withTimeout(5, "echo") { try await first.value }
        #expect(message == .utf8("still works"))
        try connection.close()
    }

    @Test("handlers registered after the close get the waiting messages on the event loop")
    func lateHandlerRunsOnEventLoop() async throws {
        let server = try await TestServer.start(setup: { server in
            server.onRequest { request in
                guard let connection = try? request.accept() else { return }
                connection.sendUTF("one")
                connection.sendUTF("two")
                try? connection.close()
            }
        })
        defer { Task { await server.stop() } }
        let connection = try await WebSocketClient().connect(url: server.url)
        let closed = Expectation<Int>()
        connection.onClose { code, _ in closed.fulfill(code) }
        #expect(try await closed.value(5, "close") == 1000)

        let delivered = Expectation<(String, Bool)>()
        connection.onMessage { message in
            delivered.fulfill((message.utf8Data ?? "", connection.socket.eventLoop.inEventLoop))
        }
        let (first, firstOnLoop) = try await delivered.value(5, "first waiting message")
        let (second, secondOnLoop) = try await delivered.value(5, "second waiting message")
        #expect([first, second] == ["one", "two"])
        #expect(firstOnLoop && secondOnLoop, "message handlers must run on the connection's event loop")
    }

    @Test("handler tokens of different connections and registries are never equal")
    func tokensAreUnique() async throws {
        let server = try await TestServer.echo()
        defer { Task { await server.stop() } }
        let client = WebSocketClient()
        let a = try await client.connect(url: server.url)
        let b = try await client.connect(url: server.url)
        let tokenA = a.onMessage { _ in }
        let tokenB = b.onMessage { _ in }
        #expect(tokenA != tokenB)
        #expect(Set([tokenA, tokenB, client.onConnect { _ in }, server.server.onConnect { _ in }]).count == 4)
        // Removing b's handler through its token leaves a's alone.
        b.removeHandler(tokenB)
        let echoed = Expectation<String>()
        a.onMessage { echoed.fulfill($0.utf8Data ?? "") }
        try await a.write("a")
        #expect(try await echoed.value(5) == "a")
        try a.close()
        try b.close()
    }

    @Test("write buffer watermarks are checked with a thrown error, not a precondition")
    func watermarks() throws {
        #expect(throws: WebSocketError.self) { try WebSocketWriteBufferWaterMark(low: 10, high: 5) }
        #expect(throws: WebSocketError.self) { try WebSocketWriteBufferWaterMark(low: -1, high: 5) }
        let marks = try WebSocketWriteBufferWaterMark(low: 5, high: 5)
        #expect(marks.low == 5 && marks.high == 5)
        #expect(WebSocketWriteBufferWaterMark() == (try WebSocketWriteBufferWaterMark(low: 32 * 1024, high: 64 * 1024)))
    }

    @Test("close descriptions are cut at the last whole character within 123 bytes")
    func truncatedDescription() {
        let accents = String(repeating: "é", count: 100)  // 200 bytes
        #expect(WebSocketCloseReason.truncatedDescription(accents) == String(repeating: "é", count: 61))
        let emoji = String(repeating: "a", count: 121) + "😀"  // 125 bytes, the emoji across the cut
        #expect(WebSocketCloseReason.truncatedDescription(emoji) == String(repeating: "a", count: 121))
        #expect(WebSocketCloseReason.truncatedDescription("short") == "short")
        let family = "👨‍👩‍👧" + String(repeating: "b", count: 120)  // a grapheme of 18 bytes first
        #expect(WebSocketCloseReason.truncatedDescription(family) == "👨‍👩‍👧" + String(repeating: "b", count: 105))
    }

    @Test("a long multi-byte drop description reaches the peer cut, not empty")
    func dropDescriptionOnTheWire() async throws {
        let long = String(repeating: "é", count: 100)
        let server = try await TestServer.start(setup: { server in
            server.onRequest { request in
                guard let connection = try? request.accept() else { return }
                connection.onMessage { _ in connection.drop(reasonCode: 1008, description: long) }
            }
        })
        defer { Task { await server.stop() } }
        let connection = try await WebSocketClient().connect(url: server.url)
        let closed = Expectation<(Int, String)>()
        connection.onClose { closed.fulfill(($0, $1)) }
        connection.sendUTF("drop me")
        let (code, description) = try await closed.value(5, "close")
        #expect(code == 1008)
        #expect(description == String(repeating: "é", count: 61))
    }

    @Test("durations too long to schedule mean 'never' instead of overflowing")
    func hugeDurations() async throws {
        let server = try await TestServer.echo {
            $0.keepaliveInterval = .seconds(Int64.max)
            $0.keepaliveGracePeriod = .seconds(Int64.max)
            $0.closeTimeout = .seconds(Int64.max / 2)
        }
        defer { Task { await server.stop() } }
        #expect(TimeAmount(scheduling: Duration.seconds(Int64.max)) == TimeAmount.longest)
        #expect(TimeAmount(scheduling: Duration.seconds(-5)) == .zero)
        #expect(TimeAmount(scheduling: Duration.milliseconds(1500)) == .milliseconds(1500))
        let connection = try await WebSocketClient().connect(url: server.url)
        let echoed = Expectation<String>()
        connection.onMessage { echoed.fulfill($0.utf8Data ?? "") }
        try await connection.write("alive")
        #expect(try await echoed.value(5) == "alive")
        try connection.close()
    }
}
