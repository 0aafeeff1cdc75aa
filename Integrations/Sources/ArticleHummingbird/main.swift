// The Hummingbird program of the article 'Using it inside Hummingbird or Vapor', word for word
// (IntegrationsTests checks it): swift run article-hummingbird, then ws://127.0.0.1:8080/echo.
import Hummingbird
import WebSocket
import WebSocketHummingbird

var configuration = WebSocketServer.Configuration()
configuration.perMessageDeflate = PerMessageDeflate.Options()
let webSocketServer = WebSocketServer(configuration: configuration)
let webSocketRouter = WebSocketRouter(server: webSocketServer)
try webSocketRouter.mount("/echo", protocol: "*") { request in
    guard request.origin == nil || request.origin == "https://example.com" else {
        return request.reject(status: 403, reason: "Origin not allowed")
    }
    guard let connection = try? request.accept(origin: request.origin) else { return }
    connection.onMessage { connection.send($0) }
}

let router = Router()
router.get("/status") { _, _ in "up" }
let app = Application(
    router: router,
    server: .http1WebSocket(webSocketServer, upgradingPaths: ["/echo"]),
    configuration: .init(address: .hostname("127.0.0.1", port: 8080)),
    services: [webSocketServer])   // a graceful shutdown closes the WebSockets with 1001
try await app.runService()
