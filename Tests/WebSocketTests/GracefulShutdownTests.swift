import Foundation
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle
import Testing

@testable import WebSocket

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Requests handled in async code, shut down gracefully: `server.run(handlingRequests:)` in a
/// ServiceGroup, in process and as the built `example-async-chat`.
@Suite("Graceful shutdown with run(handlingRequests:)")
struct GracefulShutdownTests {
    /// An echo handler: accepts, echoes until the connection closes, then records the request's
    /// resource (so a test sees that every handler returned), with "threw" and the error if
    /// the loop threw.
    static func echoHandler(returned: Collected<String>) -> @Sendable (WebSocketRequest) async throws -> Void {
        { request in
            let connection = try request.accept(protocol: request.requestedProtocols.first)
            do {
                for try await message in connection.messages { try await connection.write(message) }
            } catch {
                returned.append("\(request.resource) threw \(error)")
                throw error
            }
            returned.append(request.resource)
        }
    }

    /// The port of `server`'s first listener, once it listens.
    static func port(of server: WebSocketServer) async throws -> Int {
        try await withTimeout(10, "the server to listen") {
            while server.localAddresses.isEmpty { try await Task.sleep(for: .milliseconds(5)) }
            return server.localAddresses[0].port!
        }
    }

    /// A client connected to `path`, whose close codes go to the returned expectation, after
    /// one echo (so its handler is running).
    static func echoingClient(port: Int, path: String) async throws -> (WebSocketConnection, Expectation<Int>) {
        let client = try await WebSocketClient().connect(url: "ws://127.0.0.1:\(port)\(path)")
        let closed = Expectation<Int>()
        let echoed = Expectation<String>()
        client.onClose { code, _ in closed.fulfill(code) }
        client.onMessage { echoed.fulfill($0.utf8Data ?? "") }
        client.sendUTF("ping \(path)")
        #expect(try await echoed.value(10, "the echo on \(path)") == "ping \(path)")
        return (client, closed)
    }

    @Test("in a ServiceGroup: graceful shutdown sends 1001 to every client, every handler returns, the group returns")
    func serviceGroup() async throws {
        let server = WebSocketServer(listeners: [.init(host: "127.0.0.1", port: 0)])
        let returned = Collected<String>()
        let handler = Self.echoHandler(returned: returned)
        let service = ClosureService { try await server.run(handlingRequests: handler) }
        let group = ServiceGroup(services: [service], logger: Logger(label: "test.graceful"))
        let running = Task { try await group.run() }
        defer { running.cancel() }
        let port = try await Self.port(of: server)
        let (_, firstClosed) = try await Self.echoingClient(port: port, path: "/one")
        let (_, secondClosed) = try await Self.echoingClient(port: port, path: "/two")

        await group.triggerGracefulShutdown()
        #expect(try await firstClosed.value(15, "the first client's close") == WebSocketCloseReason.goingAway)
        #expect(try await secondClosed.value(15, "the second client's close") == WebSocketCloseReason.goingAway)
        // Throws (and fails the test) if the group ended with an error, ServiceGroupError included.
        try await withTimeout(15, "the ServiceGroup to return") { try await running.value }
        #expect(Set(returned.all) == ["/one", "/two"])
        #expect(server.localAddresses.isEmpty)
        #expect(server.connectionCount == 0)
    }

