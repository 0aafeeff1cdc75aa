import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import WebSocket
import WebSocketPostgres

/// A failure of a bounded wait.
struct TestTimeout: Error, CustomStringConvertible {
    var what: String
    var description: String { "timed out waiting for \(what)" }
}

/// Polls `condition` every 5 ms until it holds, failing after `seconds`. `what` is made when it
/// fails, so counts in it are those at the timeout (made at the call, they said what held before
/// the wait).
func waitUntil(_ seconds: Double, _ what: @autoclosure () -> String, _ condition: @Sendable () throws -> Bool) async throws {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while try !condition() {
        guard ContinuousClock.now < deadline else { throw TestTimeout(what: what()) }
        try await Task.sleep(for: .milliseconds(5))
    }
}

/// One node of a cluster in this process: a server with its own PostgreSQL broker (its own
/// connections), whose connections subscribe to the topic their path names and publish what
/// they receive to it.
struct ClusterNode: Sendable {
    let name: String
    let server: WebSocketServer
    let broker: WebSocketPostgresBroker
    let port: Int

    static func start(
        _ name: String, postgres: ThrowawayPostgres, maxBackpressure: Int = 512 << 20,
        _ configure: (inout WebSocketPostgresBroker.Configuration) -> Void = { _ in }
    ) async throws -> ClusterNode {
        var brokerConfiguration = WebSocketPostgresBroker.Configuration(postgres: postgres.configuration)
        brokerConfiguration.node = name
        brokerConfiguration.reconnectInitialDelay = .milliseconds(20)
        brokerConfiguration.reconnectMaxDelay = .milliseconds(500)
        configure(&brokerConfiguration)
        var logger = Logger(label: "test.\(name)")
        logger.logLevel = ProcessInfo.processInfo.environment["WS_TEST_LOG"] != nil ? .trace : .critical
        let broker = WebSocketPostgresBroker(configuration: brokerConfiguration, logger: logger)
        var configuration = WebSocketServer.Configuration()
        configuration.broker = broker
        // Every message must reach every subscriber here: no skipping for slow readers (unless
        // a test asks for the server's default).
        configuration.maxBackpressure = maxBackpressure
        configuration.maxReceivedMessageSize = 1 << 20
        let server = WebSocketServer(configuration: configuration, logger: logger)
        server.onRequest { request in
            guard let connection = try? request.accept() else { return }
            let topic = String(request.resourceURL.path.dropFirst())
            if !topic.isEmpty { _ = try? connection.subscribe(to: topic) }
            connection.onMessage { message in _ = try? connection.publish(message, to: topic) }
        }
        let address = try await server.listen(host: "127.0.0.1", port: 0)
        return ClusterNode(name: name, server: server, broker: broker, port: address.port!)
    }

    /// Puts back the broker's own reconnect delays (``start(_:postgres:maxBackpressure:_:)``
    /// shortens them), as `ws serve` runs: after issue 30's restart node a's writer came back 8 s
    /// later, with everything published meanwhile queued.
    static func brokerReconnectDefaults(_ configuration: inout WebSocketPostgresBroker.Configuration) {
        let defaults = WebSocketPostgresBroker.Configuration(postgres: configuration.postgres)
        configuration.reconnectInitialDelay = defaults.reconnectInitialDelay
        configuration.reconnectMaxDelay = defaults.reconnectMaxDelay
    }

    /// A client subscribed to `topic` on this node, recording what it receives.
    func subscriber(_ topic: String) async throws -> Subscriber {
        let connection = try await WebSocketClient().connect(url: "ws://127.0.0.1:\(port)/\(topic)")
        let subscriber = Subscriber(connection: connection)
        connection.onMessage { subscriber.receive($0) }
        try await waitUntil(10, "the subscription on \(name)") { server.subscriberCount(of: topic) > 0 }
        return subscriber
    }

