// example-router: WebSocketRouter dispatches requests by path and subprotocol, as
// WebSocket-Node's `websocket.router`. Node-style callbacks.
//
//     swift run example-router [port]                # default 8080
//     swift run ws connect ws://127.0.0.1:8080/echo --protocol echo-protocol
//     swift run ws connect ws://127.0.0.1:8080/reverse
//     swift run ws connect ws://127.0.0.1:8080/rooms/42 --protocol anything
//     swift run ws connect ws://127.0.0.1:8080/nowhere         # rejected: 404

import Foundation  // exit
import WebSocket

let port = CommandLine.arguments.dropFirst().first.flatMap { Int($0) } ?? 8080

let server = WebSocketServer()

// `var router = new WebSocketRouter(); router.attachServer(wsServer);` in one step. The server
// keeps the router alive; `router.detachServer()` stops routing.
let router = WebSocketRouter(server: server)

// `router.mount('/echo', 'echo-protocol', function (request) { … })`: the route matched a
// subprotocol already, so `accept` takes only the origin (and cookies).
try router.mount("/echo", protocol: "echo-protocol") { request in
    guard let connection = try? request.accept(origin: request.origin) else { return }
    connection.onMessage { message in connection.send(message) }
}

// No protocol argument: for clients that ask for no subprotocol.
try router.mount("/reverse") { request in
    guard let connection = try? request.accept(origin: request.origin) else { return }
    connection.onMessage { message in
        if let text = message.utf8Data { connection.sendUTF(String(text.reversed())) }
    }
}

// A regular expression path (Node's RegExp) and any protocol (`'*'`). `request.protocol` is the
// subprotocol this route was matched for.
try router.mount(.regex("^/rooms/[0-9]+$"), protocol: "*") { request in
    let room = request.resourceURL.path.split(separator: "/").last.map(String.init) ?? "?"
    guard let connection = try? request.accept(origin: request.origin) else { return }
    connection.sendUTF("You are in room \(room), speaking \(request.protocol ?? "no subprotocol")")
    connection.onMessage { message in connection.send(message) }
}

// Only one handler per path and protocol: mounting "/echo" + "echo-protocol" again throws.
// `router.unmount("/reverse")` would remove a route. Requests no route matches are rejected
// with 404 "No handler is available for the given request."

do {
    let address = try await server.listen(host: "127.0.0.1", port: port)
    print("Routes on ws://127.0.0.1:\(address.port ?? port): /echo (echo-protocol), /reverse (no protocol), /rooms/<n> (any)")
} catch {
    print("Cannot listen on 127.0.0.1:\(port): \(error)")
    exit(1)
}

// Runs on NIO's threads; keep the process alive until it is killed.
while true {
    try await Task.sleep(for: .seconds(3600))
}
