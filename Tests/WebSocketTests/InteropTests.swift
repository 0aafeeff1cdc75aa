import Foundation
import NIOConcurrencyHelpers
import NIOCore
import Testing

@testable import WebSocket

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// Interoperability with independent implementations, over real sockets on 127.0.0.1:
//
// - the Python `websockets` package (17.x) as a client of our server and as a server for our
//   client; the interpreter is `$WS_TEST_PYTHON`, else `<package>/.venv/bin/python`
//   (`scripts/test.sh` makes that venv);
// - Node 20's built-in WebSocket client (`node --experimental-websocket`) against our server.
//
// The peers are the scripts in Tests/Interop/. A missing interpreter fails the test (it does
// not skip). Every process started is killed by its PID when the test ends, pass or fail.
// Permessage-deflate is off on the Python side (compression=None) until the library has it.

@Suite("Interop")
struct InteropTests {
    // MARK: Python client → our server

    @Test("python websockets client: text with emoji and CJK, incl. a long fragmented message")
    func pythonClientText() async throws {
        try await Interop.withEchoServer { server in
            let result = try await Interop.runPythonClient(url: server.url, scenario: "text")
            #expect(result["texts"] as? Int == 3)
        }
    }

    @Test("python websockets client: binary echo byte for byte, 0 B to 1 MiB")
    func pythonClientBinary() async throws {
        try await Interop.withEchoServer { server in
            let result = try await Interop.runPythonClient(url: server.url, scenario: "binary")
            #expect((result["sizes"] as? [Int])?.last == 1 << 20)
        }
    }

    @Test("python websockets client: its pings get pongs with the same payload")
    func pythonClientPing() async throws {
        try await Interop.withEchoServer { server in
            let result = try await Interop.runPythonClient(url: server.url, scenario: "ping")
            #expect(result["pongs"] as? Int == 3)
        }
    }

    @Test("python websockets client: subprotocol negotiation")
    func pythonClientSubprotocol() async throws {
        try await Interop.withEchoServer { server in
            let accepted = Expectation<String?>()
            server.server.onConnect { accepted.fulfill($0.protocol) }
            let result = try await Interop.runPythonClient(url: server.url, scenario: "subprotocol")
            #expect(result["subprotocol"] as? String == "chat.v2")
            let serverSide = try await accepted.value(5, "the server's connect event")
            #expect(serverSide == "chat.v2")
        }
    }

    @Test(
        "python websockets client closes; our onClose reports its code and description",
        arguments: [
            CloseCase(code: 1000, reason: "", expectedDescription: WebSocketCloseReason.description(for: 1000)),
            CloseCase(code: 4001, reason: "bye", expectedDescription: "bye"),
        ])
    func pythonClientCloses(_ close: CloseCase) async throws {
        try await Interop.withEchoServer { server in
            let closed = Expectation<CloseEvent>()
            server.server.onClose { _, code, description in closed.fulfill(CloseEvent(code: code, description: description)) }
            let result = try await Interop.runPythonClient(url: server.url, scenario: "close:\(close.code):\(close.reason ?? "")")

            let serverSide = try await closed.value(10, "the server's close event")
            #expect(serverSide == CloseEvent(code: close.code, description: close.expectedDescription))
            // Python sent its close frame first, got ours back, and the server closed TCP
            // promptly (python's close() otherwise waits its close_timeout, 3 s).
            #expect(Interop.closeFrame(result["close_sent"]) == CloseEvent(code: close.code, description: close.reason ?? ""))
            #expect(Interop.closeFrame(result["close_rcvd"])?.code == close.code)
            #expect(result["close_rcvd_then_sent"] as? Bool == false)
            #expect((result["close_seconds"] as? Double ?? 99) < 2.5, "python's close() took \(result["close_seconds"] ?? "?") s")
        }
    }

    // MARK: Our client → Python server

    @Test("our client against a python websockets server: text with emoji and CJK")
    func clientTextWithPythonServer() async throws {
        try await Interop.withPythonServer { peer, connection, inbox in
            for text in [Interop.text, "", String(repeating: Interop.text, count: 3000)] {
                try await connection.write(text)
                let echo = try await inbox.value(10, "the text echo")
                #expect(echo.type == .utf8)
                #expect(echo.utf8Data == text, "text echo of \(text.utf8.count) bytes differs")
            }
            try await Interop.closeAndCheck(connection, peer, code: 1000, description: "done")
        }
    }

