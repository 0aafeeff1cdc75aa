import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import WebSocket

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The built `ws` executable: beside the test bundle (same build directory), else
/// `<package>/.build/debug/ws`.
private func wsExecutable() throws -> String {
    let besideBundle = Bundle.module.bundleURL.deletingLastPathComponent().appendingPathComponent("ws").path
    if FileManager.default.isExecutableFile(atPath: besideBundle) { return besideBundle }
    let debug = Interop.packageRoot.appendingPathComponent(".build/debug/ws").path
    if FileManager.default.isExecutableFile(atPath: debug) { return debug }
    throw InteropError("the ws executable was not found at \(besideBundle) or \(debug); run `swift build` first")
}

/// `ws connect …` as a child process: lines are written to its stdin, its stdout and stderr are
/// collected. Killed by PID when the test ends.
private final class WSConnectProcess: @unchecked Sendable {
    private let process = Process()
    private let stdin = Pipe()
    private let output = NIOLockedValueBox<(stdout: [UInt8], stderr: [UInt8], openPipes: Int)>(([], [], 2))

    init(arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: try wsExecutable())
        process.arguments = ["connect"] + arguments
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        let output = self.output
        stdout.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            output.withLockedValue { if data.isEmpty { $0.openPipes -= 1 } else { $0.stdout += data } }
            if data.isEmpty { handle.readabilityHandler = nil }
        }
        stderr.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            output.withLockedValue { if data.isEmpty { $0.openPipes -= 1 } else { $0.stderr += data } }
            if data.isEmpty { handle.readabilityHandler = nil }
        }
        try process.run()
    }

    var stdoutText: String { output.withLockedValue { String(decoding: $0.stdout, as: UTF8.self) } }
    var stderrText: String { output.withLockedValue { String(decoding: $0.stderr, as: UTF8.self) } }

    func send(_ line: String) {
        stdin.fileHandleForWriting.write(Data((line + "\n").utf8))
    }

    func closeInput() {
        try? stdin.fileHandleForWriting.close()
    }

    /// Waits until stdout has a line equal to `line`.
    func waitForLine(_ line: String, _ seconds: Double = 10) async throws {
        do {
            try await withTimeout(seconds, "ws connect to print \"\(line)\"") {
                while !self.stdoutText.split(separator: "\n").contains(where: { $0 == line }) {
                    try await Task.sleep(for: .milliseconds(10))
                }
            }
        } catch {
            throw InteropError("\(error)\n--- stdout ---\n\(stdoutText)\n--- stderr ---\n\(stderrText)")
        }
    }

    /// Waits for the process to exit and its output to end (at most 2 s after the exit: a child
    /// that another test started meanwhile may hold the pipes' write ends open); returns its
    /// status.
    func exitStatus(_ seconds: Double = 10) async throws -> Int32 {
        try await withTimeout(seconds, "ws connect to exit") {
            while self.process.isRunning { try await Task.sleep(for: .milliseconds(10)) }
            let deadline = ContinuousClock.now + .seconds(2)
            while self.output.withLockedValue({ $0.openPipes > 0 }) && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
        }
        return process.terminationStatus
    }

    func killByPID() {
        guard process.isRunning else { return }
        _ = kill(process.processIdentifier, SIGKILL)
        let deadline = ContinuousClock.now + .seconds(2)
        while process.isRunning && ContinuousClock.now < deadline { usleep(10_000) }
    }
}

@Suite("ws connect")
struct WSConnectTests {
    @Test("typed lines are sent, messages printed; /ping, //, /close code reason; exit 0")
    func interactive() async throws {
        let requests = Expectation<(String?, String?, String?)>()
        let closes = Expectation<CloseEvent>()
        let server = try await TestServer.start(setup: { server in
            server.onRequest { request in
                requests.fulfill((request.requestedProtocols.first, request.origin, request.httpRequest.headers.first(name: "x-test")))
                guard let connection = try? request.accept(protocol: request.requestedProtocols.first, origin: request.origin) else { return }
                connection.sendBytes([1, 2, 3] as [UInt8])
                connection.onMessage { connection.send($0) }
            }
            server.onClose { _, code, description in closes.fulfill(CloseEvent(code: code, description: description)) }
        })
        defer { Task { await server.stop() } }

        let ws = try WSConnectProcess(arguments: [
            server.url, "--protocol", "chat", "--protocol", "other", "--origin", "http://cli.test", "--header", "X-Test: yes",
        ])
        defer { ws.killByPID() }
        try await ws.waitForLine("Connected to \(server.url) (protocol: chat)")
        let (chosen, origin, header) = try await requests.value()
        #expect(chosen == "chat")
        #expect(origin == "http://cli.test")
        #expect(header == "yes")
        try await ws.waitForLine("< [binary, 3 bytes] 01 02 03")
        ws.send("hello, wörld ✓")
        try await ws.waitForLine("< hello, wörld ✓")
        ws.send("/ping abc")
        try await ws.waitForLine("< pong: abc")
        ws.send("//not a command")
        try await ws.waitForLine("< /not a command")
        ws.send("/close 4000 bye now")
        try await ws.waitForLine("Disconnected (code: 4000, reason: \"bye now\")")
        #expect(try await closes.value() == CloseEvent(code: 4000, description: "bye now"))
        #expect(try await ws.exitStatus() == 0)
    }

