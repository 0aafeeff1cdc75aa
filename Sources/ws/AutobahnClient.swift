import ArgumentParser
import Dispatch
import NIOCore
import WebSocket

/// `ws autobahn-client`: the standard Autobahn|Testsuite client runner (fuzzingserver mode).
///
/// Asks `URL/getCaseCount`, runs each case through `URL/runCase?case=N&agent=NAME` echoing
/// every message back unchanged, then calls `URL/updateReports?agent=NAME` so the suite writes
/// its reports.
struct AutobahnClient: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "autobahn-client",
        abstract: "Run the Autobahn|Testsuite client cases against a fuzzingserver (echoes every message).")

    @Option(help: "The fuzzingserver's base URL.")
    var url: String = "ws://127.0.0.1:9001"

    @Option(help: "The agent name the cases are reported under.")
    var agent: String = "swift-websocket"

    @Option(help: "The case numbers to run (1-based, over the server's selection): FROM-TO, N, or a comma list of those. Default: all.")
    var cases: String?

    @Option(help: "Skip /getCaseCount and use this count (for resuming a run).")
    var caseCount: Int?

    @Option(help: "The time limit of one case, in seconds.")
    var caseTimeout: Double = 60

    @Flag(inversion: .prefixedNo, help: "Offer permessage-deflate (on by default; needed for cases 12.x and 13.x).")
    var deflate = true

    @Flag(help: "Print only a compact progress line every 50 cases instead of one line per case.")
    var quiet = false

    /// 16 MiB: the largest messages of section 9.x.
    static let limit = 16 * 1024 * 1024

    func validate() throws {
        guard url.hasPrefix("ws://") else { throw ValidationError("--url must be a ws:// URL") }
        guard caseTimeout > 0 else { throw ValidationError("--case-timeout must be positive") }
        if let caseCount, caseCount < 0 { throw ValidationError("--case-count must not be negative") }
        if let cases { _ = try Self.parseCases(cases, count: Int.max) }
    }

    func run() async throws {
        let base = url.hasSuffix("/") ? String(url.dropLast()) : url
        let agentQuery = agent.addingQueryEscapes()
        var configuration = WebSocketClient.Configuration()
        configuration.maxReceivedFrameSize = Self.limit
        configuration.maxReceivedMessageSize = Self.limit
        if deflate { configuration.perMessageDeflate = PerMessageDeflate.Options() }

        let start = DispatchTime.now()
        let count: Int
        do {
            if let caseCount {
                count = caseCount
            } else {
                count = try await fetchCaseCount(configuration: configuration, base: base)
            }
        } catch {
            printLine("autobahn-client: cannot get the case count from \(base)/getCaseCount: \(error)")
            throw ExitCode(2)
        }
        let selected = try Self.parseCases(cases ?? "1-\(count)", count: count)
        printLine("autobahn-client: \(count) cases on \(base)\(caseCount == nil ? "" : " (given)"), running \(selected.count) as agent \"\(agent)\"")

        var timedOut: [Int] = []
        var connectFailed: [Int] = []
        for (index, number) in selected.enumerated() {
            let caseStart = DispatchTime.now()
            let outcome = await runCase(configuration: configuration, url: "\(base)/runCase?case=\(number)&agent=\(agentQuery)")
            let ms = (DispatchTime.now().uptimeNanoseconds - caseStart.uptimeNanoseconds) / 1_000_000
            let line: String
            switch outcome {
            case .closed(let code, let description, let echoed):
                line = "case \(number): closed \(code)\(description.isEmpty ? "" : " \"\(description.prefix(60))\""), \(echoed) messages echoed, \(ms) ms"
            case .timedOut(let echoed):
                timedOut.append(number)
                line = "case \(number): TIMEOUT after \(ms) ms (\(echoed) messages echoed), connection dropped"
            case .connectFailed(let error):
                connectFailed.append(number)
                line = "case \(number): connect failed: \(error)"
            }
            if !quiet {
                printLine(line)
            } else if case .closed = outcome {
                if (index + 1) % 50 == 0 || index + 1 == selected.count {
                    printLine("autobahn-client: \(index + 1)/\(selected.count) cases done (\(Self.seconds(since: start)))")
                }
            } else {
                printLine(line)
            }
        }

        printLine("autobahn-client: \(selected.count) cases run, updating reports")
        do {
            try await updateReports(configuration: configuration, url: "\(base)/updateReports?agent=\(agentQuery)")
        } catch {
            printLine("autobahn-client: updateReports failed: \(error)")
            throw ExitCode(2)
        }
        let problems = (timedOut.isEmpty ? "" : " timed out: \(timedOut.map(String.init).joined(separator: ","));")
            + (connectFailed.isEmpty ? "" : " connect failed: \(connectFailed.map(String.init).joined(separator: ","));")
        printLine("autobahn-client: done, \(selected.count) cases in \(Self.seconds(since: start)),"
            + " \(timedOut.count) timeouts, \(connectFailed.count) connect failures;\(problems) reports updated")
    }

    // MARK: - The three kinds of connection

    private func fetchCaseCount(configuration: WebSocketClient.Configuration, base: String) async throws -> Int {
        let answer = Box<WebSocketMessage>()
        let connection = try await Self.connect(configuration: configuration, url: "\(base)/getCaseCount") { connection in
            connection.onMessage { message in
                answer.setIfEmpty(message)
                try? connection.close()
            }
        }
        let guardTask = Self.bound(connection, seconds: 30)
        try? await connection.socket.closeFuture.get()
        guardTask.cancel()
        guard let message = answer.value else {
            throw ValidationError("getCaseCount closed without an answer (close code \(connection.closeReasonCode))")
        }
        guard let text = message.utf8Data, let count = Int(text.trimmingCharacters(in: " \r\n\t")), count >= 0 else {
            throw ValidationError("getCaseCount answered \(message), not a number")
        }
        return count
    }

    enum CaseOutcome {
        case closed(code: Int, description: String, echoed: Int)
        case timedOut(echoed: Int)
        case connectFailed(any Error)
    }

    private func runCase(configuration: WebSocketClient.Configuration, url: String) async -> CaseOutcome {
        let echoed = Counter()
        let connection: WebSocketConnection
        do {
            connection = try await Self.connect(configuration: configuration, url: url) { connection in
                connection.onMessage { message in
                    echoed.increment()
                    connection.send(message)
                }
            }
        } catch {
            return .connectFailed(error)
        }
        let fired = OnceFlag()
        let guardTask = connection.socket.eventLoop.scheduleTask(in: .nanoseconds(Int64(caseTimeout * 1e9))) {
            fired.set()
            connection.drop(reasonCode: WebSocketCloseReason.goingAway, description: "case timeout", skipCloseFrame: true)
            connection.socket.close(promise: nil)
        }
        // The socket's close future completes exactly once, whoever closes it and whenever.
        try? await connection.socket.closeFuture.get()
        guardTask.cancel()
        if fired.isSet { return .timedOut(echoed: echoed.value) }
        return .closed(code: connection.closeReasonCode, description: connection.closeDescription ?? "", echoed: echoed.value)
    }

    /// Connects with the Node-style API and runs `setup` in the `connect` handler: that runs on
    /// the event loop before the socket is read again, so the listeners are in place before the
    /// frames that came with the handshake are parsed. (After `try await client.connect(url:)`
    /// they can only be attached later: a protocol error among those frames then fails the
    /// connection before the message in front of it can be echoed, which the suite grades
    /// NON-STRICT.)
    private static func connect(
        configuration: WebSocketClient.Configuration, url: String,
        setup: @escaping @Sendable (WebSocketConnection) -> Void
    ) async throws -> WebSocketConnection {
        let client = WebSocketClient(configuration: configuration)
        let once = ResumeOnce()
        return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<WebSocketConnection, any Error>) in
            once.set(continuation)
            client.onConnect { connection in
                setup(connection)
                once.resume(.success(connection))
            }
            client.onConnectFailed { error in once.resume(.failure(error)) }
            client.connect(url)
        }
    }

    private func updateReports(configuration: WebSocketClient.Configuration, url: String) async throws {
        let connection = try await Self.connect(configuration: configuration, url: url) { connection in
            connection.onMessage { _ in }
        }
        let guardTask = Self.bound(connection, seconds: 120)
        try? await connection.socket.closeFuture.get()
        guardTask.cancel()
    }

    /// Closes `connection`'s socket after `seconds` unless cancelled first.
    private static func bound(_ connection: WebSocketConnection, seconds: Int64) -> Scheduled<Void> {
        connection.socket.eventLoop.scheduleTask(in: .seconds(seconds)) {
            connection.drop(reasonCode: WebSocketCloseReason.goingAway, description: "timeout", skipCloseFrame: true)
            connection.socket.close(promise: nil)
        }
    }

    // MARK: - Helpers

    /// Parses `FROM-TO`, `N` and comma lists of them; keeps numbers in 1...count, in order given.
    static func parseCases(_ spec: String, count: Int) throws -> [Int] {
        var result: [Int] = []
        for part in spec.split(separator: ",") {
            let bounds = part.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
                .map { String($0).trimmingCharacters(in: " ") }
            guard let from = Int(bounds[0]), from >= 1 else {
                throw ValidationError("--cases: \"\(part)\" is not N or FROM-TO (1-based)")
            }
            let to: Int
            if bounds.count == 2 {
                guard let value = Int(bounds[1]), value >= from else {
                    throw ValidationError("--cases: \"\(part)\" is not FROM-TO with FROM <= TO")
                }
                to = value
            } else {
                to = from
            }
            if from <= count { result.append(contentsOf: from...min(to, count)) }
        }
        return result
    }

    static func seconds(since start: DispatchTime) -> String {
        let ns = DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds
        let tenths = ns / 100_000_000
        return "\(tenths / 10).\(tenths % 10) s"
    }
}