    @Test("our client against a python websockets server: binary echo, 0 B to 1 MiB")
    func clientBinaryWithPythonServer() async throws {
        try await Interop.withPythonServer { peer, connection, inbox in
            var generator = SystemRandomNumberGenerator()
            for size in [0, 1, 125, 126, 65535, 65536, 1 << 20] {
                let bytes = (0..<size).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
                connection.sendBytes(bytes)
                let echo = try await inbox.value(15, "the binary echo of \(size) bytes")
                #expect(echo.type == .binary)
                let back = echo.binaryData.map { Array($0.readableBytesView) }
                #expect(back?.count == size)
                #expect(back == bytes, "binary echo of \(size) bytes differs")
            }
            try await Interop.closeAndCheck(connection, peer, code: 1000, description: "done")
        }
    }

    @Test("our client against a python websockets server: connection.ping gets onPong with the same payload")
    func clientPingsPythonServer() async throws {
        try await Interop.withPythonServer { peer, connection, inbox in
            let pongs = Expectation<[UInt8]>()
            connection.onPong { pongs.fulfill(Array($0.readableBytesView)) }
            for payload in [Array("interop-ping 🏓".utf8), [], Array(0..<125)] {
                try connection.ping(ByteBuffer(bytes: payload))
                let pong = try await pongs.value(10, "the pong")
                #expect(pong == payload)
            }
            try await connection.write("after ping")
            #expect(try await inbox.value(10, "the echo after pings").utf8Data == "after ping")
            try await Interop.closeAndCheck(connection, peer, code: 1000, description: "done")
        }
    }

    @Test("our client against a python websockets server: its pings get our automatic pongs")
    func pythonServerPingsClient() async throws {
        // Python pings every 0.2 s and closes with 1011 if a pong is 2 s late.
        try await Interop.withPythonServer(arguments: ["--ping-interval", "0.2"]) { peer, connection, inbox in
            let pings = Expectation<[UInt8]>()
            connection.onPing { _, data in pings.fulfill(Array(data.readableBytesView)) }
            // An explicit ping with a known payload.
            try await connection.write("cmd:ping:from python ✓")
            #expect(try await inbox.value(10, "the python server's pong report").utf8Data == "pong-ok:from python ✓")
            // Keepalive pings for a while; the connection must stay up.
            let seen = await pings.values(during: 1.5)
            #expect(seen.contains(Array("from python ✓".utf8)))
            #expect(seen.count >= 3, "expected several keepalive pings in 1.5 s, saw \(seen.count)")
            #expect(connection.connected)
            try await connection.write("still here")
            #expect(try await inbox.value(10, "the echo after keepalive").utf8Data == "still here")
            try await Interop.closeAndCheck(connection, peer, code: 1000, description: "done")
        }
    }

    @Test(
        "our client closes; the python websockets server sees the code and a clean handshake",
        arguments: [
            CloseCase(code: 1000, reason: nil, expectedDescription: WebSocketCloseReason.description(for: 1000)),
            CloseCase(code: 4000, reason: "client bye", expectedDescription: "client bye"),
        ])
    func clientClosesPythonServer(_ close: CloseCase) async throws {
        try await Interop.withPythonServer { peer, connection, inbox in
            try await connection.write("before close")
            #expect(try await inbox.value(10, "the echo before close").utf8Data == "before close")
            try await Interop.closeAndCheck(connection, peer, code: close.code, description: close.reason, expectedDescription: close.expectedDescription)
        }
    }

    @Test("the python websockets server closes with 4002 \"server bye\"; our onClose sees it")
    func pythonServerClosesClient() async throws {
        try await Interop.withPythonServer { peer, connection, inbox in
            let closed = Expectation<CloseEvent>()
            connection.onClose { closed.fulfill(CloseEvent(code: $0, description: $1)) }
            try await connection.write("cmd:close:4002:server bye")
            let event = try await closed.value(10, "our close event")
            #expect(event == CloseEvent(code: 4002, description: "server bye"))
            #expect(connection.closeReasonCode == 4002)
            #expect(connection.closeDescription == "server bye")

            let report = try await peer.jsonLine(10, "the python server's close report") { $0["event"] as? String == "closed" }
            #expect(Interop.closeFrame(report["close_sent"]) == CloseEvent(code: 4002, description: "server bye"))
            #expect(Interop.closeFrame(report["close_rcvd"])?.code == 4002)
            #expect(report["close_rcvd_then_sent"] as? Bool == false)
        }
    }

