import Foundation
import NIOCore
import Testing

@testable import WebSocket

// Our client against a Python `websockets` (17.x) server, Tests/Interop/python_server_for_client.py,
// over 127.0.0.1. The interpreter is found as in InteropTests; the process is killed by PID.

/// A client configuration whose closeTimeout (30 s) is far above any close these tests allow
/// (10 s), so a close that waited for it is told apart from a slow machine.
private func patientConfiguration() -> WebSocketClient.Configuration {
    var configuration = WebSocketClient.Configuration()
    configuration.closeTimeout = .seconds(30)
    return configuration
}

/// Closes `connection` with `code` and `description`; checks our onClose and the python
/// server's report of a clean handshake that it received `code` in.
private func closeAndCheck(
    _ connection: WebSocketConnection, _ peer: PeerProcess, code: Int, description: String?, expectedDescription: String? = nil
) async throws {
    let closed = Expectation<CloseEvent>()
    connection.onClose { closed.fulfill(CloseEvent(code: $0, description: $1)) }
    let started = ContinuousClock.now
    try connection.close(reasonCode: code, description: description)
    let event = try await closed.value(15, "our close event")
    let wireDescription = expectedDescription ?? description ?? ""
    #expect(event == CloseEvent(code: code, description: wireDescription))
    #expect(ContinuousClock.now - started < .seconds(10), "the close handshake did not complete: we waited for closeTimeout")
    let report = try await peer.jsonLine(10, "the python server's close report") { $0["event"] as? String == "closed" }
    #expect(report["code"] as? Int == code)
    #expect(report["reason"] as? String == wireDescription)
    #expect(Interop.closeFrame(report["close_rcvd"]) == CloseEvent(code: code, description: wireDescription))
    #expect(Interop.closeFrame(report["close_sent"])?.code == code)
    #expect(report["close_rcvd_then_sent"] as? Bool == true)
}

/// Starts the python server, connects our client, runs `body`, kills the server.
private func withPythonPeer(
    arguments: [String] = [], protocols: [String] = [],
    configuration: WebSocketClient.Configuration = patientConfiguration(),
    _ body: (PeerProcess, WebSocketConnection, Expectation<WebSocketMessage>) async throws -> Void
) async throws {
    let peer = try PeerProcess(
        name: "python server for the client", executable: try Interop.python(),
        arguments: ["-u", Interop.script("python_server_for_client.py")] + arguments)
    defer { peer.killByPID() }
    let portLine = try await peer.line(30, "the python server's port") { $0.hasPrefix("PORT ") }
    guard let port = Int(portLine.dropFirst("PORT ".count)) else {
        throw InteropError("python server printed a bad port line: \(portLine)")
    }
    let client = WebSocketClient(configuration: configuration)
    let connection = try await withTimeout(15, "connecting to the python server") {
        try await client.connect(url: "ws://127.0.0.1:\(port)/client-interop", protocols: protocols)
    }
    defer { if connection.connected { connection.drop(reasonCode: 1001, skipCloseFrame: true) } }
    let inbox = Expectation<WebSocketMessage>()
    connection.onMessage { inbox.fulfill($0) }
    try await body(peer, connection, inbox)
}

/// `size` bytes of the pattern the python script sends (i % 251).
private func pattern(_ size: Int) -> [UInt8] { (0..<size).map { UInt8($0 % 251) } }

private func bigLimits() -> WebSocketClient.Configuration {
    var configuration = patientConfiguration()
    configuration.maxReceivedFrameSize = 8 << 20
    configuration.maxReceivedMessageSize = 8 << 20
    return configuration
}

