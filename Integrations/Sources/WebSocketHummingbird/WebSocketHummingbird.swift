import HummingbirdCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
public import WebSocket

// The Hummingbird 2 adapter: a Hummingbird application serves its routes on its own port, and
// the WebSocket upgrades it chooses go to a `WebSocketServer` of this library (WebSocket-Node's
// `httpServer` option). The bridge is the library's
// `WebSocketServer.configurePipeline(for:upgradingWhere:otherwise:)`: this library reads the
// first request of each connection; an upgrade it takes becomes its `request` event (or goes to
// its router); anything else, with every byte, goes to Hummingbird's own HTTP/1.1 channel.

extension HTTPServerBuilder {
    /// HTTP/1.1 (Hummingbird's `HTTP1Channel`) on which the WebSocket upgrade requests that
    /// `shouldUpgrade` picks go to `webSocketServer`: its `request` events (or its
    /// ``WebSocket/WebSocketRouter``), its options (subprotocols, origin checks in the request
    /// handler, permessage-deflate, limits, keepalive, topics) and its connection count.
    ///
    /// ```swift
    /// let webSocketServer = WebSocketServer(configuration: .init())
    /// let router = WebSocketRouter(server: webSocketServer)
    /// try router.mount("/echo", protocol: "*") { request in … }
    /// let app = Application(
    ///     router: httpRouter,
    ///     server: .http1WebSocket(webSocketServer, upgradingPaths: ["/echo"]),
    ///     services: [webSocketServer])  // its graceful shutdown closes the WebSockets (1001)
    /// ```
    ///
    /// Only the first request of a connection can upgrade (as with Hummingbird's own WebSocket
    /// channel): a browser opens a connection of its own for each WebSocket. See
    /// `WebSocketServer.configurePipeline(for:upgradingWhere:otherwise:)` for which requests go
    /// to Hummingbird.
    ///
    /// - Parameters:
    ///   - webSocketServer: the server that decides on the upgrades and runs the connections;
    ///     it need not listen anywhere.
    ///   - configuration: Hummingbird's HTTP/1.1 options, for everything else.
    ///   - shouldUpgrade: which upgrade requests (`Upgrade: websocket`) go to `webSocketServer`,
    ///     by their head; the others go to Hummingbird's router.
    public static func http1WebSocket(
        _ webSocketServer: WebSocketServer,
        configuration: HTTP1Channel.Configuration = .init(),
        upgradingWhere shouldUpgrade: @escaping @Sendable (HTTPRequestHead) -> Bool = { _ in true }
    ) -> HTTPServerBuilder {
        .init { responder in
            HTTP1WebSocketChannel(
                http1: HTTP1Channel(responder: responder, configuration: configuration), webSocketServer: webSocketServer,
                shouldUpgrade: shouldUpgrade)
        }
    }

    /// ``http1WebSocket(_:configuration:upgradingWhere:)`` for the upgrade requests whose path
    /// (the request target without its query) is one of `paths`.
    public static func http1WebSocket(
        _ webSocketServer: WebSocketServer,
        configuration: HTTP1Channel.Configuration = .init(),
        upgradingPaths paths: Set<String>
    ) -> HTTPServerBuilder {
        http1WebSocket(webSocketServer, configuration: configuration) { head in
            paths.contains(WebSocketResourceURL(head.uri).path)
        }
    }
}

/// Hummingbird's child channel for ``HummingbirdCore/HTTPServerBuilder/http1WebSocket(_:configuration:upgradingWhere:)``:
/// a connection starts with this library's handshake handlers and goes on either as a
/// WebSocket of the `WebSocketServer` or as Hummingbird's `HTTP1Channel`.
public struct HTTP1WebSocketChannel: ServerChildChannel {
    /// A connection: the HTTP/1.1 channel's value once Hummingbird has it; nil for a WebSocket
    /// (or a refused upgrade) once the connection closed.
    public struct Value: ServerChildChannelValue {
        /// The connection.
        public let channel: any Channel
        let http: EventLoopFuture<HTTP1Channel.Value?>
    }

    let http1: HTTP1Channel
    let webSocketServer: WebSocketServer
    let shouldUpgrade: @Sendable (HTTPRequestHead) -> Bool

    /// Installs this library's handshake handlers; Hummingbird's HTTP/1.1 handlers follow for
    /// what the `WebSocketServer` does not take.
    public func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let promise = channel.eventLoop.makePromise(of: HTTP1Channel.Value?.self)
            let completed = NIOLoopBoundBox(false, eventLoop: channel.eventLoop)
            let http1 = self.http1
            try webSocketServer.configurePipeline(for: channel, upgradingWhere: shouldUpgrade) { channel in
                completed.value = true
                // HTTP1Channel's set-up is synchronous on the event loop: its handlers are in
                // place when the bytes read so far are passed on.
                http1.setup(channel: channel, logger: logger).map(Optional.some).cascade(to: promise)
            }
            channel.closeFuture.whenComplete { _ in
                if !completed.value {
                    completed.value = true
                    promise.succeed(nil)
                }
            }
            return Value(channel: channel, http: promise.futureResult)
        }
    }

    /// Runs Hummingbird's HTTP/1.1 handling on a connection it got; for a WebSocket, waits
    /// until the connection closed (so a graceful shutdown waits for it too: run the
    /// `WebSocketServer` as a service beside the application, and its shutdown closes them).
    public func handle(value: Value, logger: Logger) async {
        guard let http = try? await value.http.get() else { return }
        await http1.handle(value: http, logger: logger)
    }
}
