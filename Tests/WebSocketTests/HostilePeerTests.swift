import Foundation
import NIOCore
import Testing

@testable import WebSocket

/// One client must never grow the server's memory (issue 29). Each test starts `ws serve` (the
/// echo and chat demo, with its defaults), lets `Tests/Interop/hostile_client.py` attack it for a
/// few seconds, and meanwhile samples the server's resident memory from /proc and keeps a second,
/// well-behaved client echoing. It asserts that the server's RSS stayed within
/// ``rssBound`` of its baseline during the attack, that the server ended the offender or held it
/// (its writes blocked: TCP backpressure reached it), and that the good client got every echo.
///
/// Measured before the fix (release build, 30 s): the non-reading echo client grew the server
/// from 32 MiB to 8.4 GiB, the ping flood by 2.5 GiB; an empty-frame flood to a connection without
/// a listener was never paused.
@Suite("Hostile peers", .serialized, .timeLimit(.minutes(3)))
struct HostilePeerTests {
    /// How far over its baseline the server's RSS may go during an attack.
    static let rssBound = 64 << 20

    /// What the attacker reported.
    struct Outcome {
        var fields: [String: String]
        var blocked: Bool { fields["blocked"] == "1" }
        var closed: Bool { fields["closed"] == "1" }
        var code: Int { Int(fields["code"] ?? "") ?? -1 }
        var sent: Int { Int(fields["sent"] ?? "") ?? 0 }
    }

