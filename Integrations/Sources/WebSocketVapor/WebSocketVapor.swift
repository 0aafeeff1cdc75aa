import NIOCore
import NIOHTTP1
public import Vapor
public import WebSocket

// The Vapor 4 adapter: a Vapor route answers with a response that upgrades the connection to a
// WebSocket of this library, the way Vapor's own `webSocket` routes do (a 101 response with an
// `Upgrader`). The bridge is the library's `WebSocketServer.upgradeResponse(for:on:)`: the
// `WebSocketServer` decides (its `request` event, or its router), Vapor writes the answer, and
// `WebSocketServer.completeUpgrade(_:on:)` hands the channel to the connection.

extension RoutesBuilder {
    /// A `GET` route whose requests become WebSocket requests of `server`: its `request`
    /// events (or its ``WebSocket/WebSocketRouter``), its options (subprotocols, origin checks in
    /// the request handler, permessage-deflate, limits, keepalive, topics) and its connection
    /// count. A request that is no WebSocket upgrade is answered 426 (Upgrade Required).
    ///
    /// ```swift
    /// let webSocketServer = WebSocketServer(configuration: .init())
    /// webSocketServer.onRequest { request in
    ///     guard request.origin == "https://example.com" else { return request.reject(status: 403) }
    ///     let connection = try? request.accept()
    ///     connection?.onMessage { connection?.send($0) }
    /// }
    /// app.webSocket("echo", server: webSocketServer)
    /// ```
    @discardableResult
    @preconcurrency
    public func webSocket(_ path: PathComponent..., server: WebSocketServer) -> Route {
        on(.GET, path) { request -> Response in
            request.webSocketUpgrade(to: server)
        }
    }
}

extension Request {
    /// A response that upgrades this request's connection to a WebSocket of `server` (return it
    /// from a route): a 101 with the `WebSocketServer`'s headers once its application accepted,
    /// or its refusal (403 for `reject()`, 400 for a malformed upgrade, 503...), after which the
    /// connection closes. A request that is no upgrade (no `Connection: upgrade`) gets 426.
    public func webSocketUpgrade(to server: WebSocketServer) -> Response {
        let connection = headers[canonicalForm: "connection"].map { $0.lowercased() }
        guard connection.contains("upgrade") else {
            return Response(status: .upgradeRequired, headers: ["Upgrade": "websocket", "Sec-WebSocket-Version": "13"])
        }
        let response = Response(status: .switchingProtocols)
        response.upgrader = WebSocketServerUpgrader(server: server)
        return response
    }
}

/// Vapor's `Upgrader` for a ``WebSocket/WebSocketServer`` (see
/// ``Vapor/Request/webSocketUpgrade(to:)``).
public struct WebSocketServerUpgrader: Upgrader, Sendable {
    /// The server that decides on the upgrade and runs the connection.
    public let server: WebSocketServer

    /// An upgrader to `server`.
    public init(server: WebSocketServer) {
        self.server = server
    }

    /// The NIO upgrader Vapor runs: it asks `server` for the answer and hands the channel over.
    public func applyUpgrade(req: Request, res: Response) -> any HTTPServerProtocolUpgrader {
        ProtocolUpgrader(server: server, response: res)
    }

    /// Called by Vapor on the channel's event loop: `buildUpgradeResponse`, then (after Vapor
    /// wrote the response and took its HTTP handlers out) `upgrade`.
    final class ProtocolUpgrader: HTTPServerProtocolUpgrader, @unchecked Sendable {
        let supportedProtocol = "websocket"
        let requiredUpgradeHeaders: [String] = []
        private let server: WebSocketServer
        private let response: Response
        /// Set on the event loop by `buildUpgradeResponse`, read by `upgrade`.
        private var answer: WebSocketUpgradeResponse?

        init(server: WebSocketServer, response: Response) {
            self.server = server
            self.response = response
        }

        func buildUpgradeResponse(
            channel: any Channel, upgradeRequest: HTTPRequestHead, initialResponseHeaders: HTTPHeaders
        ) -> EventLoopFuture<HTTPHeaders> {
            server.upgradeResponse(for: upgradeRequest, on: channel).map { answer in
                self.answer = answer
                if !answer.isAccepted {
                    // Vapor writes this response: make it the refusal.
                    self.response.status = answer.status
                    self.response.body = .init(string: answer.body)
                }
                return answer.headers
            }
        }

        func upgrade(context: ChannelHandlerContext, upgradeRequest: HTTPRequestHead) -> EventLoopFuture<Void> {
            let channel = context.channel
            guard let answer, answer.isAccepted else {
                // A refusal: close once what Vapor wrote is out.
                channel.writeAndFlush(channel.allocator.buffer(capacity: 0)).whenComplete { _ in
                    channel.close(promise: nil)
                }
                return channel.eventLoop.makeSucceededVoidFuture()
            }
            channel.flush()
            server.completeUpgrade(answer, on: channel)
            return channel.eventLoop.makeSucceededVoidFuture()
        }
    }
}
