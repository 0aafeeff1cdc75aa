import Foundation
import Testing

/// The DocC catalog (Sources/WebSocket/WebSocket.docc) is checked against the public API: every
/// symbol link and article link must resolve. Runs `scripts/docs.sh` on the module this test run
/// built; skipped when the toolchain has no `docc`.
@Suite("Documentation")
struct DocumentationTests {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static var docc: String? {
        let swiftBin = ProcessInfo.processInfo.environment["PATH"]?.split(separator: ":")
            .map { URL(fileURLWithPath: String($0)).appendingPathComponent("docc").path }
            .first { FileManager.default.isExecutableFile(atPath: $0) }
        return swiftBin
    }

    @Test("the DocC catalog's links resolve", .enabled(if: docc != nil, "no docc in PATH"))
    func catalogLinksResolve() async throws {
        let buildDirectory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        guard FileManager.default.fileExists(atPath: buildDirectory.appendingPathComponent("Modules/WebSocket.swiftmodule").path) else {
            // Not run from a SwiftPM build directory (an IDE, say): nothing to check against.
            return
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [Self.packageRoot.appendingPathComponent("scripts/docs.sh").path, "--bin-path", buildDirectory.path]
        // The output goes to a file, read once the script has exited (see OutputFile).
        let output = try OutputFile()
        process.standardOutput = output.handle
        process.standardError = output.handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        try await process.exit(within: 300, "scripts/docs.sh")
        let text = try output.contents()
        #expect(process.terminationStatus == 0, "scripts/docs.sh failed:\n\(text)")
    }

    @Test("\"Which async style\" is linked from the catalog's root page and its table has the five styles, their shutdown and their measured speed")
    func whichAsyncStyleArticle() throws {
        let docc = Self.packageRoot.appendingPathComponent("Sources/WebSocket/WebSocket.docc")
        let root = try String(contentsOf: docc.appendingPathComponent("WebSocket.md"), encoding: .utf8)
        #expect(root.contains("- <doc:WhichAsyncStyle>"), "the root page's Topics do not list the article")
        let article = try String(contentsOf: docc.appendingPathComponent("WhichAsyncStyle.md"), encoding: .utf8)
        #expect(article.hasPrefix("# Which async style\n"))
        let rows = article.split(separator: "\n").filter { $0.hasPrefix("| ") && !$0.hasPrefix("| ---") && !$0.hasPrefix("| style") }
        #expect(rows.count == 6, "the callbacks and the five styles: \(rows.count) rows")
        for style in ["accept(protocol:origin:cookies:handler:)", "mount(_:protocol:connectionHandler:)", "run(handlingRequests:)",
            "server.requests", "unstructured `Task`"] {
            #expect(rows.contains { $0.contains(style) }, "no row for \(style)")
        }
        // Each row: what it is for, its shutdown, its speed (four cells).
        for row in rows { #expect(row.split(separator: "|").count == 4, "\(row)") }
        for figure in ["1.01 / 0.92 / 0.81", "0.94 / 0.91 / 0.93", "0.67 / 0.65 / 0.51", "0.13 on W2"] {
            #expect(article.contains(figure), "the measured \(figure) is missing")
        }
    }

    static var swift: String? {
        ProcessInfo.processInfo.environment["PATH"]?.split(separator: ":")
            .map { URL(fileURLWithPath: String($0)).appendingPathComponent("swift").path }
            .first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    @Test(
        "'Your first hour': its shell steps, run with this toolchain's swift package init, leave no @main file beside main.swift",
        .enabled(if: swift != nil, "no swift in PATH"))
    func firstHourShellSteps() async throws {
        let article = try String(
            contentsOf: Self.packageRoot.appendingPathComponent("Sources/WebSocket/WebSocket.docc/YourFirstHour.md"), encoding: .utf8)
        let steps = try #require(article.components(separatedBy: "```sh\n").dropFirst().first?.components(separatedBy: "```").first)
        #expect(steps.contains("swift package init"))
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("ws-first-hour-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = ["-e", "-c", steps]
        process.currentDirectoryURL = work
        let output = try OutputFile()
        process.standardOutput = output.handle
        process.standardError = output.handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        try await process.exit(within: 120, "the first hour's shell steps")
        let log = try output.contents()
        #expect(process.terminationStatus == 0, "the steps failed:\n\(log)")
        let package = work.appendingPathComponent("Chat")
        let sources = package.appendingPathComponent("Sources")
        let left = FileManager.default.enumerator(atPath: sources.path)?.compactMap { $0 as? String }.filter { $0.hasSuffix(".swift") } ?? []
        for file in left {
            let text = try String(contentsOf: sources.appendingPathComponent(file), encoding: .utf8)
            #expect(!text.contains("@main"), "Sources/\(file) still has @main: a main.swift beside it would not compile")
        }
        for folder in ["Chat", "ChatClient"] {
            #expect(FileManager.default.fileExists(atPath: sources.appendingPathComponent(folder).path), "no Sources/\(folder) for its main.swift")
        }
        #expect(!FileManager.default.fileExists(atPath: package.appendingPathComponent("Tests").path))
    }

    @Test("the Metrics article quotes Examples/Metrics/main.swift (compiled as example-metrics) word for word")
    func metricsArticleQuotesTheExample() throws {
        let article = try String(
            contentsOf: Self.packageRoot.appendingPathComponent("Sources/WebSocket/WebSocket.docc/Metrics.md"), encoding: .utf8)
        let blocks = article.components(separatedBy: "```swift\n").dropFirst().compactMap { $0.components(separatedBy: "```").first }
        let source = try String(contentsOf: Self.packageRoot.appendingPathComponent("Examples/Metrics/main.swift"), encoding: .utf8)
        let program = source.split(separator: "\n", omittingEmptySubsequences: false).drop { $0.hasPrefix("//") }.joined(separator: "\n")
        #expect(blocks.contains(program))
    }
}
