// example-echo-server: WebSocket-Node's echo server, Node-style callbacks.
//
//     swift run example-echo-server [port]          # default 8080
//     swift run ws connect ws://127.0.0.1:8080/ --protocol echo-protocol
//
// Every text and binary message is sent back unchanged. Ctrl-C stops it.

import Foundation  // exit
import WebSocket

let port = CommandLine.arguments.dropFirst().first.flatMap { Int($0) } ?? 8080

/// Put logic here to detect whether the specified origin is allowed. Browsers send their page's
/// origin; other clients usually send none.
func originIsAllowed(_ origin: String?) -> Bool {
    true
}

// `new WebSocketServer({ httpServer, autoAcceptConnections: false })`: the options are a
// Configuration struct with WebSocket-Node's names and defaults.
var configuration = WebSocketServer.Configuration()
configuration.autoAcceptConnections = false  // the default: decide in onRequest
let server = WebSocketServer(configuration: configuration)

// `wsServer.on('request', function (request) { … })`
server.onRequest { request in
    guard originIsAllowed(request.origin) else {
        // Make sure we only accept requests from an allowed origin.
        request.reject(status: 403, reason: "Origin not allowed")
        print("Connection from origin \(request.origin ?? "-") rejected.")
        return
    }
    // `request.accept('echo-protocol', request.origin)`: throws when the client did not ask for
    // that subprotocol (the request stays undecided then, so reject it).
    let connection: WebSocketConnection
    do {
        connection = try request.accept(protocol: "echo-protocol", origin: request.origin)
    } catch {
        request.reject(status: 400, reason: "Use the echo-protocol subprotocol")
        return
    }
    print("Connection accepted from \(connection.remoteAddress).")

    // `connection.on('message', function (message) { … })`
    connection.onMessage { message in
        switch message {
        case .utf8(let text):
            print("Received Message: \(text)")
            connection.sendUTF(text)
        case .binary(let bytes):
            print("Received Binary Message of \(bytes.readableBytes) bytes")
            connection.sendBytes(bytes)
        }
    }
    // `connection.on('close', function (reasonCode, description) { … })`
    connection.onClose { reasonCode, description in
        print("Peer \(connection.remoteAddress) disconnected: \(reasonCode) \(description)")
    }
}

// `server.listen(8080)` of Node's http.Server, then `mount`: one call here.
do {
    let address = try await server.listen(host: "127.0.0.1", port: port)
    print("Server is listening on ws://127.0.0.1:\(address.port ?? port)/")
} catch {
    print("Cannot listen on 127.0.0.1:\(port): \(error)")
    exit(1)
}

// The server runs on NIO's threads; keep the process alive until it is killed.
while true {
    try await Task.sleep(for: .seconds(3600))
}
