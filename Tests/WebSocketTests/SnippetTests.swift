import Foundation
import Testing

/// Every ```swift block of README.md and of the DocC articles (Sources/WebSocket/WebSocket.docc)
/// compiles as written: each is read from the Markdown, written alone as a `main.swift` (top-level
/// code) and type-checked by `swiftc` against the modules this test run already built, so no
/// copy of a snippet lives in the tests and the library is not built a second time.
///
/// A comment on the line before a block says what else to do with it:
/// - `<!-- snippet: fragment (why) -->`: not a program (a signature, lines of a larger file):
///   skipped, with the reason printed. Keep them few.
/// - `<!-- snippet: run -->`, optionally followed by `, prints "text"` (any number of times): also
///   linked against the objects of the build (the `example-echo-server` product's, less its own
///   `main`) and run, with a time limit; it must exit with 0 and print each text. Only blocks that
///   end by themselves and use 127.0.0.1 with a port the system picks.
///
/// Blocks that import Hummingbird or Vapor are skipped too: they are the programs of the
/// Integrations/ package (targets ArticleHummingbird and ArticleVapor), compiled there, and
/// Integrations' ArticleTests check that the article quotes them word for word. A block whose
/// first line is `// swift-tools-version` is a manifest: type-checked against the toolchain's
/// PackageDescription. Warnings are errors: `try await connection.send(…)`, which silently picks
/// the synchronous overload, fails here.
@Suite("Snippets")
struct SnippetTests {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static var swiftc: String? {
        ProcessInfo.processInfo.environment["PATH"]?.split(separator: ":")
            .map { URL(fileURLWithPath: String($0)).appendingPathComponent("swiftc").path }
            .first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    enum Kind: Equatable, Sendable {
        case compile
        case run(prints: [String])
        case fragment(String)
        case integrations
    }

    struct Block: Sendable {
        let file: String  // relative to the package root
        let fenceLine: Int  // 1-based line of the opening fence
        let code: String
        let kind: Kind
        var location: String { "\(file):\(fenceLine)" }
        var isManifest: Bool { code.hasPrefix("// swift-tools-version") }
    }

    struct MarkerError: Error, CustomStringConvertible {
        let description: String
    }

    /// The ```swift blocks of `text`, each with what its marker comment says.
    static func blocks(in text: String, file: String) throws -> [Block] {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var blocks: [Block] = []
        var index = 0
        while index < lines.count {
            let opening = lines[index]
            let trimmed = opening.trimmingCharacters(in: .whitespaces)
            guard trimmed.hasPrefix("```") else {
                index += 1
                continue
            }
            let indent = opening.prefix { $0 == " " }.count
            var end = index + 1
            while end < lines.count, !lines[end].trimmingCharacters(in: .whitespaces).hasPrefix("```") { end += 1 }
            defer { index = end + 1 }
            guard trimmed == "```swift" else { continue }
            let code = lines[(index + 1)..<min(end, lines.count)]
                .map { $0.prefix(indent).allSatisfy { $0 == " " } ? String($0.dropFirst(min(indent, $0.count))) : $0 }
                .joined(separator: "\n")
            var previous = index - 1
            while previous >= 0, lines[previous].trimmingCharacters(in: .whitespaces).isEmpty { previous -= 1 }
            let marker = previous >= 0 ? lines[previous].trimmingCharacters(in: .whitespaces) : ""
            var kind = try Self.kind(of: marker, at: "\(file):\(previous + 1)")
            let imports = code.split(separator: "\n").filter { $0.hasPrefix("import ") }
            if kind == .compile, imports.contains(where: { $0.contains("Hummingbird") || $0.contains("Vapor") }) {
                kind = .integrations
            }
            blocks.append(Block(file: file, fenceLine: index + 1, code: code, kind: kind))
        }
        return blocks
    }