    @Test("run(handlingRequests:) handing each connection to a scoped handler (the recommended shape): 1001, the loops end, the code after them runs, the group returns after them")
    func scopedHandlersUnderRun() async throws {
        let server = WebSocketServer(listeners: [.init(host: "127.0.0.1", port: 0)])
        let returned = Collected<String>()
        let service = ClosureService {
            try await server.run { request in
                try request.accept(protocol: request.requestedProtocols.first) { connection in
                    do {
                        for try await message in connection.messages { try await connection.write(message) }
                    } catch {
                        returned.append("\(request.resource) threw \(error)")
                        throw error
                    }
                    await Task.yield()  // the code after the loop may await
                    returned.append("\(request.resource) \(connection.closeReasonCode)")
                }
            }
        }
        let group = ServiceGroup(services: [service], logger: Logger(label: "test.graceful.scoped"))
        let running = Task { try await group.run() }
        defer { running.cancel() }
        let port = try await Self.port(of: server)
        let (_, firstClosed) = try await Self.echoingClient(port: port, path: "/one")
        let (_, secondClosed) = try await Self.echoingClient(port: port, path: "/two")

        await group.triggerGracefulShutdown()
        #expect(try await firstClosed.value(15, "the first client's close") == WebSocketCloseReason.goingAway)
        #expect(try await secondClosed.value(15, "the second client's close") == WebSocketCloseReason.goingAway)
        try await withTimeout(15, "the ServiceGroup to return") { try await running.value }
        // The group returned after the scoped handlers: their code after the loop has run.
        #expect(Set(returned.all) == ["/one 1001", "/two 1001"])
        #expect(server.scopedHandlers.count == 0)
    }

    @Test("a request still undecided when shutdown starts: accepted later, it gets 1001 at once, and run waits for its handler")
    func lateAccept() async throws {
        let server = WebSocketServer(listeners: [.init(host: "127.0.0.1", port: 0)])
        let returned = Collected<String>()
        let echo = Self.echoHandler(returned: returned)
        let (gate, openGate) = AsyncStream<Void>.makeStream()
        let deciding = Expectation<Void>()
        let service = ClosureService {
            try await server.run { request in
                if request.resource == "/slow" {
                    deciding.fulfill(())
                    for await _ in gate {}  // until the test opens the gate
                }
                try await echo(request)
            }
        }
        let group = ServiceGroup(services: [service], logger: Logger(label: "test.graceful"))
        let running = Task { try await group.run() }
        defer { running.cancel() }
        let port = try await Self.port(of: server)
        let (_, fastClosed) = try await Self.echoingClient(port: port, path: "/fast")
        let slow = Task { try await WebSocketClient().connect(url: "ws://127.0.0.1:\(port)/slow") as WebSocketConnection }
        try await deciding.value(10, "the slow request to reach its handler")

        await group.triggerGracefulShutdown()
        #expect(try await fastClosed.value(15, "the fast client's close") == WebSocketCloseReason.goingAway)
        try await withTimeout(10, "the server to stop listening") {
            while !server.localAddresses.isEmpty { try await Task.sleep(for: .milliseconds(5)) }
        }
        openGate.finish()  // now the handler accepts, after the shutdown's 1001s went out
        let slowClient = try await withTimeout(10, "the slow client's handshake") { try await slow.value }
        let slowClosed = Expectation<Int>()
        slowClient.onClose { code, _ in slowClosed.fulfill(code) }  // called at once if closed already
        #expect(try await slowClosed.value(15, "the slow client's close") == WebSocketCloseReason.goingAway)
        try await withTimeout(15, "the ServiceGroup to return") { try await running.value }
        #expect(Set(returned.all) == ["/fast", "/slow"])
    }

