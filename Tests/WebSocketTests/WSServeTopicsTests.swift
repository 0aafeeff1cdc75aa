import Foundation
import NIOCore
import Testing

@testable import WebSocket

/// `ws serve`'s rooms built on topics, with our client: `/broadcast` (every message to every
/// connection there, the sender included) and the `/chat` room's JSON lines.
@Suite("ws serve topics", .timeLimit(.minutes(1)))
struct WSServeTopicsTests {
    /// Starts `ws serve --port 0` and returns it with its port.
    static func serve() async throws -> (PeerProcess, Int) {
        let ws = BrowserTests.wsBinary
        guard FileManager.default.isExecutableFile(atPath: ws) else {
            throw InteropError("the ws executable is not built at \(ws); run `swift build` first")
        }
        let process = try PeerProcess(name: "ws serve", executable: ws, arguments: ["serve", "--port", "0", "--quiet"])
        let line = try await process.line(20, "ws serve's listening line") { $0.hasPrefix("ws serve: listening on") }
        guard let port = line.split(separator: ":").compactMap({ Int($0.prefix(while: \.isNumber)) }).last else {
            throw InteropError("no port in \(line)")
        }
        return (process, port)
    }

    @Test("/broadcast: three connections, each message reaches all three, sender included, in each sender's order")
    func broadcast() async throws {
        let (process, port) = try await Self.serve()
        defer { process.killByPID() }
        var clients: [(WebSocketConnection, Collected<WebSocketMessage>)] = []
        for _ in 0..<3 {
            let connection = try await WebSocketClient().connect(url: "ws://127.0.0.1:\(port)/broadcast")
            let received = Collected<WebSocketMessage>()
            connection.onMessage { received.append($0) }
            clients.append((connection, received))
        }
        // The server subscribes each connection as it accepts it: wait until all three are in,
        // by a probe from the last one that everyone must receive.
        clients[2].0.sendUTF("probe")
        for (index, client) in clients.enumerated() {
            _ = try await TopicTests.waitFor(1, in: client.1, "the probe at client \(index)")
        }
        for (index, client) in clients.enumerated() {
            for round in 0..<20 { client.0.sendUTF("\(index):\(round)") }
        }
        for (index, client) in clients.enumerated() {
            let texts = TopicTests.texts(try await TopicTests.waitFor(61, in: client.1, "client \(index)'s 61 messages"))
            #expect(texts.first == "probe")
            for sender in 0..<3 {
                #expect(texts.filter { $0.hasPrefix("\(sender):") } == (0..<20).map { "\(sender):\($0)" })
            }
        }
        let binary = ByteBuffer(bytes: [1, 2, 3, 4])
        clients[0].0.sendBytes(binary)
        for client in clients {
            let all = try await TopicTests.waitFor(62, in: client.1, "the binary message")
            #expect(all.last == .binary(binary))
        }
    }

    @Test("/chat: welcome, join, messages to every member, leave with the count")
    func chat() async throws {
        let (process, port) = try await Self.serve()
        defer { process.killByPID() }
        let ann = try await WebSocketClient().connect(url: "ws://127.0.0.1:\(port)/chat?name=ann", protocols: ["chat"])
        let annHears = Collected<WebSocketMessage>()
        ann.onMessage { annHears.append($0) }
        #expect(TopicTests.texts(try await TopicTests.waitFor(1, in: annHears, "ann's welcome")) == [#"{"count":1,"name":"ann","type":"welcome"}"#])
        let bob = try await WebSocketClient().connect(url: "ws://127.0.0.1:\(port)/chat?name=bob", protocols: ["chat"])
        let bobHears = Collected<WebSocketMessage>()
        bob.onMessage { bobHears.append($0) }
        #expect(TopicTests.texts(try await TopicTests.waitFor(2, in: annHears, "bob's join")).last == #"{"count":2,"name":"bob","type":"join"}"#)
        bob.sendUTF("hi")
        let message = #"{"from":"bob","text":"hi","type":"message"}"#
        #expect(TopicTests.texts(try await TopicTests.waitFor(3, in: annHears, "bob's message at ann")).last == message)
        #expect(TopicTests.texts(try await TopicTests.waitFor(2, in: bobHears, "bob's own message")) == [#"{"count":2,"name":"bob","type":"welcome"}"#, message])
        try bob.close()
        #expect(TopicTests.texts(try await TopicTests.waitFor(4, in: annHears, "bob's leave")).last == #"{"count":1,"name":"bob","type":"leave"}"#)
    }

    /// The resident memory of process `pid`, in bytes (VmRSS of /proc/PID/status).
    static func residentBytes(of pid: Int32) throws -> Int {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
            let kib = Int(line.split(separator: " ").dropFirst().first ?? "")
        else { throw InteropError("no VmRSS in /proc/\(pid)/status") }
        return kib * 1024
    }

    @Test("a subscriber that never reads, in a topic with a fast publisher: the server's RSS stays flat (maxBackpressure)",
          .disabled(if: ProcessInfo.processInfo.environment["WS_SANITIZER"] != nil, "RSS is not comparable under a sanitizer (ASan holds freed memory in quarantine)"))
    func slowSubscriberKeepsRSSFlat() async throws {
        let (process, port) = try await Self.serve()
        defer { process.killByPID() }
        let stalled = try await RawClient.connected(port: port, path: "/broadcast")
        try await stalled.setReading(false)
        let publisher = try await WebSocketClient().connect(url: "ws://127.0.0.1:\(port)/broadcast")
        let received = Collected<WebSocketMessage>()
        publisher.onMessage { received.append($0) }
        let message = ByteBuffer(bytes: Array(repeating: 0x42, count: 16 * 1024))
        let total = 6000  // 94 MiB published; the stalled subscriber takes none of it
        let window = 50
        var samples: [Int] = []
        for start in stride(from: 0, to: total, by: window) {
            for _ in 0..<window { publisher.sendBytes(message) }
            // The publisher receives its own messages: it paces itself on them.
            _ = try await TopicTests.waitFor(start + window, in: received, "the publisher's own messages up to \(start + window)")
            if (start + window) % 1000 == 0 { samples.append(try Self.residentBytes(of: process.pid)) }
        }
        let growth = samples.last! - samples.first!
        print("ws serve RSS while publishing \(total) x 16 KiB with a stalled subscriber (MiB):", samples.map { $0 >> 20 })
        // Without the limit the stalled subscriber's queue alone would grow by ~78 MiB here.
        #expect(growth < 16 << 20, "RSS grew by \(growth >> 20) MiB from the 1,000th message to the last")
        await stalled.close()
    }
}
