import Foundation
import NIOConcurrencyHelpers

/// A child's output in a file of its own, read once the child has exited: no pipe, so neither a
/// blocking read nor the wait for a pipe's end. Never read a pipe with a blocking call in a test
/// (`readDataToEndOfFile`, also inside `Task.detached`): the tests share Swift's concurrency
/// pool, which has one thread per core, two on the project's machines, and a thread blocked for
/// the child's lifetime stalls every test running in parallel. Nor wait for a pipe's end: a child
/// that another test starts meanwhile may inherit its write end and hold it open.
final class OutputFile: Sendable {
    let url: URL
    let handle: FileHandle

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("ws-test-\(UUID().uuidString).out")
        guard FileManager.default.createFile(atPath: url.path, contents: nil) else {
            throw TestTimeout(what: "a temporary file at \(url.path)")
        }
        handle = try FileHandle(forWritingTo: url)
    }

    /// What the child wrote (call after it exited); removes the file.
    func contents() throws -> String {
        try? handle.close()
        defer { try? FileManager.default.removeItem(at: url) }
        return String(decoding: try Data(contentsOf: url), as: UTF8.self)
    }
}

extension Process {
    /// Waits (at most `seconds`) for the process to exit, without blocking a thread; kills it by
    /// its PID when it does not.
    func exit(within seconds: Double, _ what: String) async throws {
        let pid = processIdentifier
        do {
            try await withTimeout(seconds, what) {
                while self.isRunning { try await Task.sleep(for: .milliseconds(10)) }
            }
        } catch {
            kill(pid, SIGKILL)
            throw error
        }
    }
}