    static func kind(of marker: String, at location: String) throws -> Kind {
        guard marker.hasPrefix("<!-- snippet:") else { return .compile }
        guard marker.hasSuffix("-->") else { throw MarkerError(description: "\(location): a snippet marker ends with -->") }
        let body = marker.dropFirst("<!-- snippet:".count).dropLast("-->".count).trimmingCharacters(in: .whitespaces)
        if body.hasPrefix("fragment (") && body.hasSuffix(")") {
            return .fragment(String(body.dropFirst("fragment (".count).dropLast()))
        }
        let malformed = MarkerError(
            description: "\(location): unknown snippet marker \"\(marker)\" (fragment (why), or run then any number of , prints \"text\")")
        guard body.hasPrefix("run") else { throw malformed }
        var rest = Substring(body.dropFirst("run".count))
        var prints: [String] = []
        while !rest.isEmpty {
            rest = rest.drop { $0 == " " }
            guard rest.hasPrefix(",") else { throw malformed }
            rest = rest.dropFirst().drop { $0 == " " }
            guard rest.hasPrefix("prints \"") else { throw malformed }
            rest = rest.dropFirst("prints \"".count)
            guard let quote = rest.firstIndex(of: "\"") else { throw malformed }
            prints.append(String(rest[..<quote]))
            rest = rest[rest.index(after: quote)...].drop { $0 == " " }
        }
        return .run(prints: prints)
    }

    static func documents() throws -> [(file: String, text: String)] {
        let docc = "Sources/WebSocket/WebSocket.docc"
        let articles = try FileManager.default.contentsOfDirectory(atPath: packageRoot.appendingPathComponent(docc).path)
            .filter { $0.hasSuffix(".md") }.sorted().map { "\(docc)/\($0)" }
        return try (["README.md"] + articles).map {
            ($0, try String(contentsOf: packageRoot.appendingPathComponent($0), encoding: .utf8))
        }
    }

    @Test("the extractor reads blocks, markers and indentation")
    func extractor() throws {
        let text = """
            Intro.

            ```swift
            import WebSocket
            ```

            <!-- snippet: fragment (a signature) -->
            ```swift
            f(x: Int)
            ```
            ```sh
            swift build
            ```
            - In a list:

              <!-- snippet: run, prints "a", prints "b, c" -->
              ```swift
              print("a")
                print("b, c")
              ```

            ```swift
            import Vapor
            ```
            """
        let blocks = try Self.blocks(in: text, file: "T.md")
        #expect(blocks.map(\.kind) == [.compile, .fragment("a signature"), .run(prints: ["a", "b, c"]), .integrations])
        #expect(blocks.map(\.fenceLine) == [3, 8, 17, 22])
        #expect(blocks[2].code == "print(\"a\")\n  print(\"b, c\")")
        #expect(throws: MarkerError.self) { try Self.blocks(in: "<!-- snippet: fragmnet -->\n```swift\n```", file: "T.md") }
    }

