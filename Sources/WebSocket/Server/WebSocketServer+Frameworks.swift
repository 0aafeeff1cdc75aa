import NIOCore
import NIOHTTP1

// Attaching a server to the HTTP server an application already has (Hummingbird, Vapor, or a
// NIO server of its own): WebSocket-Node's `httpServer` option. The server then never listens;
// the application's HTTP server reads the requests, and this server decides on the upgrades and
// runs the connections, with all its options, events and router, as for its own listeners.
// The adapters in Integrations/ use these two entry points.
extension WebSocketServer {
    /// Shares a fresh channel with another HTTP/1.1 server: this server reads the first request
    /// head, takes the upgrade requests for which `shouldUpgrade` returns true (they become
    /// `request` events, answered by this server: 101, or a refusal and a closed connection),
    /// and hands the channel with every byte read so far to the other server for anything else.
    ///
    /// Call it on the channel's event loop, on a channel with no handlers yet (from a
    /// `childChannelInitializer`, or a framework's child channel set-up). `otherwise` runs on
    /// the event loop once this server's handlers have left the pipeline: it must add the other
    /// server's handlers synchronously (the bytes read so far are passed on right after it).
    ///
    /// ```swift
    /// try server.configurePipeline(for: channel, upgradingWhere: { $0.uri.hasPrefix("/ws") }) { channel in
    ///     try channel.pipeline.syncOperations.configureHTTPServerPipeline()
    ///     try channel.pipeline.syncOperations.addHandler(MyHTTPHandler())
    /// }
    /// ```
    ///
    /// Only the connection's first request may become a WebSocket (as with NIO's upgrade
    /// handler): once the other server has the channel it keeps it. A request goes to the other
    /// server, untouched, when it is not an upgrade (`Upgrade: websocket`), when `shouldUpgrade`
    /// refuses it, when its head is outside the plain subset of HTTP/1.1 this server's fast path
    /// reads (a `GET` with visible-ASCII header fields, at most 64 of them), when the head grows
    /// past `maxHandshakeSize`, or when it is not complete within `handshakeTimeout`.
    ///
    /// - Parameters:
    ///   - channel: the accepted connection (TLS, if any, already in its pipeline).
    ///   - shouldUpgrade: which upgrade requests this server takes, by their head (path,
    ///     headers); called on the event loop.
    ///   - otherwise: adds the other server's handlers to the channel.
    public func configurePipeline(
        for channel: Channel,
        upgradingWhere shouldUpgrade: @escaping @Sendable (HTTPRequestHead) -> Bool,
        otherwise: @escaping (Channel) throws -> Void
    ) throws {
        try WebSocketServerHandshakeHandler.install(
            on: channel, server: self, passOn: .init(takes: shouldUpgrade, install: otherwise))
    }