    @Test("without a ServiceGroup: cancelling the task sends 1001 and run throws CancellationError")
    func cancellation() async throws {
        let server = WebSocketServer(listeners: [.init(host: "127.0.0.1", port: 0)])
        let returned = Collected<String>()
        let running = Task { try await server.run(handlingRequests: Self.echoHandler(returned: returned)) }
        let port = try await Self.port(of: server)
        let (_, closed) = try await Self.echoingClient(port: port, path: "/c")
        running.cancel()
        #expect(try await closed.value(15, "the client's close") == WebSocketCloseReason.goingAway)
        await #expect(throws: CancellationError.self) {
            try await withTimeout(15, "run to end") { try await running.value }
        }
        // The handler ended before run did (how depends on where the cancellation found it).
        #expect(returned.all.count == 1 && returned.all[0].hasPrefix("/c"), "\(returned.all)")
        #expect(server.localAddresses.isEmpty)
    }

    @Test("a listener that cannot be opened: run and run(handlingRequests:) throw and close the listeners already open")
    func listenerFailure() async throws {
        let taken = try await TestServer.echo()
        defer { Task { await taken.stop() } }
        let listeners: [WebSocketServer.Listener] = [.init(host: "127.0.0.1", port: 0), .init(host: "127.0.0.1", port: taken.port)]
        let plain = WebSocketServer(listeners: listeners)
        await #expect(throws: (any Error).self) { try await withTimeout(15, "run to fail") { try await plain.run() } }
        #expect(plain.localAddresses.isEmpty)
        let handling = WebSocketServer(listeners: listeners)
        await #expect(throws: (any Error).self) {
            try await withTimeout(15, "run(handlingRequests:) to fail") { try await handling.run(handlingRequests: { _ in }) }
        }
        #expect(handling.localAddresses.isEmpty)
    }

    @Test("the shape this replaces: iterating requests in a second service fails on shutdown, as documented")
    func requestsInASecondService() async throws {
        var configuration = WebSocketServer.Configuration()
        configuration.closeTimeout = .seconds(1)
        let server = WebSocketServer(configuration: configuration, listeners: [.init(host: "127.0.0.1", port: 0)])
        let consumer = ClosureService {
            for await request in server.requests { _ = try? request.accept() }
        }
        let group = ServiceGroup(services: [consumer, server], logger: Logger(label: "test.graceful"))
        let running = Task { try await group.run() }
        defer { running.cancel() }
        // A client that never answers the close frame: the server's shutdown waits for it (at
        // most closeTimeout), and the consumer, whose sequence ended, returns first.
        let raw = try await RawClient.connected(port: try await Self.port(of: server))
        defer { Task { await raw.close() } }
        await group.triggerGracefulShutdown()
        await #expect(throws: ServiceGroupError.self) {
            try await withTimeout(15, "the ServiceGroup to end") { try await running.value }
        }
    }

    @Test("example-async-chat: on SIGINT every client gets 1001, the process exits 0, no ServiceGroupError")
    func exampleOnSIGINT() async throws {
        let chat = try ExampleProcess("example-async-chat", arguments: ["0"])
        defer { chat.killIfRunning() }
        let port = try await chat.listeningPort()

        let ann = try await WebSocketClient().connect(url: "ws://127.0.0.1:\(port)/?room=test&name=ann", protocols: ["chat"])
        let annHears = Expectation<String>()
        let annClosed = Expectation<Int>()
        ann.onMessage { annHears.fulfill($0.utf8Data ?? "") }
        ann.onClose { code, _ in annClosed.fulfill(code) }
        #expect(try await annHears.value(10, "ann's welcome") == "* ann joined test (1 here)")
        let bob = try await WebSocketClient().connect(url: "ws://127.0.0.1:\(port)/?room=test&name=bob+b", protocols: ["chat"])
        let bobClosed = Expectation<Int>()
        bob.onClose { code, _ in bobClosed.fulfill(code) }
        #expect(try await annHears.value(10, "bob joining") == "* bob b joined test (2 here)")
        bob.sendUTF("hello")
        #expect(try await annHears.value(10, "bob's message") == "bob b: hello")

        chat.signal(SIGINT)
        #expect(try await annClosed.value(15, "ann's close") == WebSocketCloseReason.goingAway)
        #expect(try await bobClosed.value(15, "bob's close") == WebSocketCloseReason.goingAway)
        let status = try await chat.exitStatus(15)
        let output = chat.stdoutText + chat.stderrText
        #expect(status == 0, "exit status \(status); output:\n\(output)")
        #expect(!output.contains("ServiceGroupError"), "output:\n\(output)")
        #expect(chat.stdoutText.contains("ann left test: 1001"), "stdout:\n\(chat.stdoutText)")
        #expect(chat.stdoutText.hasSuffix("Stopped.\n"), "stdout:\n\(chat.stdoutText)")
    }
}