/// A counter shared with the connection's callbacks (which run on its event loop, one at a time).
private final class Counter: @unchecked Sendable {
    private let lock = DispatchQueue(label: "ws.autobahn.counter")
    private var count = 0
    func increment() { lock.sync { count += 1 } }
    var value: Int { lock.sync { count } }
}

/// One value, set once, shared with the connection's callbacks.
private final class Box<Value: Sendable>: @unchecked Sendable {
    private let lock = DispatchQueue(label: "ws.autobahn.box")
    private var stored: Value?
    func setIfEmpty(_ value: Value) { lock.sync { if stored == nil { stored = value } } }
    var value: Value? { lock.sync { stored } }
}

private final class OnceFlag: @unchecked Sendable {
    private let lock = DispatchQueue(label: "ws.autobahn.flag")
    private var on = false
    func set() { lock.sync { on = true } }
    var isSet: Bool { lock.sync { on } }
}

/// Resumes a continuation once, whichever of `connect` / `connectFailed` comes.
private final class ResumeOnce: @unchecked Sendable {
    private let lock = DispatchQueue(label: "ws.autobahn.once")
    private var continuation: CheckedContinuation<WebSocketConnection, any Error>?
    func set(_ continuation: CheckedContinuation<WebSocketConnection, any Error>) { lock.sync { self.continuation = continuation } }
    func resume(_ result: Result<WebSocketConnection, any Error>) {
        let continuation = lock.sync { () -> CheckedContinuation<WebSocketConnection, any Error>? in
            defer { self.continuation = nil }
            return self.continuation
        }
        continuation?.resume(with: result)
    }
}

extension String {
    /// Trims the given characters (no Foundation needed).
    fileprivate func trimmingCharacters(in set: String) -> String {
        let chars = Set(set)
        var slice = Substring(self)
        while let first = slice.first, chars.contains(first) { slice = slice.dropFirst() }
        while let last = slice.last, chars.contains(last) { slice = slice.dropLast() }
        return String(slice)
    }

    /// Percent-escapes everything but unreserved characters (for a query value).
    fileprivate func addingQueryEscapes() -> String {
        var out = ""
        for byte in utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"),
                 UInt8(ascii: "."), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = Array("0123456789ABCDEF")
                out += "%\(hex[Int(byte >> 4)])\(hex[Int(byte & 0xF)])"
            }
        }
        return out
    }
}