    @Test("our client against a python websockets server: subprotocol negotiation")
    func clientSubprotocolWithPythonServer() async throws {
        try await Interop.withPythonServer(arguments: ["--subprotocol", "chat"], protocols: ["superchat", "chat"]) { peer, connection, inbox in
            #expect(connection.protocol == "chat")
            let connected = try await peer.jsonLine(10, "the python server's connect report") { $0["event"] as? String == "connected" }
            #expect(connected["subprotocol"] as? String == "chat")
            try await Interop.closeAndCheck(connection, peer, code: 1000, description: "done")
        }
    }

    // MARK: Node client → our server

    @Test("node 20 built-in WebSocket client: text and binary echo, clean close with 4000")
    func nodeClient() async throws {
        let node = try Interop.node()
        try await Interop.withEchoServer { server in
            let closed = Expectation<CloseEvent>()
            server.server.onClose { _, code, description in closed.fulfill(CloseEvent(code: code, description: description)) }

            let peer = try PeerProcess(
                name: "node client", executable: node,
                arguments: ["--experimental-websocket", Interop.script("node_client.mjs"), server.url])
            defer { peer.killByPID() }
            let result = try await peer.finish(60)

            #expect(result["wasClean"] as? Bool == true)
            #expect(result["code"] as? Int == 4000)
            // (The reason node reports is whatever our server's answering close frame carries.)
            let serverSide = try await closed.value(10, "the server's close event")
            #expect(serverSide == CloseEvent(code: 4000, description: "node bye"))
        }
    }
}

// MARK: - Support

struct CloseCase: Sendable, CustomTestStringConvertible {
    var code: Int
    var reason: String?
    var expectedDescription: String
    var testDescription: String { "\(code) \"\(reason ?? "<default>")\"" }
}

struct CloseEvent: Sendable, Equatable {
    var code: Int
    var description: String
}

/// A failure to set up an interop test (a missing interpreter, a script that failed).
struct InteropError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

enum Interop {
    static let text = "héllo wörld — 🌍👋🏽🎉👨‍👩‍👧 你好，世界 こんにちは 안녕하세요 𝄞 Ω≈ç√"

    /// Peers send a whole message as one frame, so the server takes large frames.
    static let largeLimits: @Sendable (inout WebSocketServer.Configuration) -> Void = {
        $0.maxReceivedFrameSize = 16 << 20
        $0.maxReceivedMessageSize = 16 << 20
    }

    /// The package root: three levels above this file (Tests/WebSocketTests/InteropTests.swift).
    static let packageRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func script(_ name: String) -> String {
        packageRoot.appendingPathComponent("Tests/Interop").appendingPathComponent(name).path
    }

    /// `$WS_TEST_PYTHON`, else `<package root>/.venv/bin/python`; fails when neither exists.
    static func python() throws -> String {
        if let configured = ProcessInfo.processInfo.environment["WS_TEST_PYTHON"], !configured.isEmpty {
            guard FileManager.default.isExecutableFile(atPath: configured) else {
                throw InteropError("WS_TEST_PYTHON is set to \(configured), which is not an executable file. Unset it, or run scripts/test.sh to create the venv with Python `websockets`.")
            }
            return configured
        }
        let venv = packageRoot.appendingPathComponent(".venv/bin/python").path
        guard FileManager.default.isExecutableFile(atPath: venv) else {
            throw InteropError("No Python for the interop tests: WS_TEST_PYTHON is not set and \(venv) does not exist. Run scripts/test.sh (it creates the venv with Python `websockets` and runs the tests).")
        }
        return venv
    }