    /// A client subscribed to `topic` on this node that takes `pace` over each message (it reads
    /// with ``WebSocket/WebSocketConnection/messages``, so its socket is read no faster: TCP
    /// backpressure reaches the server), recording what it receives. Cancel the task to stop it.
    func slowSubscriber(_ topic: String, pace: Duration) async throws -> (Subscriber, Task<Void, Never>) {
        let before = server.subscriberCount(of: topic)
        let connection = try await WebSocketClient().connect(url: "ws://127.0.0.1:\(port)/\(topic)")
        let subscriber = Subscriber(connection: connection)
        let reading = Task {
            do {
                for try await message in connection.messages {
                    subscriber.receive(message)
                    try await Task.sleep(for: pace)   // the reader's pace: the scenario, not a wait
                }
            } catch {}
        }
        try await waitUntil(10, "the subscription on \(name)") { server.subscriberCount(of: topic) > before }
        return (subscriber, reading)
    }
}

/// What a client received: every message's publisher and index (checked for content as it
/// arrives), duplicates and order faults counted.
final class Subscriber: Sendable {
    let connection: WebSocketConnection
    private let state = NIOLockedValueBox(State())

    struct State {
        var count = 0
        var lastIndex: [String: Int] = [:]
        var seen: Set<String> = []
        var faults: [String] = []
        var byPublisher: [String: Int] = [:]
    }

    init(connection: WebSocketConnection) {
        self.connection = connection
    }

    func receive(_ message: WebSocketMessage) {
        let decoded = TestMessage.decode(message)
        state.withLockedValue { state in
            state.count += 1
            guard let (publisher, index) = decoded else {
                state.faults.append("undecodable message")
                return
            }
            let key = "\(publisher)/\(index)"
            if !state.seen.insert(key).inserted { state.faults.append("duplicate \(key)") }
            if let last = state.lastIndex[publisher], index <= last { state.faults.append("out of order \(key) after \(last)") }
            state.lastIndex[publisher] = index
            state.byPublisher[publisher, default: 0] += 1
        }
    }

    var count: Int { state.withLockedValue { $0.count } }
    var faults: [String] { state.withLockedValue { $0.faults } }
    func received(from publisher: String) -> Int { state.withLockedValue { $0.byPublisher[publisher] ?? 0 } }
    func has(_ publisher: String, _ index: Int) -> Bool { state.withLockedValue { $0.seen.contains("\(publisher)/\(index)") } }
}

/// Test messages that say who published them and their index, in three kinds: small text,
/// 20 KB text and 100 KiB binary, each with content derived from both (checked on arrival).
enum TestMessage {
    static func make(_ publisher: String, _ index: Int, kind: Int? = nil) -> WebSocketMessage {
        switch kind ?? (index % 10) {
        case 0:
            var buffer = ByteBuffer()
            let header = "\(publisher)/\(index)/"
            buffer.writeString(header)
            let fill = UInt8(truncatingIfNeeded: index &* 31 &+ publisher.utf8.count)
            buffer.writeRepeatingByte(fill, count: 100 * 1024 - header.utf8.count)
            return .binary(buffer)
        case 1, 2:
            let header = "\(publisher)/\(index)/"
            return .utf8(header + String(repeating: "é", count: (20_000 - header.utf8.count) / 2))
        default:
            return .utf8("\(publisher)/\(index)/small")
        }
    }

    /// The publisher and index, when the content is what `make` made.
    static func decode(_ message: WebSocketMessage) -> (String, Int)? {
        switch message {
        case .utf8(let text):
            let parts = text.split(separator: "/", maxSplits: 2)
            guard parts.count == 3, let index = Int(parts[1]) else { return nil }
            guard make(String(parts[0]), index, kind: parts[2] == "small" ? 3 : 1) == message else { return nil }
            return (String(parts[0]), index)
        case .binary(let bytes):
            guard let head = bytes.getBytes(at: bytes.readerIndex, length: min(64, bytes.readableBytes)) else { return nil }
            let prefix = String(decoding: head, as: UTF8.self)
            let parts = prefix.split(separator: "/", maxSplits: 2)
            guard parts.count >= 2, let index = Int(parts[1]) else { return nil }
            guard make(String(parts[0]), index, kind: 0) == message else { return nil }
            return (String(parts[0]), index)
        }
    }
}

