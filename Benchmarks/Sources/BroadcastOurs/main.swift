import BenchSupport
import NIOPosix
import WebSocket

// W7 on this library WITH topics: every connection on /broadcast subscribes to one topic, and
// every message it sends is published to that topic with `server.publish`, the sender included
// (`connection.publish` would leave the sender out).
let arguments = EchoArguments()
var configuration = WebSocketServer.Configuration()
configuration.maxReceivedFrameSize = EchoArguments.maxSize
configuration.maxReceivedMessageSize = EchoArguments.maxSize
configuration.fragmentOutgoingMessages = false
configuration.maxBackpressure = EchoArguments.maxSize  // as broadcast-uws: nothing is skipped
let group = MultiThreadedEventLoopGroup(numberOfThreads: arguments.threads)
let server = WebSocketServer(configuration: configuration, eventLoopGroup: group)

server.onRequest { request in
    guard request.resourceURL.path == "/broadcast" else { return request.reject(status: 404) }
    guard let connection = try? request.accept() else { return }
    do {
        try connection.subscribe(to: "all")
    } catch {
        announce("broadcast-ours: subscribe failed: \(error)")
    }
    connection.onMessage { message in
        do {
            try server.publish(message, to: "all")
        } catch {
            announce("broadcast-ours: publish failed: \(error)")
        }
    }
}
_ = try await server.listen(host: "127.0.0.1", port: arguments.port)
announce("broadcast-ours listening on 127.0.0.1:\(arguments.port) threads=\(arguments.threads)")
while true { try await Task.sleep(for: .seconds(3600)) }
