import Vapor
import WebSocket
import WebSocketVapor

/// The Vapor example: one port serves an HTTP JSON route (`GET /status`) and two WebSocket
/// routes of this library, `/echo` (echoes every message) and `/chat` (every message goes to
/// everyone in the room, through a topic), with permessage-deflate, a 16 MiB message limit and
/// an origin check (a browser page from another origin gets 403).
public enum VaporExample {
    /// The JSON answer of `GET /status`.
    public struct Status: Content {
        /// The framework serving the page.
        public var framework: String
        /// Open WebSocket connections.
        public var connections: Int
        /// The WebSocket routes.
        public var webSocketRoutes: [String]
    }

    /// Origins allowed to open WebSockets: pages of this machine (any port), and clients that
    /// send no `Origin` (not a browser).
    public static func originAllowed(_ origin: String?) -> Bool {
        guard let origin else { return true }
        return origin.hasPrefix("http://localhost") || origin.hasPrefix("http://127.0.0.1")
            || origin.hasPrefix("https://localhost") || origin.hasPrefix("https://127.0.0.1")
    }

    /// The example's `WebSocketServer`: its options and its `request` handler.
    public static func makeWebSocketServer(logger: Logger) -> WebSocketServer {
        var configuration = WebSocketServer.Configuration()
        configuration.perMessageDeflate = PerMessageDeflate.Options()
        configuration.maxReceivedFrameSize = 16 << 20
        configuration.maxReceivedMessageSize = 16 << 20
        let server = WebSocketServer(configuration: configuration, logger: logger)
        server.onRequest { request in
            guard originAllowed(request.origin) else {
                return request.reject(status: 403, reason: "Origin not allowed")
            }
            guard let connection = try? request.accept(protocol: request.requestedProtocols.first, origin: request.origin) else { return }
            if request.resourceURL.path == "/chat" {
                _ = try? connection.subscribe(to: "chat")
                connection.onMessage { message in
                    // Throws only for a topic name over 1,024 bytes or when a cluster's broker refuses.
                    do { try server.publish(message, to: "chat") } catch {
                        connection.logger.warning("chat publish refused", metadata: ["error": "\(error)"])
                    }
                }
            } else {
                connection.onMessage { message in connection.send(message) }
            }
        }
        return server
    }

    /// Adds the routes to `app`; returns its `WebSocketServer` (shut it down with the app).
    public static func configure(_ app: Application) -> WebSocketServer {
        let webSocketServer = makeWebSocketServer(logger: app.logger)
        app.get("status") { _ in
            Status(framework: "Vapor", connections: webSocketServer.connectionCount, webSocketRoutes: ["/echo", "/chat"])
        }
        app.webSocket("echo", server: webSocketServer)
        app.webSocket("chat", server: webSocketServer)
        return webSocketServer
    }
}
