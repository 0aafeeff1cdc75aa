import Hummingbird
import Logging
import NIOCore
import WebSocket
import WebSocketHummingbird

/// The Hummingbird example: one port serves an HTTP JSON route (`GET /status`) and two
/// WebSocket routes of this library, `/echo` (echoes every message) and `/chat` (every message
/// goes to everyone in the room, through a topic), with permessage-deflate, a 16 MiB message
/// limit and an origin check (a browser page from another origin gets 403).
public enum HummingbirdExample {
    /// The JSON answer of `GET /status`.
    public struct Status: ResponseEncodable, Decodable, Sendable {
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

    /// The example's `WebSocketServer`: its options and its routes (a `WebSocketRouter`).
    public static func makeWebSocketServer(logger: Logger) throws -> WebSocketServer {
        var configuration = WebSocketServer.Configuration()
        configuration.perMessageDeflate = PerMessageDeflate.Options()
        configuration.maxReceivedFrameSize = 16 << 20
        configuration.maxReceivedMessageSize = 16 << 20
        let server = WebSocketServer(configuration: configuration, logger: logger)
        let router = WebSocketRouter(server: server)
        try router.mount("/echo", protocol: "*") { request in
            guard originAllowed(request.origin) else {
                return request.reject(status: 403, reason: "Origin not allowed")
            }
            guard let connection = try? request.accept(origin: request.origin) else { return }
            connection.onMessage { message in connection.send(message) }
        }
        try router.mount("/chat", protocol: "*") { request in
            guard originAllowed(request.origin) else {
                return request.reject(status: 403, reason: "Origin not allowed")
            }
            guard let connection = try? request.accept(origin: request.origin) else { return }
            _ = try? connection.subscribe(to: "chat")
            connection.onMessage { message in
                // Throws only for a topic name over 1,024 bytes or when a cluster's broker refuses.
                do { try server.publish(message, to: "chat") } catch {
                    connection.logger.warning("chat publish refused", metadata: ["error": "\(error)"])
                }
            }
        }
        return server
    }

    /// The application on `host:port` (0: any free port; `onServerRunning` gets the bound
    /// channel) and its `WebSocketServer`, which runs as one of its services.
    public static func makeApplication(
        host: String = "127.0.0.1", port: Int = 8080, logger: Logger = Logger(label: "example-hummingbird"),
        onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }
    ) throws -> (application: some ApplicationProtocol, webSocketServer: WebSocketServer) {
        let webSocketServer = try makeWebSocketServer(logger: logger)
        let router = Router()
        router.get("/status") { _, _ in
            Status(framework: "Hummingbird", connections: webSocketServer.connectionCount, webSocketRoutes: ["/echo", "/chat"])
        }
        let application = Application(
            router: router,
            server: .http1WebSocket(webSocketServer, upgradingPaths: ["/echo", "/chat"]),
            configuration: .init(address: .hostname(host, port: port), serverName: "example-hummingbird"),
            services: [webSocketServer],
            onServerRunning: onServerRunning,
            logger: logger)
        return (application, webSocketServer)
    }
}