    /// `node` from `$PATH` (Node 20 or later); fails when there is none.
    static func node() throws -> String {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in path.split(separator: ":") {
            let candidate = "\(directory)/node"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw InteropError("`node` was not found on PATH (\(path)); the Node interop test needs Node 20 or later. Install it, or run scripts/test.sh.")
    }

    /// Runs `body` with an echo server (large limits) and always shuts the server down after.
    static func withEchoServer(_ body: (TestServer) async throws -> Void) async throws {
        let server = try await TestServer.echo(largeLimits)
        do {
            try await body(server)
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }

    /// A close frame as the peer scripts report it: `[code, reason]`.
    static func closeFrame(_ value: Any?) -> CloseEvent? {
        guard let pair = value as? [Any], pair.count == 2, let code = pair[0] as? Int, let reason = pair[1] as? String else { return nil }
        return CloseEvent(code: code, description: reason)
    }

    /// Runs `python_client.py <url> <scenario>` to the end and returns its JSON report.
    static func runPythonClient(url: String, scenario: String) async throws -> [String: Any] {
        let peer = try PeerProcess(
            name: "python client (\(scenario))", executable: try python(),
            arguments: ["-u", script("python_client.py"), url, scenario])
        defer { peer.killByPID() }
        return try await peer.finish(60)
    }

    /// Starts `python_server.py`, connects our client to it, and runs `body` with the server
    /// process, the connection and its inbox of messages; kills the server at the end.
    static func withPythonServer(
        arguments: [String] = [], protocols: [String] = [],
        configuration: WebSocketClient.Configuration = WebSocketClient.Configuration(),
        _ body: (PeerProcess, WebSocketConnection, Expectation<WebSocketMessage>) async throws -> Void
    ) async throws {
        let peer = try PeerProcess(
            name: "python server", executable: try python(),
            arguments: ["-u", script("python_server.py")] + arguments)
        defer { peer.killByPID() }
        let portLine = try await peer.line(30, "the python server's port") { $0.hasPrefix("PORT ") }
        guard let port = Int(portLine.dropFirst("PORT ".count)) else {
            throw InteropError("python server printed a bad port line: \(portLine)")
        }
        let client = WebSocketClient(configuration: configuration)
        let connection = try await withTimeout(15, "connecting to the python server") {
            try await client.connect(url: "ws://127.0.0.1:\(port)/interop", protocols: protocols)
        }
        defer { if connection.connected { connection.drop(reasonCode: 1001, skipCloseFrame: true) } }
        let inbox = Expectation<WebSocketMessage>()
        connection.onMessage { inbox.fulfill($0) }
        try await body(peer, connection, inbox)
    }

    /// Closes `connection` with `code` and `description`; checks our onClose and the python
    /// server's report of a clean handshake that it received `code` in.
    static func closeAndCheck(
        _ connection: WebSocketConnection, _ peer: PeerProcess, code: Int, description: String?,
        expectedDescription: String? = nil
    ) async throws {
        let closed = Expectation<CloseEvent>()
        connection.onClose { closed.fulfill(CloseEvent(code: $0, description: $1)) }
        let started = ContinuousClock.now
        try connection.close(reasonCode: code, description: description)
        let event = try await closed.value(10, "our close event")
        let elapsed = ContinuousClock.now - started
        let wireDescription = expectedDescription ?? description ?? ""
        #expect(event == CloseEvent(code: code, description: wireDescription))
        // The server closes TCP after the handshake; we must not have waited for closeTimeout (5 s).
        #expect(elapsed < .seconds(4), "close took \(elapsed): the handshake did not complete")

        let report = try await peer.jsonLine(10, "the python server's close report") { $0["event"] as? String == "closed" }
        #expect(report["code"] as? Int == code)
        #expect(report["reason"] as? String == wireDescription)
        #expect(Interop.closeFrame(report["close_rcvd"]) == CloseEvent(code: code, description: wireDescription))
        #expect(Interop.closeFrame(report["close_sent"])?.code == code)
        #expect(report["close_rcvd_then_sent"] as? Bool == true)
    }
}

/// A peer process (python or node) whose output is collected as it comes. Killed by its PID
/// with `killByPID()`; the interop tests do that in a `defer`.
final class PeerProcess: @unchecked Sendable {
    let name: String
    private let process = Process()
    private let output = NIOLockedValueBox<(stdout: [UInt8], stderr: [UInt8], stdoutEOF: Bool, stderrEOF: Bool)>(([], [], false, false))
    /// Lines of stdout already consumed by `line(…)`.
    private let consumed = NIOLockedValueBox(0)

    init(name: String, executable: String, arguments: [String]) throws {
        self.name = name
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        process.standardInput = FileHandle.nullDevice
        let output = self.output
        stdout.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            output.withLockedValue {
                if data.isEmpty { $0.stdoutEOF = true } else { $0.stdout += data }
            }
            if data.isEmpty { handle.readabilityHandler = nil }
        }
        stderr.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            output.withLockedValue {
                if data.isEmpty { $0.stderrEOF = true } else { $0.stderr += data }
            }
            if data.isEmpty { handle.readabilityHandler = nil }
        }
        do {
            try process.run()
        } catch {
            stdout.fileHandleForReading.readabilityHandler = nil
            stderr.fileHandleForReading.readabilityHandler = nil
            throw InteropError("could not start \(name) (\(executable)): \(error)")
        }
    }

