import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// Connects to WebSocket servers: the Swift counterpart of WebSocket-Node's `WebSocketClient`.
///
/// ```swift
/// let client = WebSocketClient()
/// let connection = try await client.connect(url: "ws://127.0.0.1:8080/", protocols: ["echo"])
/// connection.sendUTF("hello")
/// for try await message in connection.messages { print(message) }
/// ```
///
/// Or Node-style, with `onConnect` / `onConnectFailed` and `connect(url:…)` returning at once.
public final class WebSocketClient: Sendable {
    /// The client's options.
    public let configuration: Configuration
    /// Where connections run.
    public let eventLoopGroup: any EventLoopGroup
    /// Where the client logs.
    public let logger: Logger

    let connectHandlers = WebSocketEventHandlers<WebSocketConnection>()
    let connectFailedHandlers = WebSocketEventHandlers<any Error>()
    let httpResponseHandlers = WebSocketEventHandlers<(HTTPResponseHead, WebSocketClient)>()
    private let pending = NIOLockedValueBox<Channel?>(nil)
    private let aborted = NIOLockedValueBox(false)

    /// Carries the non-101 response, when there was one, to the `httpResponse` event.
    struct HandshakeFailure: Error {
        var error: WebSocketError
        var response: HTTPResponseHead?
    }

    /// Creates a client.
    public init(
        configuration: Configuration = Configuration(),
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "websocket.client")
    ) {
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
    }

    /// Registers a handler for `connect`: the handshake succeeded.
    @discardableResult
    public func onConnect(_ handler: @escaping @Sendable (WebSocketConnection) -> Void) -> WebSocketHandlerToken {
        connectHandlers.add(handler)
    }

    /// Registers a handler for `connectFailed`, with a ``WebSocketError`` that says why.
    @discardableResult
    public func onConnectFailed(_ handler: @escaping @Sendable (any Error) -> Void) -> WebSocketHandlerToken {
        connectFailedHandlers.add(handler)
    }

    /// Registers a handler for `httpResponse`: the server answered with a status other than
    /// 101. When a handler is registered, it replaces `connectFailed` for that case.
    @discardableResult
    public func onHttpResponse(_ handler: @escaping @Sendable (HTTPResponseHead, WebSocketClient) -> Void) -> WebSocketHandlerToken {
        httpResponseHandlers.add { handler($0.0, $0.1) }
    }

    /// Starts connecting to `url` (`ws://host[:port]/path`); the outcome comes as `connect`,
    /// `connectFailed` or `httpResponse`.
    public func connect(url: String, protocols: [String] = [], origin: String? = nil, headers: [String: String] = [:]) {
        Task {
            do {
                let connection = try await self.open(url: url, protocols: protocols, origin: origin, headers: headers)
                connection.onLoop { _ in self.connectHandlers.emit(connection) }
            } catch let failure as HandshakeFailure {
                if let response = failure.response, !self.httpResponseHandlers.isEmpty {
                    self.httpResponseHandlers.emit((response, self))
                } else {
                    self.connectFailedHandlers.emit(failure.error)
                }
            } catch {
                self.connectFailedHandlers.emit(error)
            }
        }
    }

    /// Connects to `url` and returns the open connection, or throws a ``WebSocketError`` that
    /// says what went wrong (refused, timeout, non-101 status, bad accept key, …).
    public func connect(url: String, protocols: [String] = [], origin: String? = nil, headers: [String: String] = [:]) async throws -> WebSocketConnection {
        do {
            return try await open(url: url, protocols: protocols, origin: origin, headers: headers)
        } catch let failure as HandshakeFailure {
            throw failure.error
        }
    }

    /// Abandons a connection attempt that has not finished; it fails with `aborted`.
    public func abort() {
        aborted.withLockedValue { $0 = true }
        pending.withLockedValue { $0 }?.close(promise: nil)
    }

    private func open(url: String, protocols: [String], origin: String?, headers: [String: String]) async throws -> WebSocketConnection {
        aborted.withLockedValue { $0 = false }
        let target = try WebSocketURL(url)
        guard target.scheme == "ws" else {
            throw WebSocketError(.invalidURL, "Only ws:// URLs are supported by this build; got \(target.scheme)://")
        }
        guard configuration.webSocketVersion == 13 || configuration.webSocketVersion == 8 else {
            throw WebSocketError(.invalidArgument, "webSocketVersion must be 13 or 8, not \(configuration.webSocketVersion)")
        }
        let request = WebSocketClientHandshakeHandler.Request(
            target: target.resource, host: target.hostHeader, protocols: protocols, origin: origin,
            headers: headers.sorted { $0.key < $1.key }, version: configuration.webSocketVersion,
            options: configuration.connectionOptions, logger: logger)
        let eventLoop = eventLoopGroup.next()
        let promise = eventLoop.makePromise(of: WebSocketConnection.self)
        let timeout = TimeAmount(configuration.handshakeTimeout)
        let channel: Channel
        do {
            channel = try await ClientBootstrap(group: eventLoop)
                .connectTimeout(timeout)
                .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: configuration.disableNagleAlgorithm ? 1 : 0)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let encoder = HTTPRequestEncoder()
                        let decoder = ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .forwardBytes))
                        let handshake = WebSocketClientHandshakeHandler(request: request, encoder: encoder, decoder: decoder, promise: promise)
                        try channel.pipeline.syncOperations.addHandlers([encoder, decoder, handshake])
                    }
                }
                .connect(host: target.host, port: target.port)
                .get()
        } catch {
            promise.fail(error)
            throw WebSocketError(.connectionFailed, "Could not connect to \(target.host):\(target.port): \(error)")
        }
        pending.withLockedValue { $0 = channel }
        if aborted.withLockedValue({ $0 }) { channel.close(promise: nil) }
        let timer = eventLoop.scheduleTask(in: timeout) {
            promise.fail(HandshakeFailure(error: WebSocketError(.timeout, "The opening handshake did not finish within \(self.configuration.handshakeTimeout)"), response: nil))
            channel.close(promise: nil)
        }
        defer {
            timer.cancel()
            pending.withLockedValue { $0 = nil }
        }
        do {
            return try await promise.futureResult.get()
        } catch let failure as HandshakeFailure {
            if aborted.withLockedValue({ $0 }) { throw WebSocketError(.aborted, "The connection attempt was aborted") }
            throw failure
        }
    }
}