/// A network namespace of the test's own for PostgreSQL, with veth links to this process's
/// namespace (one per node, each its own /24 of 10.0.0.0/8), so that a test can take one node's
/// link down (no FIN, no RST: packets just stop) and up again. Root only (`ip netns`).
final class PostgresNetwork: Sendable {
    struct Link: Sendable {
        let host: String
        let peer: String
        let hostAddress: String
        let peerAddress: String
    }

    let name: String
    let links: [Link]

    static var isAvailable: Bool {
        getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip")
    }

    private init(name: String, links: [Link]) {
        self.name = name
        self.links = links
    }

    static func make(links count: Int) throws -> PostgresNetwork {
        let tag = String(UInt16.random(in: 0x1000 ... 0xffff), radix: 16)
        let name = "wspg\(tag)"
        let octet = Int.random(in: 100...250)
        try ip(["netns", "add", name])
        var links: [Link] = []
        do {
            try ip(["netns", "exec", name, "ip", "link", "set", "lo", "up"])
            for index in 0..<count {
                let host = "ws\(tag)h\(index)"
                let peer = "ws\(tag)p\(index)"
                let link = Link(host: host, peer: peer, hostAddress: "10.\(octet).\(index + 1).1", peerAddress: "10.\(octet).\(index + 1).2")
                try ip(["link", "add", host, "type", "veth", "peer", "name", peer])
                links.append(link)
                try ip(["link", "set", peer, "netns", name])
                try ip(["addr", "add", "\(link.hostAddress)/24", "dev", host])
                try ip(["link", "set", host, "up"])
                try ip(["netns", "exec", name, "ip", "addr", "add", "\(link.peerAddress)/24", "dev", peer])
                try ip(["netns", "exec", name, "ip", "link", "set", peer, "up"])
            }
        } catch {
            PostgresNetwork(name: name, links: links).destroy()
            throw error
        }
        return PostgresNetwork(name: name, links: links)
    }

    /// Takes link `index` down on PostgreSQL's side: this side loses its carrier and keeps its
    /// route, so the node's packets to PostgreSQL are dropped there (taking this side down
    /// would drop the route, and packets would take the default route off the machine).
    func cut(_ index: Int) throws { try Self.ip(["netns", "exec", name, "ip", "link", "set", links[index].peer, "down"]) }

    /// Brings link `index` up again.
    func restore(_ index: Int) throws { try Self.ip(["netns", "exec", name, "ip", "link", "set", links[index].peer, "up"]) }

    /// Deletes the links and the namespace (stop PostgreSQL first).
    func destroy() {
        for link in links { _ = try? Self.ip(["link", "del", link.host]) }
        _ = try? Self.ip(["netns", "del", name])
    }

    @discardableResult
    static func ip(_ arguments: [String]) throws -> String {
        try ThrowawayPostgres.run("/usr/sbin/ip", arguments, asPostgres: false)
    }
}

extension ThrowawayPostgres {
    /// Issue 30's outage: `publish(index)` for `total` indices at about 50 a second, with this
    /// server stopped (immediate) just before index `stopAt` and started again 3 s later.
    /// Returns once the last is published and the server is up again.
    func publishThroughOutage(total: Int, stopAt: Int = 100, _ publish: (Int) throws -> Void) async throws {
        var restart: Task<Void, any Error>?
        for index in 0..<total {
            if index == stopAt {
                try stopServer(immediate: true)
                restart = Task.detached {
                    try await Task.sleep(for: .seconds(3))   // the outage's length: the scenario, not a wait
                    try self.startServer()
                }
            }
            try publish(index)
            try await Task.sleep(for: .milliseconds(20))   // the publisher's rate: about 50/s
        }
        try await restart?.value
    }
}