    @Test(
        "every Swift block of README.md and the DocC articles compiles; the run blocks run",
        .enabled(if: swiftc != nil, "no swiftc in PATH: the documentation's Swift blocks are not compiled"))
    func snippetsCompile() async throws {
        let started = ContinuousClock.now
        let buildDirectory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().resolvingSymlinksInPath()
        let modules = buildDirectory.appendingPathComponent("Modules")
        guard FileManager.default.fileExists(atPath: modules.appendingPathComponent("WebSocket.swiftmodule").path) else {
            // Not run from a SwiftPM build directory (an IDE, say): no modules to compile against.
            print("snippets: not compiled: no \(modules.path)/WebSocket.swiftmodule")
            return
        }
        let swiftc = try #require(Self.swiftc)
        let blocks = try Self.documents().flatMap { try Self.blocks(in: $0.text, file: $0.file) }
        let flags = try Self.compilerFlags(buildDirectory: buildDirectory)
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("ws-snippets-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        let moduleCache = ["-module-cache-path", work.appendingPathComponent("ModuleCache").path]
        let manifestAPI = URL(fileURLWithPath: swiftc).resolvingSymlinksInPath().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("lib/swift/pm/ManifestAPI")

        // A manifest needs the toolchain's PackageDescription (not beside an `xcrun` shim, say).
        let hasManifestAPI = FileManager.default.fileExists(atPath: manifestAPI.appendingPathComponent("PackageDescription.swiftmodule").path)
        let skippedManifests = hasManifestAPI ? [] : blocks.filter(\.isManifest).map(\.location)

        // Type-check, two at a time (the project's machines have two cores).
        let toCheck = blocks.enumerated().filter {
            ($0.element.kind == .compile || Self.isRun($0.element)) && (hasManifestAPI || !$0.element.isManifest)
        }
        var failures: [String] = []
        try await withThrowingTaskGroup(of: String?.self) { group in
            var pending = toCheck.makeIterator()
            func addNext() -> Bool {
                guard let (number, block) = pending.next() else { return false }
                let directory = work.appendingPathComponent("\(number)")
                group.addTask {
                    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
                    let file = directory.appendingPathComponent(block.isManifest ? "Package.swift" : "main.swift")
                    try (block.code + "\n").write(to: file, atomically: true, encoding: .utf8)
                    var arguments = ["-typecheck", "-swift-version", "6", "-warnings-as-errors"] + moduleCache
                    if block.isManifest {
                        // `// swift-tools-version:6.0` (or `: 6.0`, `:6.0;…`): that version's API.
                        let version = block.code.prefix { $0 != "\n" }.split(separator: ":").last?
                            .prefix { $0 != ";" }.trimmingCharacters(in: .whitespaces) ?? "6.0"
                        arguments += ["-I", manifestAPI.path, "-package-description-version", version]
                    } else {
                        arguments += flags
                    }
                    let (status, output) = try await Self.run(swiftc, arguments + [file.path], within: 180, "swiftc -typecheck \(block.location)")
                    return status == 0 ? nil : "\(block.location) does not compile:\n\(Self.relocate(output, block))"
                }
                return true
            }
            for _ in 0..<2 { _ = addNext() }
            while let result = try await group.next() {
                if let failure = result { failures.append(failure) }
                _ = addNext()
            }
        }
        for failure in failures { Issue.record(Comment(rawValue: failure)) }

        // Run the `run` blocks that compiled.
        let typeChecked = ContinuousClock.now
        var ran = 0
        let runnable = blocks.filter { block in Self.isRun(block) && !failures.contains { $0.hasPrefix(block.location + " ") } }
        if !runnable.isEmpty {
            #if os(Linux)
            // Under scripts/sanitizers.sh the build's objects are instrumented: so is the snippet.
            let sanitize = ProcessInfo.processInfo.environment["WS_SANITIZER"].map { ["-sanitize=\($0)"] } ?? []
            for block in runnable {
                guard case .run(let prints) = block.kind else { continue }
                // The objects a product of the build that imports what the block imports was
                // linked from (WebSocket and what it uses), less that product's own.
                let product = Self.linkProduct(for: block)
                let list = buildDirectory.appendingPathComponent("\(product).product/Objects.LinkFileList")
                let objects = try #require(
                    try? String(contentsOf: list, encoding: .utf8), "no \(list.path): \(block.location) cannot be linked").split(separator: "\n")
                    .filter { !$0.contains("/\(product.replacingOccurrences(of: "-", with: "_")).build/") }.joined(separator: "\n")
                let objectList = work.appendingPathComponent("objects-\(product).list")
                try objects.write(to: objectList, atomically: true, encoding: .utf8)
                let directory = work.appendingPathComponent("run-\(ran)")
                try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
                let source = directory.appendingPathComponent("main.swift")
                try (block.code + "\n").write(to: source, atomically: true, encoding: .utf8)
                let object = directory.appendingPathComponent("main.o").path
                let executable = directory.appendingPathComponent("snippet").path
                let (compiled, compileOutput) = try await Self.run(
                    swiftc, ["-c", "-swift-version", "6", "-Onone"] + sanitize + moduleCache + flags + [source.path, "-o", object],
                    within: 180, "swiftc -c \(block.location)")
                guard compiled == 0 else {
                    Issue.record("\(block.location) does not compile to an object:\n\(Self.relocate(compileOutput, block))")
                    continue
                }
                let (linked, linkOutput) = try await Self.run(
                    swiftc, ["-lstdc++", "-lz"] + sanitize + ["-o", executable, object, "@\(objectList.path)"], within: 180, "linking \(block.location)")
                guard linked == 0 else {
                    Issue.record("\(block.location) does not link:\n\(linkOutput)")
                    continue
                }
                let (status, output) = try await Self.run(executable, [], within: 30, "running \(block.location)")
                #expect(status == 0, "\(block.location) exited with \(status):\n\(output)")
                for text in prints {
                    #expect(output.contains(text), "\(block.location) did not print \"\(text)\":\n\(output)")
                }
                ran += 1
            }
            #else
            print("snippets: the run blocks are only compiled here: linking them is done on Linux")
            #endif
        }

        var fragments = 0
        var integrations = 0
        for block in blocks {
            switch block.kind {
            case .fragment(let why):
                fragments += 1
                print("snippets: skipped \(block.location): fragment (\(why))")
            case .integrations:
                integrations += 1
                print("snippets: skipped \(block.location): imports Hummingbird or Vapor; compiled by Integrations/ (ArticleHummingbird, ArticleVapor), whose ArticleTests check the article quotes it")
            case .compile, .run: break
            }
        }
        for location in skippedManifests {
            print("snippets: skipped \(location): a manifest, and no PackageDescription module next to \(swiftc)")
        }
        let compiled = toCheck.count - failures.count
        print("snippets: \(compiled) compiled, \(ran) ran, \(fragments + integrations) fragments skipped (\(fragments) marked, \(integrations) Hummingbird/Vapor programs compiled in Integrations/); type-checking \(typeChecked - started), linking and running \(ContinuousClock.now - typeChecked)")
        // The skipped must stay few, and the extractor must keep finding the blocks.
        #expect(fragments <= 12, "\(fragments) blocks are marked as fragments: make them whole programs")
        #expect(toCheck.count >= 40, "only \(toCheck.count) Swift blocks found to compile")
        #expect(blocks.contains { Self.isRun($0) }, "no block is marked <!-- snippet: run -->")
    }

