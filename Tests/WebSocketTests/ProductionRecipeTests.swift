import Foundation
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

import WebSocket

/// The production service of the article "Which async style", run as written (but for its port,
/// 0 here, read back from its log): compiled from the Markdown and linked like the snippet
/// tests' run blocks, then driven as a client would and stopped with SIGINT.
@Suite("The production recipe")
struct ProductionRecipeTests {
    static let article = "Sources/WebSocket/WebSocket.docc/WhichAsyncStyle.md"

    /// The line of the recipe that bootstraps the metrics backend.
    static let bootstrap = "MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))"

    @Test(
        "the recipe, without its metrics bootstrap: /feed (topics, subscribe messages, origin and subprotocol checks), /echo and /metrics on one port, SIGINT gives 1001 and exit 0",
        .enabled(if: SnippetTests.swiftc != nil, "no swiftc in PATH"))
    func recipeRunsWithoutMetrics() async throws {
        try await runRecipe(metrics: false)
    }

    @Test(
        "the recipe as written, metrics bootstrapped: accept off the event loop with metrics on (once a trap, issue 34) serves every route",
        .enabled(if: SnippetTests.swiftc != nil, "no swiftc in PATH"))
    func recipeRunsAsWritten() async throws {
        // As written: with metrics on (this crashed before issue 34 item 1 was fixed).
        try await runRecipe(metrics: true)
    }

    private func runRecipe(metrics: Bool) async throws {
        #if os(Linux)
        let buildDirectory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().resolvingSymlinksInPath()
        guard FileManager.default.fileExists(atPath: buildDirectory.appendingPathComponent("Modules/WebSocket.swiftmodule").path) else {
            print("recipe: not run: no WebSocket.swiftmodule beside the test binary")
            return
        }
        let text = try String(contentsOf: SnippetTests.packageRoot.appendingPathComponent(Self.article), encoding: .utf8)
        let block = try #require(
            try SnippetTests.blocks(in: text, file: Self.article).first { $0.code.contains("func publishUpdates") },
            "no recipe block in \(Self.article)")
        #expect(block.code.components(separatedBy: "port: 8080").count == 2, "the recipe should listen on port 8080, once")
        #expect(block.code.contains(Self.bootstrap))
        var code = block.code.replacingOccurrences(of: "port: 8080", with: "port: 0")
        if !metrics { code = code.replacingOccurrences(of: Self.bootstrap, with: "") }

