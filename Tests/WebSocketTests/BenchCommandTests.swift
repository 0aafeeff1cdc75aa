import Foundation
import NIOConcurrencyHelpers
import Testing

@testable import WebSocket

/// `ws bench` run as a child process against an in-process echo server.
@Suite("ws bench")
struct BenchCommandTests {
    /// The built `ws`: beside the test runner (`CommandLine.arguments[0]` is in the build
    /// directory), else `<package>/.build/debug/ws`.
    static func wsExecutable() throws -> URL {
        let runner = URL(fileURLWithPath: CommandLine.arguments[0])
        let beside = runner.deletingLastPathComponent().appendingPathComponent("ws")
        if FileManager.default.isExecutableFile(atPath: beside.path) { return beside }
        let package = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let debug = package.appendingPathComponent(".build/debug/ws")
        if FileManager.default.isExecutableFile(atPath: debug.path) { return debug }
        throw TestTimeout(what: "the ws executable (not at \(beside.path) nor \(debug.path); run `swift build` first)")
    }

    /// Runs `ws bench` with `arguments`; returns its exit status and output. Killed by PID if
    /// it runs longer than `seconds`.
    static func runBench(_ arguments: [String], seconds: Double = 30) async throws -> (status: Int32, stdout: String, stderr: String) {
        let process = Process()
        process.executableURL = try wsExecutable()
        process.arguments = ["bench"] + arguments
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        process.standardInput = FileHandle.nullDevice
        let output = NIOLockedValueBox<(stdout: Data, stderr: Data)>((Data(), Data()))
        stdout.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            if data.isEmpty { handle.readabilityHandler = nil } else { output.withLockedValue { $0.stdout += data } }
        }
        stderr.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            if data.isEmpty { handle.readabilityHandler = nil } else { output.withLockedValue { $0.stderr += data } }
        }
        try process.run()
        let pid = process.processIdentifier
        do {
            try await withTimeout(seconds, "ws bench to exit") {
                while process.isRunning { try await Task.sleep(for: .milliseconds(20)) }
            }
        } catch {
            kill(pid, SIGKILL)
            throw error
        }
        // Let the pipes deliver what the process wrote last.
        try await Task.sleep(for: .milliseconds(100))
        let (out, err) = output.withLockedValue { (String(decoding: $0.stdout, as: UTF8.self), String(decoding: $0.stderr, as: UTF8.self)) }
        return (process.terminationStatus, out, err)
    }

    /// The `key=value` fields of the `bench:` summary line.
    static func summary(_ stdout: String) -> [String: String]? {
        guard let line = stdout.split(separator: "\n").last(where: { $0.hasPrefix("bench: ") }) else { return nil }
        var fields: [String: String] = [:]
        for field in line.dropFirst("bench: ".count).split(separator: " ") {
            let parts = field.split(separator: "=", maxSplits: 1)
            guard parts.count == 2 else { return nil }
            fields[String(parts[0])] = String(parts[1])
        }
        return fields
    }

    @Test("one second against an echo server: a summary line, messages, no errors", arguments: [false, true])
    func benchAgainstEcho(binary: Bool) async throws {
        let server = try await TestServer.echo()
        defer { Task { await server.stop() } }
        let result = try await Self.runBench(
            [server.url, "--connections", "2", "--depth", "4", "--size", "100", "--duration", "1"] + (binary ? ["--binary"] : []))
        let context = "stdout:\n\(result.stdout)\nstderr:\n\(result.stderr)"
        #expect(result.status == 0, "\(context)")
        let fields = try #require(Self.summary(result.stdout), "no bench: line in \(context)")
        #expect(fields["connections"] == "2")
        #expect(fields["depth"] == "4")
        #expect(fields["size"] == "100")
        #expect(fields["binary"] == String(binary))
        #expect(fields["errors"] == "0", "\(context)")
        let messages = try #require(fields["messages"].flatMap { Int($0) }, "\(context)")
        #expect(messages > 0)
        for key in ["msgs_per_s", "mb_per_s", "p50_us", "p90_us", "p99_us", "max_us", "duration"] {
            let value = try #require(fields[key].flatMap { Double($0) }, "\(key) in \(context)")
            #expect(value >= 0)
        }
        #expect(Double(fields["p50_us"]!)! <= Double(fields["p99_us"]!)!)
        #expect(Double(fields["p99_us"]!)! <= Double(fields["max_us"]!)!)
        // Not a terminal: no progress line with carriage returns.
        #expect(!result.stdout.contains("\r"))
    }

    @Test("a refused connection exits with a non-zero status and says why")
    func refused() async throws {
        // A port that was just free: start a server, note its port, stop it.
        let server = try await TestServer.echo()
        let port = server.port
        await server.stop()
        let result = try await Self.runBench(["ws://127.0.0.1:\(port)/", "--duration", "1"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("could not connect"), "stderr: \(result.stderr)")
        #expect(Self.summary(result.stdout) == nil)
    }
}