    // MARK: Which forms are async

    /// A call the documentation says is `async`: an inline code span `try await …` of README.md
    /// or an article, as the Swift statement that checks it.
    struct AsyncForm: Sendable {
        let location: String
        let span: String
        let statement: String
    }

    /// Sample arguments for a form written as a selector (`write(_:)`, `close(code:reason:)`),
    /// by method and label.
    static let sampleArguments: [String: String] = [
        "write _": "text", "roundTrip _": "buffer", "url": "\"ws://127.0.0.1:1/\"", "code": ".normal",
        "reason": "\"bye\"", "protocols": "[]",
    ]

    /// Every inline `try await …` span of `text`, as a statement for a function that has
    /// `connection`, `client`, `text`, `string`, `buffer`, `message` and `url` (a span without a
    /// receiver is about a connection); nil statement for a span this cannot read.
    static func asyncForms(in text: String, file: String) -> [(location: String, span: String, statement: String?)] {
        var forms: [(String, String, String?)] = []
        var inBlock = false
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            if line.trimmingCharacters(in: .whitespaces).hasPrefix("```") { inBlock.toggle() }
            guard !inBlock else { continue }
            let spans = line.split(separator: "`", omittingEmptySubsequences: false).enumerated().filter { $0.offset % 2 == 1 }.map(\.element)
            for span in spans where span.hasPrefix("try await ") && span.count > "try await ".count {
                forms.append(("\(file):\(number + 1)", String(span), statement(for: String(span.dropFirst("try await ".count)))))
            }
        }
        return forms
    }

