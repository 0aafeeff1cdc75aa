import ArgumentParser
import Dispatch
import NIOConcurrencyHelpers
import NIOCore
import WebSocket

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `ws connect`: an interactive client, like `wscat -c`.
///
/// Lines read from standard input are sent as text messages; messages received are printed
/// as `< text`. Lines starting with `/` are commands: `/ping [payload]`, `/close [code]
/// [reason]`, `/help`; `//…` sends a line that starts with `/`. End of input closes the
/// connection normally.
///
/// Exit status: 0 after a close, 1 when the connection could not be opened (the reason is on
/// standard error), 2 for an unusable `--ca` or `--proxy`, 3 when the connection was lost
/// without a close frame (1006).
struct Connect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Connect to a WebSocket server and talk to it interactively (like wscat).",
        discussion: """
            Lines typed are sent as text messages; messages received are printed as "< …".
            Commands: /ping [payload], /close [code] [reason], /help. A line starting with "//" \
            is sent with one "/" removed. End of input (Ctrl-D) closes the connection with 1000.
            Exit status: 0 after a close, 1 when the connection could not be opened (the reason \
            is printed on standard error), 2 for an unusable --ca or --proxy, 3 when the \
            connection was lost without a close frame.
            """)

    @Argument(help: "The ws:// or wss:// URL to connect to.")
    var url: String

    @Option(name: .customLong("protocol"), help: "A subprotocol to offer (repeatable, in order of preference).")
    var protocols: [String] = []

    @Option(name: .customLong("header"), help: "An extra request header, \"Name: value\" (repeatable).")
    var headers: [String] = []

    @Option(help: "The Origin header to send.")
    var origin: String?

    @Option(help: "A PEM file of CA certificates to trust for wss:// instead of the system's.")
    var ca: String?

    @Flag(help: "Do not verify the server's TLS certificate (for testing only).")
    var insecure = false

    @Option(help: "Connect through this HTTP proxy (CONNECT), e.g. http://user:password@proxy:3128.")
    var proxy: String?

    @Flag(inversion: .prefixedNo, help: "Offer permessage-deflate (on by default).")
    var deflate = true

    @Flag(help: "For wss://, use HTTP/2 (RFC 8441) when the server offers it; HTTP/1.1 otherwise.")
    var http2 = false

    @Option(help: "The largest message accepted, in bytes.")
    var maxMessageSize: Int = 8 * 1024 * 1024

    @Option(help: "Seconds to wait for the connection and the opening handshake.")
    var connectTimeout: Double = 10

    func validate() throws {
        for header in headers {
            guard let colon = header.firstIndex(of: ":"), header[..<colon].trimmingCharacters() != "" else {
                throw ValidationError("--header must look like \"Name: value\", not \"\(header)\"")
            }
        }
        guard maxMessageSize > 0 else { throw ValidationError("--max-message-size must be positive") }
        guard connectTimeout > 0 else { throw ValidationError("--connect-timeout must be positive") }
    }

    func run() async throws {
        var configuration = WebSocketClient.Configuration()
        configuration.maxReceivedMessageSize = maxMessageSize
        configuration.maxReceivedFrameSize = maxMessageSize
        configuration.handshakeTimeout = .milliseconds(Int(connectTimeout * 1000))
        if deflate { configuration.perMessageDeflate = PerMessageDeflate.Options() }
        configuration.http2 = http2
        var requestOptions = WebSocketClient.RequestOptions()
        do {
            if ca != nil || insecure {
                configuration.tlsConfiguration = try WebSocketClient.tlsConfiguration(caFile: ca, verifyCertificates: !insecure)
            }
            if let proxy { requestOptions.proxy = try WebSocketClient.HTTPProxy(url: proxy) }
        } catch let error as WebSocketError {
            printStandardError("ws connect: \(error.message)")
            throw ExitCode(2)
        }
        var headerFields: [String: String] = [:]
        for header in headers {
            let colon = header.firstIndex(of: ":")!
            headerFields[header[..<colon].trimmingCharacters()] = header[header.index(after: colon)...].trimmingCharacters()
        }

        let client = WebSocketClient(configuration: configuration)
        let connection: WebSocketConnection
        do {
            connection = try await client.connect(
                url: url, protocols: protocols, origin: origin, headers: headerFields, requestOptions: requestOptions)
        } catch let error as WebSocketError {
            printStandardError("ws connect: could not connect to \(url): \(error.message) [\(error.code)]")
            throw ExitCode(1)
        }

        let (closes, closed) = AsyncStream.makeStream(of: Int.self)
        connection.onClose { code, description in
            printLine(TerminalStyle.notice("Disconnected (code: \(code), reason: \"\(description)\")"))
            closed.yield(code)
            closed.finish()
        }
        connection.onError { error in printStandardError("ws connect: \(error)") }
        connection.onPing { _, data in printLine("\(TerminalStyle.incoming) ping\(Self.payloadSuffix(data))") }
        connection.onPong { data in printLine("\(TerminalStyle.incoming) pong\(Self.payloadSuffix(data))") }
        var details: [String] = []
        if connection.isHTTP2 { details.append("HTTP/2") }
        if let chosen = connection.protocol { details.append("protocol: \(chosen)") }
        if !connection.extensions.isEmpty { details.append("extensions: \(connection.extensions.map(\.description).joined(separator: ", "))") }
        printLine(TerminalStyle.notice("Connected to \(url)\(details.isEmpty ? "" : " (\(details.joined(separator: "; ")))")"))
        connection.onMessage { message in
            switch message {
            case .utf8(let text):
                printLine("\(TerminalStyle.incoming) \(text)")
            case .binary(let buffer):
                printLine("\(TerminalStyle.incoming) [binary, \(buffer.readableBytes) bytes]\(Self.hexPreview(buffer))")
            }
        }

        let input = Task { await Self.readCommands(connection: connection) }
        var code = WebSocketCloseReason.abnormal
        for await closedWith in closes { code = closedWith }
        input.cancel()
        if code == WebSocketCloseReason.abnormal { throw ExitCode(3) }
    }

    /// Reads standard input line by line and acts on each line until the input ends or the
    /// connection closes; at the end of input, closes the connection normally.
    private static func readCommands(connection: WebSocketConnection) async {
        for await line in standardInputLines() {
            guard connection.connected else { break }
            handle(line, connection: connection)
        }
        if connection.connected { try? connection.close() }
    }

    private static func handle(_ line: String, connection: WebSocketConnection) {
        guard line.hasPrefix("/") else {
            connection.sendUTF(line)
            return
        }
        if line.hasPrefix("//") {
            connection.sendUTF(String(line.dropFirst()))
            return
        }
        let parts = line.dropFirst().split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        let command = parts.first.map(String.init) ?? ""
        let argument = parts.count > 1 ? String(parts[1]) : ""
        switch command {
        case "ping":
            do {
                try connection.ping(argument)
            } catch {
                printStandardError("ws connect: \(error)")
            }
        case "close":
            let words = argument.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
            var code = WebSocketCloseReason.normal
            if let first = words.first {
                guard let parsed = Int(first) else {
                    printStandardError("ws connect: /close takes a numeric code first, not \"\(first)\"")
                    return
                }
                code = parsed
            }
            let reason = words.count > 1 ? String(words[1]) : nil
            do {
                try connection.close(reasonCode: code, description: reason)
            } catch {
                printStandardError("ws connect: \(error)")
            }
        case "help":
            printLine("Commands: /ping [payload], /close [code] [reason], /help; //text sends /text; other lines are sent as text.")
        default:
            printStandardError("ws connect: unknown command /\(command) (try /help)")
        }
    }

    /// Lines of standard input, read on a thread of their own (reading blocks).
    private static func standardInputLines() -> AsyncStream<String> {
        let (lines, continuation) = AsyncStream.makeStream(of: String.self)
        DispatchQueue(label: "ws.connect.stdin").async {
            while let line = readLine(strippingNewline: true) {
                continuation.yield(line.hasSuffix("\r") ? String(line.dropLast()) : line)
            }
            continuation.finish()
        }
        return lines
    }

    private static func payloadSuffix(_ data: ByteBuffer) -> String {
        guard data.readableBytes > 0 else { return "" }
        if let text = data.getString(at: data.readerIndex, length: data.readableBytes), text.allSatisfy({ !$0.isASCII || $0.isLetter || $0.isNumber || $0.isPunctuation || $0.isSymbol || $0 == " " }) {
            return ": \(text)"
        }
        return ":\(hexPreview(data))"
    }

    private static func hexPreview(_ buffer: ByteBuffer) -> String {
        guard buffer.readableBytes > 0 else { return "" }
        let shown = buffer.readableBytesView.prefix(32).map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }
        return " " + shown.joined(separator: " ") + (buffer.readableBytes > 32 ? " …" : "")
    }
}

extension StringProtocol {
    /// The text without leading and trailing spaces and tabs.
    fileprivate func trimmingCharacters() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return String(s)
    }
}