    /// Decides on an upgrade request that another HTTP server has read and will answer itself
    /// (a framework's route: Vapor's upgrade responses work this way): the request is checked
    /// as this server checks its own (RFC 6455 §4.2.1, `maxConnections`), becomes a `request`
    /// event (or goes to the router), and the future completes with the answer once the
    /// application accepts or rejects it (or `requestTimeout` passes: 503).
    ///
    /// The HTTP server then writes ``WebSocketUpgradeResponse/status`` and
    /// ``WebSocketUpgradeResponse/headers`` (and ``WebSocketUpgradeResponse/body``). For an
    /// accepted request (101) it takes its HTTP handlers out of the channel's pipeline and
    /// calls ``completeUpgrade(_:on:)``; for any other answer it closes the connection after
    /// writing it (the headers say `Connection: close`).
    ///
    /// A head without `Upgrade: websocket` is answered 426 (Upgrade Required), and is no
    /// `request` event. Call it on the channel's event loop.
    ///
    /// - Parameters:
    ///   - head: the request head as the HTTP server read it.
    ///   - channel: the connection it came on.
    public func upgradeResponse(for head: HTTPRequestHead, on channel: Channel) -> EventLoopFuture<WebSocketUpgradeResponse> {
        guard channel.eventLoop.inEventLoop else {
            return channel.eventLoop.flatSubmit { self.upgradeResponse(for: head, on: channel) }
        }
        let peer = channel.remoteAddress?.ipAddress ?? ""
        switch WebSocketServerHandshake.evaluate(head, peerAddress: peer, configuration: configuration) {
        case .plainRequest:
            return channel.eventLoop.makeSucceededFuture(
                .refusal(status: .upgradeRequired, headers: ["Upgrade": "websocket", "Sec-WebSocket-Version": "13"], body: "Upgrade Required"))
        case .refuse(let refusal):
            upgradeErrorHandlers.emit(refusal.error)
            metrics?.handshakeRefused(status: Int(refusal.status.code))
            return channel.eventLoop.makeSucceededFuture(.refusal(status: refusal.status, headers: refusal.headers, body: refusal.body))
        case .upgrade(let upgrade):
            guard case .admitted(let slot) = reserveConnection() else {
                metrics?.handshakeRefused(status: 503)
                return channel.eventLoop.makeSucceededFuture(.refusal(status: .serviceUnavailable, headers: [:], body: "Too many connections"))
            }
            let responder = FrameworkHandshakeResponder(channel: channel, key: upgrade.key)
            let request = WebSocketRequest(upgrade, channel: channel, server: self, handshake: responder, slot: slot)
            responder.pendingRequest = request
            let answer = responder.promise.futureResult
            channel.closeFuture.assumeIsolated().whenComplete { _ in
                responder.channelClosed(server: self)
            }
            handleRequest(request)
            if !request.isDecided && responder.pendingRequest === request {
                responder.requestTimer = requestTimeout(for: request, on: channel.eventLoop)
            }
            return answer
        }
    }

    /// Hands `channel` to the connection of an accepted ``WebSocketUpgradeResponse``, once the
    /// HTTP server has written the 101 and taken its HTTP handlers out of the pipeline: the
    /// connection's handler goes at the end of the pipeline and the connection opens (the
    /// server's `connect` event). For a refusal it closes the channel. Call it on the channel's
    /// event loop, or from another thread: it hops to the channel's event loop (the pipeline and
    /// the connection's handler are the loop's alone). The channel stops reading (`autoRead`
    /// off) when the request is accepted and starts again here, so frames the client sends
    /// right after the 101 wait in the socket until the connection's handler is in place; what
    /// the HTTP server's decoder had read already must reach the pipeline after this.
    public func completeUpgrade(_ response: WebSocketUpgradeResponse, on channel: Channel) {
        guard channel.eventLoop.inEventLoop else {
            channel.eventLoop.execute { self.completeUpgrade(response, on: channel) }
            return
        }
        guard let connection = response.connection else {
            channel.close(promise: nil)
            return
        }
        guard channel.isActive else {
            // The client went away in the meantime: the connection closes at once (1006).
            connection.channelHandler.abandon()
            return
        }
        do {
            try channel.pipeline.syncOperations.addHandler(connection.channelHandler)
        } catch {
            connection.channelHandler.abandon()
            channel.close(promise: nil)
            return
        }
        connectionOpened(connection)
        if response.resumesReading {
            // Reading stopped at the accept (see FrameworkHandshakeResponder): the connection's
            // handler is in place, so the client's first frames are its own.
            try? channel.syncOptions?.setOption(ChannelOptions.autoRead, value: true)
        }
    }
}

/// What a ``WebSocketServer`` answers to an upgrade request that another HTTP server read (see
/// ``WebSocketServer/upgradeResponse(for:on:)``): that server writes it.
public struct WebSocketUpgradeResponse: Sendable {
    /// 101 (Switching Protocols) for an accepted request; else the refusal's status (403 by
    /// default for `reject()`, 400 for a malformed request, 426, 503...).
    public var status: HTTPResponseStatus
    /// The response's headers: for a 101, `Upgrade`, `Connection`, `Sec-WebSocket-Accept` and
    /// what the application chose (subprotocol, extensions, origin, cookies); for a refusal,
    /// `Content-Type`, `Connection: close`, `X-WebSocket-Reject-Reason` and the extra headers
    /// of `reject`. No `Content-Length`: the HTTP server frames the body.
    public var headers: HTTPHeaders
    /// The body of a refusal (empty for a 101).
    public var body: String
    /// The accepted connection, waiting for ``WebSocketServer/completeUpgrade(_:on:)``.
    let connection: WebSocketConnection?
    /// The channel stopped reading when the request was accepted (`autoRead` off until
    /// ``WebSocketServer/completeUpgrade(_:on:)`` puts the connection's handler in place).
    let resumesReading: Bool

