import ArgumentParser
import Dispatch
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import WebSocket
import WebSocketPostgres

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `ws serve`: the library's demo. `GET /` is a chat page; `/chat` (subprotocol `chat`) is a
/// chat room mounted through ``WebSocketRouter`` and built on topics; `/broadcast` publishes every
/// message it receives to every connection on `/broadcast`, the sender included; every other
/// path echoes text and binary messages unchanged, accepting any origin and the first
/// subprotocol offered. With `--cluster`, /chat and /broadcast span every server of the cluster
/// (topics over PostgreSQL, ``WebSocketPostgresBroker``).
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the demo server: a chat room on /chat with its page on /, a broadcast on /broadcast, an echo server on every other path.")

    @Option(help: "The port to listen on (0 picks a free one).")
    var port: Int = 8080

    @Option(help: "The address to listen on.")
    var host: String = "127.0.0.1"

    @Option(help: "The largest frame accepted, in bytes.")
    var maxFrameSize: Int = 0x10000

    @Option(help: "The largest message accepted, in bytes.")
    var maxMessageSize: Int = 0x100000

    @Flag(help: "Negotiate permessage-deflate with clients that offer it.")
    var deflate = false

    @Option(help: "A PEM certificate chain: serve wss:// (with --tls-key).")
    var tlsCert: String?

    @Option(help: "The PEM private key of --tls-cert.")
    var tlsKey: String?

    @Flag(help: "Offer HTTP/2 on the TLS listener (ALPN h2): browsers then open the page and every WebSocket on one connection (RFC 8441). Needs --tls-cert.")
    var http2 = false

    @Option(help: ArgumentHelp(
        "Join a cluster over PostgreSQL: /chat and /broadcast span every server started with the same URL.",
        valueName: "postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"))
    var cluster: String?

    @Option(help: "This server's name in the cluster, for logs and the table's node column (default: host, process id and a random suffix). It need not be unique: publications are told apart by a random identity each start makes, so a restart may keep the name.")
    var node: String?

    @Option(help: "The least severe log level shown: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    @Option(help: "Log lines as readable text or as JSON objects: text, json.")
    var logFormat: String = "text"

    @Flag(help: "Log only warnings and errors (no line per connection).")
    var quiet = false

    @Option(help: "Serve the library's metrics in Prometheus's text format on http://HOST:PORT/metrics (0 picks a free port).")
    var metricsPort: Int?

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard LogFormat(rawValue: logFormat) != nil else { throw ValidationError("--log-format must be text or json") }
        guard (1...(1 << 30)).contains(maxFrameSize), (1...(1 << 30)).contains(maxMessageSize) else {
            throw ValidationError("--max-frame-size and --max-message-size must be from 1 byte to 1 GiB")
        }
        guard (tlsCert == nil) == (tlsKey == nil) else { throw ValidationError("--tls-cert and --tls-key go together") }
        if let cluster {
            do { _ = try WebSocketPostgresBroker.Configuration(url: cluster) } catch { throw ValidationError("--cluster: \(error.message)") }
        }
        guard node == nil || cluster != nil else { throw ValidationError("--node goes with --cluster") }
        guard !http2 || tlsCert != nil else {
            throw ValidationError("--http2 needs --tls-cert and --tls-key: browsers speak HTTP/2 only over TLS")
        }
    }

    func run() async throws {
        let level = quiet ? Logger.Level.warning : Logger.Level(rawValue: logLevel)!
        let format = LogFormat(rawValue: logFormat)!
        var logger = Logger(label: "ws.serve") { _ in WSLogHandler(format: format, level: level) }
        logger.logLevel = level

        if let metricsPort {
            // Before the server is made: it resolves its metrics when created.
            let address = try await MetricsEndpoint.start(host: host, port: metricsPort)
            let shown = host.contains(":") ? "[\(host)]" : host
            printLine("ws serve: metrics on http://\(shown):\(address.port ?? metricsPort)/metrics")
        }
        var configuration = WebSocketServer.Configuration()
        configuration.maxReceivedFrameSize = maxFrameSize
        configuration.maxReceivedMessageSize = maxMessageSize
        if deflate { configuration.perMessageDeflate = PerMessageDeflate.Options() }
        configuration.http2 = http2
        if let cluster {
            var brokerConfiguration = try WebSocketPostgresBroker.Configuration(url: cluster)
            if let node { brokerConfiguration.node = node }
            configuration.broker = WebSocketPostgresBroker(configuration: brokerConfiguration, logger: logger)
        }
        let server = WebSocketServer(configuration: configuration, logger: logger)
        try Self.installDemo(on: server, logger: logger)

        var tls: TLSConfiguration?
        if let tlsCert, let tlsKey {
            tls = try WebSocketServer.tlsConfiguration(certificateChainFile: tlsCert, privateKeyFile: tlsKey)
        }
        let address: SocketAddress
        do {
            address = try await server.listen(host: host, port: port, tlsConfiguration: tls)
        } catch let error as WebSocketError {
            printLine("ws serve: \(error.message)")
            throw ExitCode(1)
        }
        let shownHost = host.contains(":") ? "[\(host)]" : host
        let scheme = tls == nil ? "ws" : "wss"
        printLine("ws serve: listening on \(scheme)://\(shownHost):\(address.port ?? port)/ (chat page: \(tls == nil ? "http" : "https")://\(shownHost):\(address.port ?? port)/)")
        if let broker = configuration.broker as? WebSocketPostgresBroker {
            printLine("ws serve: cluster node \(broker.configuration.node) over \(broker.configuration.postgres.host ?? "PostgreSQL"):\(broker.configuration.postgres.port ?? 5432)")
        }

        let signal = await Self.waitForTerminationSignal()
        printLine("ws serve: received \(signal), shutting down")
        await server.shutDown()
    }

    /// The demo: the page, the chat room and the echo routes, and a log line per connection event.
    static func installDemo(on server: WebSocketServer, logger: Logger) throws {
        server.setHTTPHandler { head in
            guard head.method == .GET, head.uri == "/" || head.uri.hasPrefix("/?") else {
                return (.notFound, [:], "Not Found")
            }
            return (.ok, ["Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"], DemoPage.html)
        }
        let router = WebSocketRouter(server: server)
        try ChatRoom(server: server, logger: logger).mount(on: router)
        // Every message to every connection on /broadcast, the sender included (benchmark W7).
        let broadcast: WebSocketRouter.Handler = { [server, logger] request in
            guard let connection = try? request.accept(origin: request.origin) else { return }
            guard (try? connection.subscribe(to: "broadcast")) == true else { return }
            connection.onMessage { message in
                do { try server.publish(message, to: "broadcast") } catch {
                    logger.warning("broadcast publish refused", metadata: ["error": "\(error)"])
                }
            }
        }
        try router.mount("/broadcast", protocol: "*", handler: broadcast)
        try router.mount("/broadcast", handler: broadcast)
        let echo: WebSocketRouter.Handler = { request in
            guard let connection = try? request.accept(origin: request.origin) else { return }
            connection.onMessage { connection.send($0) }
        }
        let everyOtherPath = try WebSocketRoutePath.regex("^(?!/chat$|/broadcast$)")
        try router.mount(everyOtherPath, protocol: "*", handler: echo)
        try router.mount(everyOtherPath, handler: echo)

        server.onConnect { connection in
            var metadata: Logger.Metadata = ["remote": "\(connection.remoteAddress)"]
            if let proto = connection.protocol { metadata["protocol"] = "\(proto)" }
            if !connection.extensions.isEmpty { metadata["extensions"] = "\(connection.extensions.map(\.description).joined(separator: ", "))" }
            if connection.isHTTP2, let tcp = connection.socket.parent {
                // The TCP peer of the shared HTTP/2 connection: the same for every stream of it.
                metadata["http2"] = "\(tcp.remoteAddress?.description ?? "?")"
            }
            logger.info("connection opened", metadata: metadata)
        }
        server.onClose { connection, code, description in
            logger.info("connection closed", metadata: ["remote": "\(connection.remoteAddress)", "code": "\(code)", "reason": "\(description)"])
        }
        server.onUpgradeError { error in
            logger.warning("upgrade refused", metadata: ["error": "\(error)"])
        }
    }

    /// Waits for SIGINT or SIGTERM and returns its name.
    static func waitForTerminationSignal() async -> String {
        await withCheckedContinuation { (continuation: CheckedContinuation<String, Never>) in
            let queue = DispatchQueue(label: "ws.signals")
            let once = SignalOnce(continuation)
            for (number, name) in [(SIGINT, "SIGINT"), (SIGTERM, "SIGTERM")] {
                signal(number, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
                source.setEventHandler { once.fire(name) }
                source.resume()
                once.keep(source)
            }
        }
    }
}

/// Resumes the continuation on the first signal only; keeps the signal sources alive.
private final class SignalOnce: @unchecked Sendable {
    // Only touched on the signal queue (and before the sources start).
    private var continuation: CheckedContinuation<String, Never>?
    private var sources: [any DispatchSourceSignal] = []

    init(_ continuation: CheckedContinuation<String, Never>) { self.continuation = continuation }

    func keep(_ source: any DispatchSourceSignal) { sources.append(source) }

    func fire(_ name: String) {
        continuation?.resume(returning: name)
        continuation = nil
    }
}

/// Writes a line to standard output (or `fd`) at once, unbuffered, so a pipe sees it
/// immediately.
func printLine(_ line: String, to fd: Int32 = 1) {
    var bytes = Array((line + "\n").utf8)
    var offset = 0
    while offset < bytes.count {
        let written = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
        if written <= 0 { return }
        offset += written
    }
}

/// Writes a line to standard error at once.
func printStandardError(_ line: String) {
    printLine(line, to: 2)
}
