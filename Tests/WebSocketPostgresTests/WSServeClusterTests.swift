import Foundation
import NIOConcurrencyHelpers
import NIOCore
import Testing
import WebSocket

/// `ws serve --cluster`: three processes on one throwaway PostgreSQL, our clients over
/// 127.0.0.1; one node killed with SIGKILL.
@Suite("ws serve --cluster", .serialized, .timeLimit(.minutes(3)), .enabled(if: ThrowawayPostgres.isInstalled, "PostgreSQL 15 is not installed"))
struct WSServeClusterTests {
    /// A `ws serve` process, its output in a file, killed by its PID.
    final class Node: Sendable {
        let pid: pid_t
        let port: Int
        let output: String

        static var binary: String {
            URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("ws").path
        }

        init(_ name: String, cluster: String) async throws {
            guard FileManager.default.isExecutableFile(atPath: Self.binary) else {
                throw PostgresTestError("the ws executable is not built at \(Self.binary); run `swift build` first")
            }
            output = FileManager.default.temporaryDirectory.appendingPathComponent("ws-serve-\(name)-\(UUID().uuidString.prefix(8)).log").path
            pid = try ThrowawayPostgres.spawn(
                [Self.binary, "serve", "--port", "0", "--quiet", "--cluster", cluster, "--node", name], output: output)
            var found: Int?
            let deadline = ContinuousClock.now + .seconds(30)
            while found == nil {
                let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
                if let line = text.split(separator: "\n").first(where: { $0.hasPrefix("ws serve: listening on") }) {
                    found = line.split(separator: ":").compactMap { Int($0.prefix(while: \.isNumber)) }.last
                } else if text.contains("ws serve:") && !text.contains("listening") && Self.exited(pid) {
                    throw PostgresTestError("ws serve \(name) ended: \(text)")
                }
                guard ContinuousClock.now < deadline else {
                    kill(pid, SIGKILL)
                    throw PostgresTestError("ws serve \(name) printed no listening line: \(text)")
                }
                if found == nil { try await Task.sleep(for: .milliseconds(10)) }
            }
            port = found!
        }

        static func exited(_ pid: pid_t) -> Bool {
            var status: Int32 = 0
            return waitpid(pid, &status, WNOHANG) == pid
        }

        func kill9() {
            kill(pid, SIGKILL)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }

        func stop() {
            kill(pid, SIGTERM)
            var status: Int32 = 0
            let deadline = ContinuousClock.now + .seconds(10)
            while waitpid(pid, &status, WNOHANG) == 0 {
                if ContinuousClock.now > deadline { kill9(); break }
                usleep(10_000)
            }
            try? FileManager.default.removeItem(atPath: output)
        }
    }

    /// Texts a connection (or a reconnecting client's connections) received.
    final class Heard: Sendable {
        private let texts = NIOLockedValueBox<[String]>([])
        func append(_ message: WebSocketMessage) {
            if case .utf8(let text) = message { texts.withLockedValue { $0.append(text) } }
        }
        var all: [String] { texts.withLockedValue { $0 } }
    }

    @Test("three nodes: /broadcast and /chat span them; node 1 killed with SIGKILL, the others go on, and its client reconnects to node 2 and receives what is published after")
    func nodeKilled() async throws {
        let postgres = try await ThrowawayPostgres.start()
        defer { postgres.destroy() }
        var started: [Node] = []
        defer { for node in started { node.stop() } }
        for name in ["n1", "n2", "n3"] { started.append(try await Node(name, cluster: postgres.url)) }
        let nodes = started
        let url = { (node: Node, path: String) in "ws://127.0.0.1:\(node.port)\(path)" }

        // A subscriber on node 1 that reconnects to node 2, then 3.
        var configuration = WebSocketClient.Configuration()
        configuration.reconnect = WebSocketClient.ReconnectPolicy(
            urls: [url(nodes[1], "/broadcast"), url(nodes[2], "/broadcast")],
            initialDelay: .milliseconds(50), maxDelay: .milliseconds(500), maxAttempts: 20)
        let roaming = WebSocketClient(configuration: configuration)
        let roamingHeard = Heard()
        let connects = NIOLockedValueBox<[Int]>([])
        roaming.onConnect { connection in
            connects.withLockedValue { $0.append(connection.socket.remoteAddress?.port ?? 0) }
            connection.onMessage { roamingHeard.append($0) }
        }
        let reconnected = NIOLockedValueBox(false)
        _ = roaming.onReconnected { _ in reconnected.withLockedValue { $0 = true } }
        roaming.connect(url(nodes[0], "/broadcast"))
        let steady = try await WebSocketClient().connect(url: url(nodes[2], "/broadcast"))
        let steadyHeard = Heard()
        steady.onMessage { steadyHeard.append($0) }
        let publisher = try await WebSocketClient().connect(url: url(nodes[1], "/broadcast"))

        // Subscribed everywhere: a probe from node 2 reaches nodes 1 and 3.
        try await waitUntil(20, "the probe at nodes 1 and 3") {
            publisher.sendUTF("probe")
            return roamingHeard.all.contains("probe") && steadyHeard.all.contains("probe")
        }
        for index in 0..<20 { publisher.sendUTF("before \(index)") }
        try await waitUntil(20, "the first 20 at both") {
            roamingHeard.all.contains("before 19") && steadyHeard.all.contains("before 19")
        }

        nodes[0].kill9()
        try await waitUntil(20, "the roaming client to reconnect") { reconnected.withLockedValue { $0 } }
        #expect(connects.withLockedValue { $0 } == [nodes[0].port, nodes[1].port], "reconnected to node 2")
        // Node 2 subscribes the new connection as it accepts it: wait for a probe, then publish.
        try await waitUntil(20, "a probe at the reconnected client") {
            publisher.sendUTF("probe after")
            return roamingHeard.all.contains("probe after")
        }
        for index in 0..<20 { publisher.sendUTF("after \(index)") }
        try await waitUntil(20, "the 20 after at both") {
            roamingHeard.all.contains("after 19") && steadyHeard.all.contains("after 19")
        }
        let afterAtRoaming = roamingHeard.all.filter { $0.hasPrefix("after ") }
        #expect(afterAtRoaming == (0..<20).map { "after \($0)" }, "once each, in order")
        let steadyAll = steadyHeard.all.filter { $0.hasPrefix("before ") || $0.hasPrefix("after ") }
        #expect(steadyAll == (0..<20).map { "before \($0)" } + (0..<20).map { "after \($0)" }, "node 3 went on through the kill")

        // /chat spans the surviving nodes.
        let ann = try await WebSocketClient().connect(url: url(nodes[1], "/chat?name=ann"), protocols: ["chat"])
        let annHeard = Heard()
        ann.onMessage { annHeard.append($0) }
        let bob = try await WebSocketClient().connect(url: url(nodes[2], "/chat?name=bob"), protocols: ["chat"])
        try await waitUntil(20, "bob's join at ann (node 3 to node 2)") { annHeard.all.contains { $0.contains(#""name":"bob","type":"join""#) } }
        bob.sendUTF("hello from node 3")
        try await waitUntil(20, "bob's message at ann") { annHeard.all.contains(#"{"from":"bob","text":"hello from node 3","type":"message"}"#) }
        roaming.stopReconnecting()
        for connection in [steady, publisher, ann, bob] { try? connection.close() }
    }
}
