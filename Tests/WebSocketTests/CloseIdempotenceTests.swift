import NIOCore
import Testing

@testable import WebSocket

/// `close()` and `drop()` on a connection that is closed already, or closing: no error, no
/// second `close` event, the first close code and description kept.
///
/// "Nothing happened" is checked without waiting for a while: `close()` and `drop()` do their
/// work in a task on the connection's event loop, and events fire on that loop, so once a task
/// submitted after them has run, anything they caused has happened.
@Suite("close() and drop() after the close")
struct CloseIdempotenceTests {
    /// Runs an empty task on `connection`'s event loop after everything queued there before.
    static func barrier(_ connection: WebSocketConnection) async throws {
        try await connection.socket.eventLoop.submit {}.get()
    }

    /// Every `close` event of `connection`, from now on.
    static func closeEvents(_ connection: WebSocketConnection) -> Collected<CloseEvent> {
        let events = Collected<CloseEvent>()
        connection.onClose { events.append(CloseEvent(code: $0, description: $1)) }
        return events
    }

    /// Waits (bounded) until `events` has one close event, and returns it.
    static func firstClose(_ events: Collected<CloseEvent>, _ what: String) async throws -> CloseEvent {
        try await withTimeout(10, what) {
            while events.all.isEmpty { try await Task.sleep(for: .milliseconds(5)) }
            return events.all[0]
        }
    }

    /// A server, our client connected to it, and the server's end of that connection.
    static func connectedPair() async throws -> (TestServer, client: WebSocketConnection, server: WebSocketConnection) {
        let (server, accepted) = try await WebSocketConnectionTests.serverWithConnections()
        let client = try await WebSocketClient().connect(url: server.url)
        return (server, client, try await accepted.value())
    }

    /// Calls every form of `close()` and `drop()` on `connection`; none may throw.
    static func closeAndDropAgain(_ connection: WebSocketConnection) throws {
        try connection.close()
        try connection.close(reasonCode: 4001, description: "second")
        try connection.close(reasonCode: WebSocketCloseReason.goingAway)
        connection.drop()
        connection.drop(reasonCode: WebSocketCloseReason.internalServerError, description: "second drop")
        connection.drop(skipCloseFrame: true)
    }

    @Test("after a normal close handshake, both ends: no throw, no second close event, first code kept")
    func afterCloseHandshake() async throws {
        let (server, client, serverSide) = try await Self.connectedPair()
        defer { Task { await server.stop() } }
        let clientEvents = Self.closeEvents(client)
        let serverEvents = Self.closeEvents(serverSide)

        try client.close(reasonCode: 4000, description: "first")
        let expected = CloseEvent(code: 4000, description: "first")
        #expect(try await Self.firstClose(clientEvents, "the client's close event") == expected)
        #expect(try await Self.firstClose(serverEvents, "the server's close event") == expected)

        for connection in [client, serverSide] {
            try Self.closeAndDropAgain(connection)
            try await Self.barrier(connection)
            #expect(connection.closeReasonCode == 4000)
            #expect(connection.closeDescription == "first")
            #expect(!connection.connected)
        }
        #expect(clientEvents.all == [expected])
        #expect(serverEvents.all == [expected])
    }

    @Test("after an abnormal end (1006, no close frame): no throw, no second close event, 1006 kept")
    func afterAbnormalEnd() async throws {
        let (server, client, serverSide) = try await Self.connectedPair()
        defer { Task { await server.stop() } }
        let clientEvents = Self.closeEvents(client)
        let serverEvents = Self.closeEvents(serverSide)

        serverSide.drop(reasonCode: 4002, description: "gone", skipCloseFrame: true)
        let clientClose = try await Self.firstClose(clientEvents, "the client's close event")
        #expect(clientClose.code == WebSocketCloseReason.abnormal)
        // The end that dropped keeps the code it was given, though it went out on no frame.
        #expect(try await Self.firstClose(serverEvents, "the server's close event") == CloseEvent(code: 4002, description: "gone"))

        for connection in [client, serverSide] {
            try Self.closeAndDropAgain(connection)
            try await Self.barrier(connection)
        }
        #expect(client.closeReasonCode == WebSocketCloseReason.abnormal)
        #expect(client.closeDescription == clientClose.description)
        #expect(serverSide.closeReasonCode == 4002 && serverSide.closeDescription == "gone")
        #expect(clientEvents.all == [clientClose])
        #expect(serverEvents.all == [CloseEvent(code: 4002, description: "gone")])
    }

    @Test("close() while closing changes nothing; drop() while closing ends the wait at once, first code kept")
    func whileClosing() async throws {
        // A peer that never answers the close frame; a close timeout far beyond the test's
        // bounds, so that only drop() can end the wait in time.
        let (server, accepted) = try await WebSocketConnectionTests.serverWithConnections { $0.closeTimeout = .seconds(120) }
        defer { Task { await server.stop() } }
        let raw = try await RawClient.connected(port: server.port)
        let serverSide = try await accepted.value()
        let events = Self.closeEvents(serverSide)

        try serverSide.close(reasonCode: 4000, description: "first")
        #expect(try await raw.readCloseCode() == 4000)
        try serverSide.close(reasonCode: 4001, description: "second")
        try await Self.barrier(serverSide)
        #expect(serverSide.closeReasonCode == 4000 && serverSide.closeDescription == "first")
        #expect(!serverSide.connected)
        #expect(events.all.isEmpty)  // still waiting for the peer's close frame

        serverSide.drop(reasonCode: WebSocketCloseReason.internalServerError, description: "second drop")
        try await raw.waitForEOF()
        // No second close frame went out: the socket just closed.
        #expect(try await raw.readFrame() == nil)
        #expect(try await Self.firstClose(events, "the server's close event") == CloseEvent(code: 4000, description: "first"))

        try Self.closeAndDropAgain(serverSide)
        try await Self.barrier(serverSide)
        #expect(events.all == [CloseEvent(code: 4000, description: "first")])
    }

    @Test("on a closed connection close() still checks its arguments: an invalid code throws")
    func invalidArgumentsStillThrow() async throws {
        let (server, client, _) = try await Self.connectedPair()
        defer { Task { await server.stop() } }
        let events = Self.closeEvents(client)
        try client.close()
        _ = try await Self.firstClose(events, "the client's close event")
        #expect(throws: WebSocketError.self) { try client.close(reasonCode: 1005) }
        #expect(throws: WebSocketError.self) { try client.close(description: String(repeating: "x", count: 124)) }
        try await Self.barrier(client)
        #expect(client.closeReasonCode == WebSocketCloseReason.normal)
        #expect(events.all.count == 1)
    }
}
