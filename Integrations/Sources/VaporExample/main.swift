// A Vapor app with an HTTP JSON route and this library's WebSockets on one port:
//   swift run example-vapor [port]     (default 8080; 0 picks a free port)
import Foundation
import Vapor
import VaporExampleApp

let port = CommandLine.arguments.dropFirst().first.flatMap(Int.init) ?? 8080
let app = try await Application.make(.production)
app.http.server.configuration.hostname = "127.0.0.1"
app.http.server.configuration.port = port
let webSocketServer = VaporExample.configure(app)
// It never listens: start its topics' broker here (nothing to do for the default, in-process one).
try await webSocketServer.startBroker()
try await app.startup()
if let bound = app.http.server.shared.localAddress?.port {
    let line = "example-vapor: listening on ws://127.0.0.1:\(bound)/ (HTTP: http://127.0.0.1:\(bound)/status, WebSockets: /echo, /chat)\n"
    FileHandle.standardOutput.write(Data(line.utf8))
}
try await app.running?.onStop.get()
await webSocketServer.shutDown()
try await app.asyncShutdown()