@Suite("WebSocketClient against a Python websockets server")
struct ClientPythonInteropTests {
    @Test("text (emoji, empty, 100 KB) and binary (0 B to 64 KiB) echo; subprotocol")
    func textAndBinary() async throws {
        try await withPythonPeer(arguments: ["--subprotocol", "chat"], protocols: ["chat"]) { peer, connection, inbox in
            #expect(connection.protocol == "chat")
            let connected = try await peer.jsonLine(10, "the connect report") { $0["event"] as? String == "connected" }
            #expect(connected["subprotocol"] as? String == "chat")
            for text in [Interop.text, "", String(repeating: "0123456789", count: 10_000)] {
                try await connection.write(text)
                #expect(try await inbox.value(10, "the text echo").utf8Data == text)
            }
            for size in [0, 125, 126, 65535, 65536] {
                let bytes = pattern(size)
                try await connection.write(ByteBuffer(bytes: bytes))
                let echo = try await inbox.value(10, "the binary echo")
                #expect(echo.binaryData.map { Array($0.readableBytesView) } == bytes)
            }
            try await closeAndCheck(connection, peer, code: 1000, description: "done")
        }
    }

    @Test("5 MiB each way: ours goes out in 16 KiB fragments, python's comes back as one frame")
    func fiveMiB() async throws {
        try await withPythonPeer(configuration: bigLimits()) { peer, connection, inbox in
            let bytes = pattern(5 << 20)
            try await connection.write(ByteBuffer(bytes: bytes))
            let echo = try await inbox.value(30, "the 5 MiB echo")
            #expect(echo.binaryData?.readableBytes == 5 << 20)
            #expect(echo.binaryData == ByteBuffer(bytes: bytes))
            try await connection.write("cmd:big:\(5 << 20)")
            #expect(try await inbox.value(30, "python's 5 MiB message").binaryData == ByteBuffer(bytes: bytes))
            try await closeAndCheck(connection, peer, code: 1000, description: "done")
        }
    }

    @Test("a frame over maxReceivedFrameSize (default 1 MiB) closes with 1009")
    func frameTooBig() async throws {
        try await withPythonPeer { peer, connection, _ in
            let closed = Expectation<CloseEvent>()
            connection.onClose { closed.fulfill(CloseEvent(code: $0, description: $1)) }
            try await connection.write("cmd:big:\((1 << 20) + 1)")
            #expect(try await closed.value(10, "our close event").code == 1009)
            let report = try await peer.jsonLine(10, "the close report") { $0["event"] as? String == "closed" }
            #expect(report["code"] as? Int == 1009)
        }
    }

    @Test("fragmented messages both ways are assembled")
    func fragmented() async throws {
        var configuration = patientConfiguration()
        configuration.fragmentationThreshold = 1000
        try await withPythonPeer(configuration: configuration) { peer, connection, inbox in
            let text = String(repeating: "fragmenté 🧩 ", count: 1000)
            try await connection.write(text)
            #expect(try await inbox.value(10, "the echo of our fragmented text").utf8Data == text)
            try await connection.write("cmd:fragments:10:\(Interop.text)")
            #expect(try await inbox.value(10, "python's fragmented text").utf8Data == Interop.text)
            try await connection.write("cmd:binfragments:7:100000")
            #expect(try await inbox.value(10, "python's fragmented binary").binaryData == ByteBuffer(bytes: pattern(100_000)))
            try await closeAndCheck(connection, peer, code: 1000, description: "done")
        }
    }

    @Test("ping/pong both ways")
    func pingPong() async throws {
        try await withPythonPeer { peer, connection, inbox in
            let pongs = Expectation<[UInt8]>()
            connection.onPong { pongs.fulfill(Array($0.readableBytesView)) }
            try connection.ping("from swift ✓")
            #expect(try await pongs.value(10, "the pong") == Array("from swift ✓".utf8))
            let pings = Expectation<[UInt8]>()
            connection.onPing { _, data in pings.fulfill(Array(data.readableBytesView)) }
            try await connection.write("cmd:ping:from python")
            #expect(try await pings.value(10, "python's ping") == Array("from python".utf8))
            #expect(try await inbox.value(10, "python's pong report").utf8Data == "pong-ok:from python")
            try await closeAndCheck(connection, peer, code: 1000, description: "done")
        }
    }