/// A parsed `ws://` or `wss://` URL.
struct WebSocketURL {
    var scheme: String
    var host: String
    var port: Int
    var resource: String

    var hostHeader: String {
        let h = host.contains(":") ? "[\(host)]" : host
        let defaultPort = scheme == "wss" ? 443 : 80
        return port == defaultPort ? h : "\(h):\(port)"
    }

    init(_ url: String) throws {
        let parts = url.split(separator: "://", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else {
            throw WebSocketError(.invalidURL, "Not a WebSocket URL (expected ws://host/path): \(url)")
        }
        scheme = parts[0].lowercased()
        guard scheme == "ws" || scheme == "wss" else {
            throw WebSocketError(.invalidURL, "Unsupported URL scheme \"\(scheme)\"; use ws:// or wss://")
        }
        var rest = parts[1]
        var authority = rest
        if let slash = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) {
            authority = rest[..<slash]
            rest = rest[slash...]
            resource = rest.first == "?" ? "/" + rest : String(rest)
        } else {
            resource = "/"
        }
        if let hash = resource.firstIndex(of: "#") { resource = String(resource[..<hash]) }
        if let at = authority.lastIndex(of: "@") { authority = authority[authority.index(after: at)...] }
        port = scheme == "wss" ? 443 : 80
        if authority.first == "[" {
            guard let close = authority.firstIndex(of: "]") else { throw WebSocketError(.invalidURL, "Unterminated IPv6 literal in \(url)") }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if after.first == ":" {
                guard let p = Int(after.dropFirst()), (1...65535).contains(p) else { throw WebSocketError(.invalidURL, "Invalid port in \(url)") }
                port = p
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            guard let p = Int(authority[authority.index(after: colon)...]), (1...65535).contains(p) else {
                throw WebSocketError(.invalidURL, "Invalid port in \(url)")
            }
            port = p
        } else {
            host = String(authority)
        }
        guard !host.isEmpty else { throw WebSocketError(.invalidURL, "No host in \(url)") }
    }
}