    @Test("permessage-deflate is offered by default; --no-deflate stops it")
    func deflateByDefault() async throws {
        let server = try await TestServer.echo { $0.perMessageDeflate = PerMessageDeflate.Options() }
        defer { Task { await server.stop() } }
        let offered = try WSConnectProcess(arguments: [server.url])
        defer { offered.killByPID() }
        try await offered.waitForLine("Connected to \(server.url) (extensions: permessage-deflate)")
        offered.send(String(repeating: "squeeze ", count: 40))
        try await offered.waitForLine("< " + String(repeating: "squeeze ", count: 40))
        let plain = try WSConnectProcess(arguments: [server.url, "--no-deflate"])
        defer { plain.killByPID() }
        try await plain.waitForLine("Connected to \(server.url)")
    }

    @Test("--http2 connects over HTTP/2 to a server that offers it, and says so")
    func http2() async throws {
        let server = try await TestServer.echo { $0.http2 = true }
        defer { Task { await server.stop() } }
        let address = try await server.server.listen(host: "127.0.0.1", port: 0, tlsConfiguration: TestTLS.serverConfiguration())
        let url = "wss://localhost:\(address.port!)/"
        let ws = try WSConnectProcess(arguments: [url, "--http2", "--no-deflate", "--ca", TestTLS.caFile])
        defer { ws.killByPID() }
        try await ws.waitForLine("Connected to \(url) (HTTP/2)")
        ws.send("over a stream")
        try await ws.waitForLine("< over a stream")
        #expect(server.server.http2ConnectionCount == 1)
        ws.closeInput()
        #expect(try await ws.exitStatus() == 0)
    }

    @Test("the end of input closes the connection with 1000")
    func endOfInput() async throws {
        let server = try await TestServer.echo()
        defer { Task { await server.stop() } }
        let ws = try WSConnectProcess(arguments: [server.url])
        defer { ws.killByPID() }
        try await ws.waitForLine("Connected to \(server.url)")
        ws.send("last words")
        try await ws.waitForLine("< last words")
        ws.closeInput()
        try await ws.waitForLine("Disconnected (code: 1000, reason: \"Normal connection closure\")")
        #expect(try await ws.exitStatus() == 0)
    }

    @Test("a refused connection: exit status 1 and the reason on stderr")
    func refused() async throws {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        let port = channel.localAddress!.port!
        try await channel.close()
        let ws = try WSConnectProcess(arguments: ["ws://127.0.0.1:\(port)/"])
        defer { ws.killByPID() }
        #expect(try await ws.exitStatus() == 1)
        #expect(ws.stderrText.contains("Connection refused by 127.0.0.1:\(port)"), "\(ws.stderrText)")
        #expect(ws.stderrText.contains("[connectionRefused]"))
        #expect(!ws.stdoutText.contains("Connected"))
    }

    @Test("a connection lost without a close frame: exit status 3")
    func lost() async throws {
        let serverSide = Expectation<WebSocketConnection>()
        let server = try await TestServer.echo()
        server.server.onConnect { serverSide.fulfill($0) }
        defer { Task { await server.stop() } }
        let ws = try WSConnectProcess(arguments: [server.url])
        defer { ws.killByPID() }
        try await ws.waitForLine("Connected to \(server.url)")
        try await serverSide.value().drop(skipCloseFrame: true)
        try await ws.waitForLine("Disconnected (code: 1006, reason: \"\(WebSocketCloseReason.description(for: 1006))\")")
        #expect(try await ws.exitStatus() == 3)
    }

    @Test("wss:// with --ca; an untrusted server without it fails with the TLS reason")
    func tls() async throws {
        let tls = try await TLSTestServer.start()
        defer { Task { await tls.stop() } }
        let url = "wss://localhost:\(tls.port)/"
        let untrusted = try WSConnectProcess(arguments: [url])
        defer { untrusted.killByPID() }
        #expect(try await untrusted.exitStatus() == 1)
        #expect(untrusted.stderrText.contains("[tlsFailed]"), "\(untrusted.stderrText)")

        let ws = try WSConnectProcess(arguments: [url, "--ca", ClientTLSFiles.path("ca.pem")])
        defer { ws.killByPID() }
        try await ws.waitForLine("Connected to \(url)")
        ws.send("over tls")
        try await ws.waitForLine("< over tls")
        ws.send("/close")
        try await ws.waitForLine("Disconnected (code: 1000, reason: \"Normal connection closure\")")
        #expect(try await ws.exitStatus() == 0)
    }
}