    var pid: Int32 { process.processIdentifier }

    var stdoutText: String { output.withLockedValue { String(decoding: $0.stdout, as: UTF8.self) } }
    var stderrText: String { output.withLockedValue { String(decoding: $0.stderr, as: UTF8.self) } }

    /// Kills the process by its PID (if it still runs) and reaps it, waiting at most 2 s.
    func killByPID() {
        guard process.isRunning else { return }
        _ = kill(pid, SIGKILL)
        let deadline = ContinuousClock.now + .seconds(2)
        while process.isRunning && ContinuousClock.now < deadline { usleep(10_000) }
    }

    /// The next stdout line (after those already returned) that satisfies `matches`.
    func line(_ seconds: Double, _ what: String, _ matches: @escaping @Sendable (String) -> Bool) async throws -> String {
        do {
            return try await withTimeout(seconds, what) {
                while true {
                    let (lines, ended) = self.output.withLockedValue { state -> ([Substring], Bool) in
                        let text = String(decoding: state.stdout, as: UTF8.self)
                        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
                        lines.removeLast()  // an unfinished line
                        return (lines, state.stdoutEOF)
                    }
                    let start = self.consumed.withLockedValue { $0 }
                    if start < lines.count {
                        for index in start..<lines.count where matches(String(lines[index])) {
                            self.consumed.withLockedValue { $0 = index + 1 }
                            return String(lines[index])
                        }
                    }
                    if ended {
                        throw InteropError("\(self.name) ended before printing \(what)")
                    }
                    try await Task.sleep(for: .milliseconds(10))
                }
            }
        } catch {
            throw InteropError("\(error)\n\(diagnostics)")
        }
    }

    /// The next JSON stdout line whose object satisfies `matches`.
    func jsonLine(_ seconds: Double, _ what: String, _ matches: @escaping @Sendable ([String: Any]) -> Bool) async throws -> [String: Any] {
        let line = try await line(seconds, what) { line in
            (try? Self.parseJSON(line)).map(matches) ?? false
        }
        return try Self.parseJSON(line)
    }

    /// Waits for the process to exit (at most `seconds`) and its output to end; requires exit
    /// status 0 and returns the JSON object on the last line of stdout.
    func finish(_ seconds: Double) async throws -> [String: Any] {
        do {
            try await withTimeout(seconds, "\(name) to finish") {
                while self.process.isRunning {
                    try await Task.sleep(for: .milliseconds(10))
                }
                // Foundation may not report the pipes' end at once after the exit: give the
                // readers a moment, then go on with what arrived.
                let deadline = ContinuousClock.now + .seconds(2)
                while !self.output.withLockedValue({ $0.stdoutEOF && $0.stderrEOF }) && ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(10))
                }
            }
        } catch {
            throw InteropError("\(error)\n\(diagnostics)")
        }
        guard process.terminationReason == .exit, process.terminationStatus == 0 else {
            throw InteropError("\(name) failed (\(process.terminationReason == .exit ? "exit status" : "signal") \(process.terminationStatus))\n\(diagnostics)")
        }
        guard let last = stdoutText.split(separator: "\n").last, let object = try? Self.parseJSON(String(last)) else {
            throw InteropError("\(name) printed no JSON report\n\(diagnostics)")
        }
        return object
    }

    private var diagnostics: String {
        "--- \(name) stdout ---\n\(stdoutText)\n--- \(name) stderr ---\n\(stderrText)"
    }

    static func parseJSON(_ line: String) throws -> [String: Any] {
        guard let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
            throw InteropError("not a JSON object: \(line)")
        }
        return object
    }
}
