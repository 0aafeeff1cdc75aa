// example-wss: a wss:// (TLS) echo server from PEM files, run as a ServiceLifecycle service
// that shuts down gracefully (close code 1001 to every client) on SIGINT or SIGTERM.
//
//     swift run example-wss CERT.pem KEY.pem [port]    # default port 8443
//     swift run ws connect wss://localhost:8443/ --ca CA.pem    # or --insecure for self-signed
//
// A certificate for a try-out:
//     openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=localhost \
//         -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout key.pem -out cert.pem
//     swift run example-wss cert.pem key.pem &
//     swift run ws connect wss://localhost:8443/ --ca cert.pem

import Foundation  // exit
import Logging
import NIOSSL  // TLSConfiguration
import ServiceLifecycle
import WebSocket

let arguments = Array(CommandLine.arguments.dropFirst())
guard arguments.count == 2 || arguments.count == 3 else {
    print("usage: example-wss CERT.pem KEY.pem [port]")
    exit(2)
}
let port = arguments.count == 3 ? Int(arguments[2]) ?? 8443 : 8443

// The certificate chain (leaf first) and its private key; throws a WebSocketError naming the
// file that could not be read. Any NIOSSL `TLSConfiguration` works as well.
let tls: TLSConfiguration
do {
    tls = try WebSocketServer.tlsConfiguration(certificateChainFile: arguments[0], privateKeyFile: arguments[1])
} catch let error as WebSocketError {
    print(error.message)
    exit(1)
}

// Listeners given to the initializer are opened by `run()`. A server may have several, plain
// and TLS alike (WebSocket-Node's `httpServer: [http, https]`).
let logger = Logger(label: "example-wss")
let server = WebSocketServer(
    logger: logger,
    listeners: [.init(host: "127.0.0.1", port: port, tlsConfiguration: tls)])

server.onRequest { request in
    guard let connection = try? request.accept(protocol: request.requestedProtocols.first, origin: request.origin) else {
        return
    }
    connection.onMessage { message in connection.send(message) }
}
server.onClose { connection, code, description in
    logger.info("closed", metadata: ["remote": "\(connection.remoteAddress)", "code": "\(code)", "reason": "\(description)"])
}

print("Listening on wss://127.0.0.1:\(port)/ (Ctrl-C to stop)")

// WebSocketServer is a ServiceLifecycle `Service`: `run()` listens, and on graceful shutdown
// closes every connection with 1001 "going away" and waits (at most `closeTimeout`) for them.
let group = ServiceGroup(configuration: .init(services: [server], gracefulShutdownSignals: [.sigint, .sigterm], logger: logger))
do {
    try await group.run()
    print("Stopped.")
} catch {
    print("Stopped: \(error)")  // e.g. the port is in use
    exit(1)
}
