import ArgumentParser
import Dispatch
import Logging
import NIOCore
import NIOSSL
import WebSocket

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `ws serve`: an echo server on every path, accepting any origin and the first subprotocol the
/// client offers (like `autoAcceptConnections`).
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run an echo server: every text and binary message is sent back unchanged.")

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

    func run() async throws {
        var configuration = WebSocketServer.Configuration()
        configuration.maxReceivedFrameSize = maxFrameSize
        configuration.maxReceivedMessageSize = maxMessageSize
        configuration.autoAcceptConnections = true
        if deflate { configuration.perMessageDeflate = PerMessageDeflate.Options() }
        let logger = Logger(label: "ws.serve")
        let server = WebSocketServer(configuration: configuration, logger: logger)
        server.onConnect { connection in
            connection.onMessage { message in connection.send(message) }
        }
        var tls: TLSConfiguration?
        switch (tlsCert, tlsKey) {
        case (let cert?, let key?):
            tls = try WebSocketServer.tlsConfiguration(certificateChainFile: cert, privateKeyFile: key)
        case (nil, nil):
            tls = nil
        default:
            throw ValidationError("--tls-cert and --tls-key go together")
        }
        let address = try await server.listen(host: host, port: port, tlsConfiguration: tls)
        let shownHost = host.contains(":") ? "[\(host)]" : host
        printLine("ws serve: listening on \(tls == nil ? "ws" : "wss")://\(shownHost):\(address.port ?? port)/")

        let signal = await Self.waitForTerminationSignal()
        printLine("ws serve: received \(signal), shutting down")
        await server.shutDown()
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

/// Writes a line to standard output at once (unbuffered, so a pipe sees it immediately).
func printLine(_ line: String) {
    var bytes = Array((line + "\n").utf8)
    var offset = 0
    while offset < bytes.count {
        let written = bytes.withUnsafeMutableBytes { write(1, $0.baseAddress! + offset, $0.count - offset) }
        if written <= 0 { return }
        offset += written
    }
}