    @Test("our close: default code and 4000 with a reason; python sees a clean handshake")
    func clientCloses() async throws {
        try await withPythonPeer { peer, connection, _ in
            try await closeAndCheck(connection, peer, code: 1000, description: nil, expectedDescription: "Normal connection closure")
        }
        try await withPythonPeer { peer, connection, _ in
            try await closeAndCheck(connection, peer, code: 4000, description: "client bye")
        }
    }

    @Test("our drop: python sees the code, no handshake wait")
    func clientDrops() async throws {
        try await withPythonPeer { peer, connection, inbox in
            try await connection.write("x")
            _ = try await inbox.value(10, "the echo")
            connection.drop(reasonCode: 1008, description: "policy")
            let report = try await peer.jsonLine(10, "the close report") { $0["event"] as? String == "closed" }
            #expect(report["code"] as? Int == 1008)
            #expect(report["reason"] as? String == "policy")
        }
    }

    @Test(
        "python closes: with a code and reason, with an empty close frame (1005), by dropping TCP (1006)",
        arguments: [
            ("cmd:close:4002:server bye", 4002, "server bye"),
            ("cmd:closeempty", 1005, nil),
            ("cmd:drop", 1006, nil),
        ] as [(String, Int, String?)])
    func serverCloses(command: String, code: Int, reason: String?) async throws {
        try await withPythonPeer { peer, connection, _ in
            let closed = Expectation<CloseEvent>()
            connection.onClose { closed.fulfill(CloseEvent(code: $0, description: $1)) }
            let started = ContinuousClock.now
            try await connection.write(command)
            let event = try await closed.value(10, "our close event")
            #expect(event.code == code)
            if let reason { #expect(event.description == reason) }
            #expect(connection.closeReasonCode == code)
            // Python closes TCP after the handshake: we did not wait for closeTimeout (30 s).
            #expect(ContinuousClock.now - started < .seconds(10))
            if code != 1006 {
                let report = try await peer.jsonLine(10, "the close report") { $0["event"] as? String == "closed" }
                #expect(report["close_rcvd_then_sent"] as? Bool == false)
                // Our answer to an empty close frame carries 1000.
                #expect(Interop.closeFrame(report["close_rcvd"])?.code == (code == 1005 ? 1000 : code))
            }
        }
    }

    @Test("permessage-deflate offered by our client and accepted by python: compressed echo")
    func deflate() async throws {
        var configuration = bigLimits()
        configuration.perMessageDeflate = PerMessageDeflate.Options()
        try await withPythonPeer(arguments: ["--compression"], configuration: configuration) { peer, connection, inbox in
            #expect(connection.extensions.map(\.name) == ["permessage-deflate"])
            let connected = try await peer.jsonLine(10, "the connect report") { $0["event"] as? String == "connected" }
            #expect((connected["offered"] as? String)?.hasPrefix("permessage-deflate") == true)
            #expect((connected["extensions"] as? String)?.hasPrefix("permessage-deflate") == true)
            let text = String(repeating: "compress me, please ", count: 50_000)
            try await connection.write(text)
            #expect(try await inbox.value(10, "the compressed echo").utf8Data == text)
            try await connection.write("cmd:binfragments:3:300000")
            #expect(try await inbox.value(10, "python's fragmented compressed binary").binaryData == ByteBuffer(bytes: pattern(300_000)))
            try await closeAndCheck(connection, peer, code: 1000, description: "done")
        }
        // Offered but not accepted: the connection goes on without it.
        try await withPythonPeer(configuration: configuration) { peer, connection, inbox in
            #expect(connection.extensions.isEmpty)
            try await connection.write("plain")
            #expect(try await inbox.value(10, "the echo").utf8Data == "plain")
        }
    }
}