    /// Whether the request was accepted (the status is 101).
    public var isAccepted: Bool { connection != nil }

    static func refusal(status: HTTPResponseStatus, headers extra: [String: String], body: String) -> Self {
        var headers = HTTPHeaders()
        for (name, value) in WebSocketServer.plainAnswerHeaders(extra) where WebSocketClient.isToken(name) {
            headers.add(name: name, value: WebSocketServerHandshakeHandler.fieldText(value))
        }
        headers.add(name: "Connection", value: "close")
        return Self(status: status, headers: headers, body: body, connection: nil, resumesReading: false)
    }
}

/// Carries out a ``WebSocketRequest``'s decision for another HTTP server: completes the answer's
/// promise. Lives on the channel's event loop.
final class FrameworkHandshakeResponder: WebSocketHandshakeResponder {
    let promise: EventLoopPromise<WebSocketUpgradeResponse>
    private let channel: Channel
    private let key: String
    private var answered = false
    var requestTimer: Scheduled<Void>?
    var pendingRequest: WebSocketRequest?

    init(channel: Channel, key: String) {
        self.promise = channel.eventLoop.makePromise(of: WebSocketUpgradeResponse.self)
        self.channel = channel
        self.key = key
    }

    func switchToWebSocket(connection: WebSocketConnection, headers: [(String, String)]) {
        requestTimer?.cancel()
        pendingRequest = nil
        guard !answered else {
            connection.channelHandler.abandon()
            return
        }
        answered = true
        var response = HTTPHeaders([
            ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", WebSocketHandshake.acceptValue(forKey: key)),
        ])
        for (name, value) in headers { response.add(name: name, value: value) }
        // The client may send as soon as it reads the 101, and the HTTP server may call
        // completeUpgrade later (from a task, off the loop): until the connection's handler is in
        // the pipeline, what arrives would pass the emptied pipeline and be lost. So the channel
        // stops reading here (what the HTTP server's decoder holds still reaches the handler) and
        // completeUpgrade starts it again.
        let pausedReading = Self.pauseReading(channel)
        promise.succeed(
            WebSocketUpgradeResponse(
                status: .switchingProtocols, headers: response, body: "", connection: connection, resumesReading: pausedReading))
    }

    /// Turns the channel's `autoRead` off if it was on; whether it did.
    private static func pauseReading(_ channel: Channel) -> Bool {
        guard channel.eventLoop.inEventLoop, let options = channel.syncOptions,
            (try? options.getOption(ChannelOptions.autoRead)) == true
        else { return false }
        return (try? options.setOption(ChannelOptions.autoRead, value: false)) != nil
    }

    func reject(status: Int, reason: String?, extraHeaders: [String: String]) {
        requestTimer?.cancel()
        pendingRequest = nil
        guard !answered else { return }
        answered = true
        var headers = extraHeaders
        if let reason {
            headers["X-WebSocket-Reject-Reason"] = reason.filter { !$0.isNewline }
        }
        let status = HTTPResponseStatus(statusCode: status)
        promise.succeed(.refusal(status: status, headers: headers, body: status.reasonPhrase))
    }

    /// The connection closed: an undecided request fails.
    func channelClosed(server: WebSocketServer) {
        requestTimer?.cancel()
        guard !answered else { return }
        answered = true
        if let request = pendingRequest {
            pendingRequest = nil
            request.slot?.release()
            server.upgradeErrorHandlers.emit(
                WebSocketError(.notConnected, "The client at \(request.remoteAddress) went away before its request was accepted or rejected"))
        }
        promise.fail(WebSocketError(.notConnected, "The connection closed before the request was accepted or rejected"))
    }
}
