// The Vapor program of the article 'Using it inside Hummingbird or Vapor', word for word
// (IntegrationsTests checks it): swift run article-vapor serve, then ws://127.0.0.1:8080/echo.
import Vapor
import WebSocket
import WebSocketVapor

let app = try await Application.make(.detect())
let webSocketServer = WebSocketServer(configuration: .init())
webSocketServer.onRequest { request in
    guard let connection = try? request.accept(origin: request.origin) else { return }
    connection.onMessage { connection.send($0) }
}
app.get("status") { _ in "up" }
app.webSocket("echo", server: webSocketServer)          // GET /echo upgrades
// or, in any route: return request.webSocketUpgrade(to: webSocketServer)
try await webSocketServer.startBroker()   // it never listens: its topics' broker starts here
try await app.execute()
await webSocketServer.shutDown()
try await app.asyncShutdown()