    /// `connection.write(_:)` as `_ = try await connection.write(text)`; a call with arguments
    /// as written (`…` dropped).
    static func statement(for expression: String) -> String? {
        guard let open = expression.firstIndex(of: "("), expression.hasSuffix(")") else { return nil }
        var callee = String(expression[..<open])
        if !callee.contains(".") { callee = "connection." + callee }
        let method = callee.split(separator: ".").last.map(String.init) ?? callee
        let inside = expression[expression.index(after: open)..<expression.index(before: expression.endIndex)]
            .replacingOccurrences(of: "…", with: "")
        let isSelector = inside.isEmpty || inside.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" || $0 == ":" } && inside.hasSuffix(":")
        guard isSelector else { return "_ = try await \(callee)(\(inside))" }
        var arguments: [String] = []
        for label in inside.split(separator: ":").map(String.init) {
            guard let value = sampleArguments["\(method) \(label)"] ?? sampleArguments[label] else { return nil }
            arguments.append(label == "_" ? value : "\(label): \(value)")
        }
        return "_ = try await \(callee)(\(arguments.joined(separator: ", ")))"
    }

    /// The Node-style forms, which the documentation says are not `async`: called without
    /// `await` in an `async` function, each is an error if it ever becomes `async`.
    static let nodeForms = [
        "connection.sendUTF(text)", "connection.sendBytes(buffer)", "connection.sendBytes([1, 2, 3])", "connection.send(message)",
        "connection.send(string)", "connection.send(buffer)", "try connection.ping(buffer)", "try connection.ping(string)",
        "try connection.pong(buffer)", "try connection.close(reasonCode: 1000)", "try connection.close(reasonCode: .normal)",
        "client.connect(url)",
    ]

