import BenchSupport
import NIOConcurrencyHelpers
import NIOPosix
import WebSocket

// W7 on this library WITHOUT topics, as a WebSocket-Node user writes a broadcast: a locked set
// of the connections on /broadcast (added on connect, removed on close) and, for every message,
// a loop that sends it to each of them (the sender included).
let arguments = EchoArguments()
var configuration = WebSocketServer.Configuration()
configuration.maxReceivedFrameSize = EchoArguments.maxSize
configuration.maxReceivedMessageSize = EchoArguments.maxSize
configuration.fragmentOutgoingMessages = false
let group = MultiThreadedEventLoopGroup(numberOfThreads: arguments.threads)
let server = WebSocketServer(configuration: configuration, eventLoopGroup: group)

/// The connections on /broadcast.
final class Connections: Sendable {
    private let registry = NIOLockedValueBox([ObjectIdentifier: WebSocketConnection]())
    func add(_ connection: WebSocketConnection) { registry.withLockedValue { $0[ObjectIdentifier(connection)] = connection } }
    func remove(_ connection: WebSocketConnection) { registry.withLockedValue { _ = $0.removeValue(forKey: ObjectIdentifier(connection)) } }
    var all: [WebSocketConnection] { registry.withLockedValue { Array($0.values) } }
}
let connections = Connections()

server.onRequest { request in
    guard request.resourceURL.path == "/broadcast" else { return request.reject(status: 404) }
    guard let connection = try? request.accept() else { return }
    connections.add(connection)
    connection.onMessage { message in
        for c in connections.all {
            switch message {
            case .binary(let buffer): c.sendBytes(buffer)
            case .utf8(let text): c.send(text)
            }
        }
    }
}
server.onClose { connection, _, _ in connections.remove(connection) }
_ = try await server.listen(host: "127.0.0.1", port: arguments.port)
announce("broadcast-ours-loop listening on 127.0.0.1:\(arguments.port) threads=\(arguments.threads)")
while true { try await Task.sleep(for: .seconds(3600)) }