        // Compiled and linked as SnippetTests links a run block that imports Prometheus.
        let swiftc = try #require(SnippetTests.swiftc)
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("ws-recipe-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        let source = work.appendingPathComponent("main.swift")
        try (code + "\n").write(to: source, atomically: true, encoding: .utf8)
        let flags = try SnippetTests.compilerFlags(buildDirectory: buildDirectory)
        let sanitize = ProcessInfo.processInfo.environment["WS_SANITIZER"].map { ["-sanitize=\($0)"] } ?? []
        let moduleCache = ["-module-cache-path", work.appendingPathComponent("ModuleCache").path]
        let object = work.appendingPathComponent("main.o").path
        let (compiled, compileOutput) = try await SnippetTests.run(
            swiftc, ["-c", "-swift-version", "6", "-Onone"] + sanitize + moduleCache + flags + [source.path, "-o", object], within: 180,
            "compiling the recipe")
        try #require(compiled == 0, "the recipe does not compile:\n\(compileOutput)")
        let product = "example-metrics"
        let list = try String(contentsOf: buildDirectory.appendingPathComponent("\(product).product/Objects.LinkFileList"), encoding: .utf8)
        let objectList = work.appendingPathComponent("objects.list")
        try list.split(separator: "\n").filter { !$0.contains("/example_metrics.build/") }.joined(separator: "\n")
            .write(to: objectList, atomically: true, encoding: .utf8)
        let executable = work.appendingPathComponent("dashboard").path
        let (linked, linkOutput) = try await SnippetTests.run(
            swiftc, ["-lstdc++", "-lz"] + sanitize + ["-o", executable, object, "@\(objectList.path)"], within: 180, "linking the recipe")
        try #require(linked == 0, "the recipe does not link:\n\(linkOutput)")

        // Run it; its log says the port.
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        let output = try OutputFile()
        process.standardOutput = output.handle
        process.standardError = output.handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        let logURL = output.url
        let log: @Sendable () -> String = { String(decoding: (try? Data(contentsOf: logURL)) ?? Data(), as: UTF8.self) }
        let port = try await withTimeout(30, "the recipe's 'listening' line") { () -> Int in
            while true {
                if let line = log().split(separator: "\n").first(where: { $0.contains("WebSocket server listening") }),
                    let port = line.split(separator: " ").first(where: { $0.hasPrefix("address=") })?.split(separator: ":").last
                        .flatMap({ Int($0) })
                {
                    return port
                }
                guard process.isRunning else { throw TestTimeout(what: "the recipe, which exited:\n\(log())") }
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        let base = "ws://127.0.0.1:\(port)"
        let client = WebSocketClient()

        // The feed: the query's topic, then one subscribed by a message.
        let feed = try await client.connect(url: "\(base)/feed?topic=cpu", protocols: ["dash.v1"])
        #expect(feed.protocol == "dash.v1")
        let closed = Expectation<Int>()
        feed.onClose { code, _ in closed.fulfill(code) }
        let updates = Expectation<String>()
        feed.onMessage { updates.fulfill($0.utf8Data ?? "") }
        #expect(try await updates.value(10, "an update of cpu").hasPrefix(#"{"topic":"cpu","tick":"#))
        feed.sendUTF("subscribe mem")
        try await withTimeout(10, "an update of mem") {
            while !(try await updates.value(10, "an update").hasPrefix(#"{"topic":"mem""#)) {}
        }
        feed.sendUTF("what?")
        try await withTimeout(10, "the answer to an unknown command") {
            while try await updates.value(10, "a message") != #"{"error":"unknown command"}"# {}
        }

        // The echo, the refusals.
        let echo = try await client.connect(url: "\(base)/echo")
        try await echo.write("hello")
        for try await message in echo.messages {
            #expect(message == .utf8("hello"))
            break
        }
        try await echo.close(code: .normal)
        for (url, protocols, origin, status) in [
            ("\(base)/feed", ["dash.v1"], "https://elsewhere.example", 403), ("\(base)/feed", [], nil, 400),
            ("\(base)/other", [], nil, 404),
        ] as [(String, [String], String?, Int)] {
            let refusal = await #expect(throws: WebSocketError.self) {
                _ = try await client.connect(url: url, protocols: protocols, origin: origin)
            }
            #expect(refusal?.response?.statusCode == status, "\(url) \(protocols) \(origin ?? "no origin")")
        }

        // Plain HTTP on the same port.
        let (body, response) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)/metrics")!)
        #expect((response as? HTTPURLResponse)?.statusCode == 200)
        let exposition = String(decoding: body, as: UTF8.self)
        if metrics {
            #expect(exposition.contains("websocket_handshakes_accepted_total 2"), "\(exposition)")
            #expect(exposition.contains(#"websocket_handshakes_refused_total{status="403"} 1"#), "\(exposition)")
        }

        // SIGINT: 1001 to the feed, the handler's code after its loop runs, exit 0.
        kill(process.processIdentifier, SIGINT)
        #expect(try await closed.value(15, "the feed's close") == 1001)
        try await process.exit(within: 30, "the recipe to exit after SIGINT")
        let finalLog = try output.contents()
        #expect(process.terminationStatus == 0, "exit \(process.terminationStatus):\n\(finalLog)")
        #expect(finalLog.contains("feed opened") && finalLog.contains("feed closed"), "\(finalLog)")
        #expect(finalLog.split(separator: "\n").contains { $0.contains("feed closed") && $0.contains("code=1001") }, "\(finalLog)")
        #else
        print("recipe: run on Linux only (its objects are linked as the snippet tests' are)")
        #endif
    }
}