    /// The resident memory of process `pid`, in bytes (VmRSS of /proc/PID/status).
    static func rss(of pid: Int32) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") })
        else { return nil }
        return line.split(separator: " ").compactMap { Int($0) }.first.map { $0 * 1024 }
    }

    static func serve(_ arguments: [String] = []) async throws -> (PeerProcess, Int) {
        let ws = BrowserTests.wsBinary
        guard FileManager.default.isExecutableFile(atPath: ws) else {
            throw InteropError("the ws executable is not built at \(ws); run `swift build` first")
        }
        let process = try PeerProcess(name: "ws serve", executable: ws, arguments: ["serve", "--port", "0", "--quiet"] + arguments)
        let line = try await process.line(20, "ws serve's listening line") { $0.hasPrefix("ws serve: listening on") }
        guard let port = line.split(separator: ":").compactMap({ Int($0.prefix(while: \.isNumber)) }).last else {
            throw InteropError("no port in \(line)")
        }
        return (process, port)
    }

    /// Starts `hostile_client.py` in `mode` against `port`.
    static func attacker(_ mode: String, port: Int, _ arguments: [String]) throws -> PeerProcess {
        try PeerProcess(
            name: "hostile client (\(mode))", executable: try Interop.python(),
            arguments: ["-u", Interop.script("hostile_client.py"), mode, "\(port)"] + arguments)
    }

    /// Starts the attacker against `port` and waits for its report, sampling `server`'s RSS and
    /// echoing with a good client on `goodPath` in the meantime. Checks the bound and the echoes.
    static func attack(
        _ mode: String, server: PeerProcess, port: Int, path: String = "/", seconds: Double = 6, extra: [String] = [],
        goodPath: String = "/"
    ) async throws -> Outcome {
        let good = try await WebSocketClient().connect(url: "ws://127.0.0.1:\(port)\(goodPath)")
        let echoes = Collected<WebSocketMessage>()
        good.onMessage { echoes.append($0) }
        func echo(_ round: Int) async throws -> Duration {
            let start = ContinuousClock.now
            good.sendUTF("good \(round)")
            try await waitUntil(10, "the good client's echo \(round)") {
                echoes.all.contains(.utf8("good \(round)"))
            }
            return ContinuousClock.now - start
        }
        _ = try await echo(0)
        let baseline = try #require(rss(of: server.pid))

        let attacker = try Self.attacker(mode, port: port, ["--path", path, "--seconds", "\(seconds)"] + extra)
        defer { attacker.killByPID() }
        let report = Task { try await attacker.line(seconds + 30, "the attacker's report") { $0.hasPrefix("hostile: ") } }
        var peak = baseline
        var round = 1
        var slowest = Duration.zero
        var samples: [Int] = []
        while true {
            if let now = rss(of: server.pid) {
                peak = max(peak, now)
                samples.append(now)
            }
            slowest = max(slowest, try await echo(round))
            round += 1
            if attacker.stdoutText.contains("hostile: ") { break }
            try await Task.sleep(for: .milliseconds(50))  // paces the sampling; the loop ends on the report
        }
        let line = try await report.value
        if let now = rss(of: server.pid) { peak = max(peak, now) }
        var fields: [String: String] = [:]
        for pair in line.dropFirst("hostile: ".count).split(separator: " ") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = String(parts[1]) }
        }
        let growth = peak - baseline
        print("HostilePeerTests \(mode): baseline \(baseline >> 20) MiB, peak \(peak >> 20) MiB (+\(growth >> 20) MiB), \(samples.count) samples, \(round - 1) good echoes, slowest \(slowest); attacker: \(line)")
        #expect(growth < rssBound, "\(mode): the server grew by \(growth >> 20) MiB (from \(baseline >> 20) MiB)")
        #expect(round > 3, "\(mode): the good client got only \(round - 1) echoes during the attack")
        #expect(slowest < .seconds(3), "\(mode): the good client's slowest echo took \(slowest)")
        _ = try? await good.close(code: .normal)
        return Outcome(fields: fields)
    }

    @Test("a client that sends 16,000-byte frames to the echo and never reads: held flat, its writes block")
    func nonReadingEchoClient() async throws {
        let (server, port) = try await Self.serve()
        defer { server.killByPID() }
        let outcome = try await Self.attack("echo-nonreader", server: server, port: port)
        #expect(outcome.blocked || outcome.closed, "the server kept reading from a client that does not read: \(outcome.fields)")
    }

    @Test("a ping flood from a client that never reads: one pong waits, reading pauses")
    func pingFlood() async throws {
        let (server, port) = try await Self.serve()
        defer { server.killByPID() }
        let outcome = try await Self.attack("ping-flood", server: server, port: port)
        #expect(outcome.blocked || outcome.closed, "\(outcome.fields)")
    }

    @Test("a topic subscriber (/broadcast) that publishes and never reads")
    func nonReadingSubscriber() async throws {
        let (server, port) = try await Self.serve()
        defer { server.killByPID() }
        let outcome = try await Self.attack("echo-nonreader", server: server, port: port, path: "/broadcast")
        #expect(outcome.blocked || outcome.closed, "\(outcome.fields)")
    }

    @Test("a flood of 1-byte continuation frames: closed with 1009 at maxFragmentsPerMessage")
    func tinyContinuations() async throws {
        let (server, port) = try await Self.serve()
        defer { server.killByPID() }
        let outcome = try await Self.attack("tiny-continuations", server: server, port: port, seconds: 20)
        #expect(outcome.closed && outcome.code == 1009, "\(outcome.fields)")
    }

    @Test("a deflate bomb (1 GiB of zeros in about 1 MiB): refused with 1009, memory bounded")
    func deflateBomb() async throws {
        let (server, port) = try await Self.serve(["--deflate"])
        defer { server.killByPID() }
        let outcome = try await Self.attack("deflate-bomb", server: server, port: port, seconds: 10, extra: ["--count", "1024"])
        #expect(outcome.closed && outcome.code == 1009, "\(outcome.fields)")
    }

    @Test("empty text frames to a connection nobody listens to: reading pauses, the waiting messages stay bounded")
    func emptyFramesWithoutListener() async throws {
        let accepted = Expectation<WebSocketConnection>()
        let server = try await TestServer.start(setup: { server in
            server.onRequest { request in
                guard let connection = try? request.accept() else { return }
                _ = try? connection.subscribe(to: "news")  // README's "news" server: no message listener
                accepted.fulfill(connection)
            }
        })
        defer { Task { await server.stop() } }
        let attacker = try Self.attacker("empty-frames", port: server.port, ["--seconds", "6"])
        defer { attacker.killByPID() }
        let connection = try await accepted.value(10, "the accepted connection")
        let line = try await attacker.line(40, "the attacker's report") { $0.hasPrefix("hostile: ") }
        let pending = connection.state.withLockedValue { ($0.pending.count, $0.pendingBytes) }
        print("HostilePeerTests empty-frames: \(line); \(pending.0) messages wait for a listener (\(pending.1) bytes counted)")
        #expect(line.contains("blocked=1"), "the server kept reading: \(line)")
        // maxReceivedMessageSize (1 MiB) of 64-byte overheads, plus what one read brings.
        #expect(pending.0 <= (1 << 20) / WebSocketConnection.pendingMessageOverhead + 64 * 1024, "\(pending.0) messages wait")
        #expect(server.server.connectionCount == 1)
    }

    @Test("more pending handshakes than maxConnections: those past the cap get 503 at once")
    func pendingHandshakes() async throws {
        let undecided = Collected<WebSocketRequest>()
        let server = try await TestServer.start({ $0.maxConnections = 8; $0.requestTimeout = .seconds(60) }, setup: { server in
            server.onRequest { undecided.append($0) }  // never decided
        })
        defer { Task { await server.stop() } }
        let attacker = try Self.attacker("pending-handshakes", port: server.port, ["--count", "20", "--seconds", "3"])
        defer { attacker.killByPID() }
        let line = try await attacker.line(30, "the attacker's report") { $0.hasPrefix("hostile: ") }
        #expect(line.contains("answered=12 refused=12"), "\(line)")
        #expect(undecided.all.count == 8)
        // Deciding frees the places: a rejected request's place goes to the next one.
        for request in undecided.all { request.reject(status: 403) }
        let raw = try await RawClient.connect(port: server.port)
        try await raw.send(
            "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        try await waitUntil(10, "the ninth request") { undecided.all.count == 9 }
    }

    @Test("a client that asks for a large plain HTTP answer and never reads it is disconnected at handshakeTimeout")
    func plainAnswerNotRead() async throws {
        let store = CapturingLogHandler.Store()
        var configuration = WebSocketServer.Configuration()
        configuration.handshakeTimeout = .seconds(1)
        let server = WebSocketServer(configuration: configuration, logger: CapturingLogHandler.logger(store))
        let body = String(repeating: "x", count: 32 << 20)
        server.setHTTPHandler { _ in (.ok, ["Content-Type": "text/plain"], body) }
        let port = try await server.listen(host: "127.0.0.1", port: 0).port!
        defer { Task { await server.shutDown() } }
        let raw = try await RawClient.connect(port: port)
        try await raw.setReading(false)
        try await raw.send("GET /page HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        try await waitUntil(15, "the server to give up on the unread answer") {
            store.lines.contains { $0.message.hasPrefix("HTTP answer not read by the client within handshakeTimeout") }
        }
        raw.discardIncoming()
        try await raw.setReading(true)
        try await raw.waitForEOF(timeout: 20)
        let received = raw.discardIncoming() + raw.discardReceived()
        #expect(received < body.utf8.count, "the whole answer arrived (\(received) bytes): the timeout cut nothing")
    }

    @Test("slowloris: a request head sent a byte at a time ends at handshakeTimeout with 408")
    func slowloris() async throws {
        let server = try await TestServer.start({ $0.handshakeTimeout = .seconds(2) }, setup: { server in
            server.onRequest { _ = try? $0.accept() }
        })
        defer { Task { await server.stop() } }
        let attacker = try Self.attacker("slowloris", port: server.port, ["--seconds", "8"])
        defer { attacker.killByPID() }
        let line = try await attacker.line(30, "the attacker's report") { $0.hasPrefix("hostile: ") }
        #expect(line.contains("closed=1") && line.contains("status=408"), "\(line)")
    }
}