    @Test("the async extractor reads selectors, calls and spans without a receiver")
    func asyncFormExtractor() {
        let forms = Self.asyncForms(
            in: "a `try await connection.write(_:)`, `try await roundTrip()`, `try await client.connect(url:…)`,\n"
                + "`try await close(code: .normal)` and `try await` ``X``\n```swift\n`try await x()`\n```", file: "T.md")
        #expect(forms.map(\.statement) == [
            "_ = try await connection.write(text)", "_ = try await connection.roundTrip()",
            "_ = try await client.connect(url: \"ws://127.0.0.1:1/\")", "_ = try await connection.close(code: .normal)",
        ])
        #expect(forms.map(\.location) == ["T.md:1", "T.md:1", "T.md:1", "T.md:2"])
    }

    @Test(
        "every form README.md and the articles call async (`try await …`) is async, and the Node forms are not: compiled with warnings as errors",
        .enabled(if: swiftc != nil, "no swiftc in PATH"))
    func documentedAsyncFormsAreAsync() async throws {
        let buildDirectory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().resolvingSymlinksInPath()
        guard FileManager.default.fileExists(atPath: buildDirectory.appendingPathComponent("Modules/WebSocket.swiftmodule").path) else {
            print("async forms: not compiled: no WebSocket.swiftmodule beside the test binary")
            return
        }
        let swiftc = try #require(Self.swiftc)
        let found = try Self.documents().flatMap { Self.asyncForms(in: $0.text, file: $0.file) }
        for form in found where form.statement == nil {
            Issue.record("\(form.location): cannot read `\(form.span)` as a call: write it as a call or a selector, or add its label to SnippetTests.sampleArguments")
        }
        let forms = found.compactMap { form in form.statement.map { AsyncForm(location: form.location, span: form.span, statement: $0) } }
        // The four async forms the README names must keep being found.
        for name in ["connection.write(", "connection.close(code:", "connection.roundTrip(", "client.connect(url:"] {
            #expect(forms.contains { $0.statement.contains(name) }, "no documented `try await \(name)…` found")
        }
        var lines = [
            "import WebSocket", "",
            "func documentedForms(connection: WebSocketConnection, client: WebSocketClient, text: String, string: String,",
            "                     buffer: ByteBuffer, message: WebSocketMessage, url: String) async throws {",
        ]
        var locations: [Int: String] = [:]
        for form in forms {
            lines.append("    " + form.statement)
            locations[lines.count] = "\(form.location) (`\(form.span)`)"
        }
        for form in Self.nodeForms {
            lines.append("    " + form)
            locations[lines.count] = "the Node form `\(form)` (SnippetTests.nodeForms), documented as not async"
        }
        lines.append("}")
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("ws-async-forms-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        let file = work.appendingPathComponent("main.swift")
        try lines.joined(separator: "\n").appending("\n").write(to: file, atomically: true, encoding: .utf8)
        let arguments = ["-typecheck", "-swift-version", "6", "-warnings-as-errors", "-module-cache-path", work.appendingPathComponent("ModuleCache").path]
            + (try Self.compilerFlags(buildDirectory: buildDirectory)) + [file.path]
        let (status, output) = try await Self.run(swiftc, arguments, within: 180, "swiftc -typecheck (documented async forms)")
        let explained = output.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
            guard let range = line.range(of: "main.swift:"), let number = Int(line[range.upperBound...].prefix { $0.isNumber }),
                let location = locations[number]
            else { return String(line) }
            return "\(location): \(line)"
        }.joined(separator: "\n")
        #expect(status == 0, "the documentation and the compiler disagree on which forms are async:\n\(explained)")
        print("async forms: \(forms.count) documented `try await` spans and \(Self.nodeForms.count) Node forms checked")
    }

    /// The product whose objects a run block is linked with: `example-metrics` (WebSocket,
    /// swift-metrics, swift-prometheus, ServiceLifecycle) for a block that imports Metrics or
    /// Prometheus, else `example-echo-server` (WebSocket and its dependencies).
    static func linkProduct(for block: Block) -> String {
        let imports = block.code.split(separator: "\n").filter { $0.hasPrefix("import ") }.map { $0.dropFirst("import ".count) }
        return imports.contains { $0.hasPrefix("Metrics") || $0.hasPrefix("Prometheus") } ? "example-metrics" : "example-echo-server"
    }

    static func isRun(_ block: Block) -> Bool {
        if case .run = block.kind { return true }
        return false
    }

    /// What a `main.swift` of this build needs to import the package's modules: the modules
    /// directory, and the module maps of the C targets (generated under the build directory, or
    /// the packages' own under their checkouts' `Sources/*/include`).
    static func compilerFlags(buildDirectory: URL) throws -> [String] {
        let fileManager = FileManager.default
        var maps = try fileManager.contentsOfDirectory(atPath: buildDirectory.path).filter { $0.hasSuffix(".build") }
            .map { buildDirectory.appendingPathComponent($0).appendingPathComponent("module.modulemap").path }
        // The checkouts are beside the triple's directory: <scratch>/checkouts, <scratch>/<triple>/debug.
        var scratch = buildDirectory
        for _ in 0..<3 where !fileManager.fileExists(atPath: scratch.appendingPathComponent("checkouts").path) {
            scratch = scratch.deletingLastPathComponent()
        }
        let checkouts = scratch.appendingPathComponent("checkouts")
        for package in (try? fileManager.contentsOfDirectory(atPath: checkouts.path)) ?? [] {
            let sources = checkouts.appendingPathComponent(package).appendingPathComponent("Sources")
            for target in (try? fileManager.contentsOfDirectory(atPath: sources.path)) ?? [] {
                maps.append(sources.appendingPathComponent(target).appendingPathComponent("include/module.modulemap").path)
            }
        }
        return ["-I", buildDirectory.appendingPathComponent("Modules").path]
            + maps.filter { fileManager.fileExists(atPath: $0) }.sorted().flatMap { ["-Xcc", "-fmodule-map-file=\($0)"] }
    }

    /// `main.swift:7:3: error` as `README.md:122:3: error` (the block's own line in the Markdown).
    static func relocate(_ output: String, _ block: Block) -> String {
        output.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
            guard let range = line.range(of: block.isManifest ? "Package.swift:" : "main.swift:") else { return String(line) }
            let rest = line[range.upperBound...]
            let digits = rest.prefix { $0.isNumber }
            guard let number = Int(digits) else { return String(line) }
            return "\(block.file):\(number + block.fenceLine)" + rest.dropFirst(digits.count)
        }.joined(separator: "\n")
    }

    /// Runs `executable` (at most `seconds`), its output in a file; returns its status and output.
    static func run(_ executable: String, _ arguments: [String], within seconds: Double, _ what: String) async throws -> (Int32, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let output = try OutputFile()
        process.standardOutput = output.handle
        process.standardError = output.handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        try await process.exit(within: seconds, what)
        return (process.terminationStatus, try output.contents())
    }
}
