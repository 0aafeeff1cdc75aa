import BenchSupport
import NIOPosix
import WebSocket

// The echo server on this library written the way an async user would: a scoped handler per
// connection, `for try await message in connection.messages { try await connection.write(message) }`.
let arguments = EchoArguments()
var configuration = WebSocketServer.Configuration()
configuration.maxReceivedFrameSize = EchoArguments.maxSize
configuration.maxReceivedMessageSize = EchoArguments.maxSize
// The peers answer a message with one frame; so do we (WebSocket-Node's default fragments at 16 KiB).
configuration.fragmentOutgoingMessages = false
if arguments.deflate { configuration.perMessageDeflate = PerMessageDeflate.Options() }
let group = MultiThreadedEventLoopGroup(numberOfThreads: arguments.threads)
let server = WebSocketServer(configuration: configuration, eventLoopGroup: group)
server.onRequest { request in
    try? request.accept { connection in
        for try await message in connection.messages {
            try await connection.write(message)
        }
    }
}
_ = try await server.listen(host: "127.0.0.1", port: arguments.port)
announce("echo-ours-async listening on 127.0.0.1:\(arguments.port) threads=\(arguments.threads) deflate=\(arguments.deflate)")
while true { try await Task.sleep(for: .seconds(3600)) }
