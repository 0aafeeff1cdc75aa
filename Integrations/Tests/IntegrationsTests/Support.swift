import Foundation
import Hummingbird
import HummingbirdExampleApp
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing
import Vapor
import VaporExampleApp
import WebSocket

/// The two example apps, each run in this process on 127.0.0.1 and a free port.
enum Framework: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case hummingbird = "Hummingbird"
    case vapor = "Vapor"
    var testDescription: String { rawValue }

    /// Runs the example app, calls `body` with its port and `WebSocketServer`, then stops it.
    func withApp(_ body: @Sendable (_ port: Int, _ server: WebSocketServer) async throws -> Void) async throws {
        switch self {
        case .hummingbird: try await Self.withHummingbird(body)
        case .vapor: try await Self.withVapor(body)
        }
    }

    static func withHummingbird(_ body: @Sendable (Int, WebSocketServer) async throws -> Void) async throws {
        var logger = Logger(label: "test-hummingbird")
        logger.logLevel = .warning
        let bound = Expectation<Int>()
        let (application, server) = try HummingbirdExample.makeApplication(port: 0, logger: logger) { channel in
            bound.fulfill(channel.localAddress?.port ?? 0)
        }
        let running = Task { try await application.runService() }
        defer { running.cancel() }
        let port = try await bound.value(30, "Hummingbird listening")
        try await body(port, server)
        running.cancel()
        _ = try? await withTimeout(20, "Hummingbird stopping") { try await running.value }
    }

    static func withVapor(_ body: @Sendable (Int, WebSocketServer) async throws -> Void) async throws {
        let app = try await Application.make(.testing)
        app.logger.logLevel = .warning
        app.http.server.configuration.hostname = "127.0.0.1"
        app.http.server.configuration.port = 0
        let server = VaporExample.configure(app)
        do {
            try await app.server.start(address: .hostname("127.0.0.1", port: 0))
            guard let port = app.http.server.shared.localAddress?.port else { throw TestError("Vapor has no local address") }
            try await body(port, server)
        } catch {
            await server.shutDown()
            await app.server.shutdown()
            try await app.asyncShutdown()
            throw error
        }
        await server.shutDown()
        await app.server.shutdown()
        try await app.asyncShutdown()
    }
}

struct TestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A value that arrives later, awaited with a time limit.
final class Expectation<Value: Sendable>: Sendable {
    private let state = NIOLockedValueBox<(values: [Value], waiters: [CheckedContinuation<Value, Never>])>(([], []))

    func fulfill(_ value: Value) {
        let waiter = state.withLockedValue { state -> CheckedContinuation<Value, Never>? in
            if state.waiters.isEmpty {
                state.values.append(value)
                return nil
            }
            return state.waiters.removeFirst()
        }
        waiter?.resume(returning: value)
    }

    /// The next value, or a failure after `seconds`.
    func value(_ seconds: Double, _ what: String) async throws -> Value {
        try await withTimeout(seconds, what) {
            await withCheckedContinuation { continuation in
                let ready = self.state.withLockedValue { state -> Value? in
                    if !state.values.isEmpty { return state.values.removeFirst() }
                    state.waiters.append(continuation)
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
        }
    }
}

/// Runs `body`, failing after `seconds` (the body's task is cancelled then).
func withTimeout<T: Sendable>(_ seconds: Double, _ what: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try? await Task.sleep(for: .seconds(seconds))
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let value = first else {
            throw TestError("timed out after \(seconds) s waiting for \(what)")
        }
        return value
    }
}

/// One HTTP/1.1 exchange over a raw TCP connection: sends `request` as it is and reads until
/// the server closes (or until `until` says the answer is complete). Returns the bytes as text.
func rawHTTP(port: Int, _ request: String, until complete: (@Sendable (String) -> Bool)? = nil) async throws -> String {
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture {
                try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
            }
        }
    return try await withTimeout(20, "the HTTP answer") {
        try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(string: request))
            var text = ""
            for try await chunk in inbound {
                text += String(buffer: chunk)
                if let complete, complete(text) { break }
            }
            return text
        }
    }
}

/// The status code of an HTTP response's first line.
func statusCode(of response: String) -> Int? {
    let parts = response.split(separator: " ", maxSplits: 2)
    return parts.count >= 2 ? Int(parts[1]) : nil
}

/// The body of a response (after the blank line).
func body(of response: String) -> String {
    guard let range = response.range(of: "\r\n\r\n") else { return "" }
    return String(response[range.upperBound...])
}

/// The project's Python (`$WS_TEST_PYTHON`, else `<project>/.venv/bin/python`, which
/// `scripts/test.sh` makes) and the project's interop scripts (Tests/Interop/).
enum Python {
    static let projectRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static var executable: String {
        ProcessInfo.processInfo.environment["WS_TEST_PYTHON"] ?? projectRoot.appendingPathComponent(".venv/bin/python").path
    }

    /// Runs `Tests/Interop/python_client.py <url> <scenario>` and returns its JSON report; the
    /// process is killed by its PID if it has not finished within 60 s.
    static func runClient(url: String, scenario: String) async throws -> [String: Any] {
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            throw TestError("no Python at \(executable): run scripts/test.sh once (it makes .venv), or set WS_TEST_PYTHON")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["-u", projectRoot.appendingPathComponent("Tests/Interop/python_client.py").path, url, scenario]
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        let exited = Expectation<Int32>()
        process.terminationHandler = { exited.fulfill($0.terminationStatus) }
        try process.run()
        let pid = process.processIdentifier
        let status: Int32
        do {
            status = try await exited.value(60, "python_client.py \(scenario)")
        } catch {
            kill(pid, SIGKILL)
            throw error
        }
        let stdout = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        guard status == 0, let line = stdout.split(separator: "\n").last,
            let report = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
        else {
            throw TestError("python_client.py \(scenario) exited \(status): \(stdout) \(stderr)")
        }
        return report
    }
}