/// A built example executable as a child process, its stdout and stderr collected. Killed by
/// PID when the test ends if it is still running.
final class ExampleProcess: @unchecked Sendable {
    private let process = Process()
    private let output = NIOLockedValueBox<(stdout: [UInt8], stderr: [UInt8], openPipes: Int)>(([], [], 2))

    /// The built `name`: beside the test bundle (same build directory), else
    /// `<package>/.build/debug/name`.
    static func executable(_ name: String) throws -> URL {
        let beside = Bundle.module.bundleURL.deletingLastPathComponent().appendingPathComponent(name)
        if FileManager.default.isExecutableFile(atPath: beside.path) { return beside }
        let debug = Interop.packageRoot.appendingPathComponent(".build/debug/\(name)")
        if FileManager.default.isExecutableFile(atPath: debug.path) { return debug }
        throw InteropError("\(name) was not found at \(beside.path) or \(debug.path); run `swift build` first")
    }

    init(_ name: String, arguments: [String]) throws {
        process.executableURL = try Self.executable(name)
        process.arguments = arguments
        process.standardInput = FileHandle.nullDevice
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        for (pipe, isStdout) in [(stdout, true), (stderr, false)] {
            let output = self.output
            pipe.fileHandleForReading.readabilityHandler = { handle in
                let data = handle.availableData
                if data.isEmpty { handle.readabilityHandler = nil }
                output.withLockedValue { state in
                    if data.isEmpty {
                        state.openPipes -= 1
                    } else if isStdout {
                        state.stdout += data
                    } else {
                        state.stderr += data
                    }
                }
            }
        }
        try process.run()
    }

    var stdoutText: String { output.withLockedValue { String(decoding: $0.stdout, as: UTF8.self) } }
    var stderrText: String { output.withLockedValue { String(decoding: $0.stderr, as: UTF8.self) } }

    /// The port of the server's "WebSocket server listening" log line (stderr), once written.
    func listeningPort(_ seconds: Double = 15) async throws -> Int {
        do {
            return try await withTimeout(seconds, "the example to listen") {
                while true {
                    for line in self.stderrText.split(separator: "\n") where line.contains("WebSocket server listening") {
                        if let at = line.range(of: "127.0.0.1:", options: .backwards),
                            let port = Int(line[at.upperBound...].prefix(while: \.isNumber))
                        {
                            return port
                        }
                    }
                    try await Task.sleep(for: .milliseconds(5))
                }
            }
        } catch {
            throw InteropError("\(error)\n--- stdout ---\n\(stdoutText)\n--- stderr ---\n\(stderrText)")
        }
    }

    func signal(_ signal: Int32) {
        _ = kill(process.processIdentifier, signal)
    }

    /// Waits until the process has exited and both pipes reached their end (so the output is
    /// complete), the end at most 2 s after the exit: a child that another test started
    /// meanwhile may have inherited the pipes' write ends and hold them open (then the output
    /// read so far is all there is); returns the exit status (the signal number if a signal
    /// ended it).
    func exitStatus(_ seconds: Double) async throws -> Int32 {
        try await withTimeout(seconds, "the example to exit") {
            while self.process.isRunning { try await Task.sleep(for: .milliseconds(5)) }
            let deadline = ContinuousClock.now + .seconds(2)
            while self.output.withLockedValue({ $0.openPipes > 0 }) && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(5))
            }
        }
        return process.terminationReason == .exit ? process.terminationStatus : 128 + process.terminationStatus
    }

    func killIfRunning() {
        guard process.isRunning else { return }
        _ = kill(process.processIdentifier, SIGKILL)
        let deadline = ContinuousClock.now + .seconds(2)
        while process.isRunning && ContinuousClock.now < deadline { usleep(10_000) }
    }
}
