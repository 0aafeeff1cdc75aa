import BenchSupport
import Hummingbird
import HummingbirdWSCompression
import HummingbirdWebSocket
import NIOPosix

// hummingbird-websocket: an HTTP/1 server with WebSocket upgrade, echoing every message.
let arguments = EchoArguments()
let group = MultiThreadedEventLoopGroup(numberOfThreads: arguments.threads)
let router = Router()
let extensions: [WebSocketExtensionFactory] =
    arguments.deflate ? [.perMessageDeflate(maxDecompressedFrameSize: EchoArguments.maxSize)] : []
let app = Application(
    router: router,
    server: .http1WebSocketUpgrade(
        configuration: .init(ws: .init(maxFrameSize: EchoArguments.maxSize, extensions: extensions))
    ) { _, _, _ in
        .upgrade([:]) { inbound, outbound, _ in
            for try await message in inbound.messages(maxSize: EchoArguments.maxSize) {
                switch message {
                case .text(let text): try await outbound.write(.text(text))
                case .binary(let buffer): try await outbound.write(.binary(buffer))
                }
            }
        }
    },
    configuration: .init(address: .hostname("127.0.0.1", port: arguments.port)),
    onServerRunning: { _ in
        announce("echo-hummingbird listening on 127.0.0.1:\(arguments.port) threads=\(arguments.threads)")
    },
    eventLoopGroupProvider: .shared(group)
)
try await app.runService()
