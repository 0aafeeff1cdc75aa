import BenchSupport
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket
import WebSocketKit

// vapor/websocket-kit: its WebSocket on NIO's upgrader (as Vapor sets it up), echoing
// text as text and binary as binary.
let arguments = EchoArguments()
let group = MultiThreadedEventLoopGroup(numberOfThreads: arguments.threads)
var config = WebSocketKit.WebSocket.Configuration()
config.maxAccumulatedFrameSize = EchoArguments.maxSize
config.maxAccumulatedFrameCount = Int.max
let wsConfig = config
let bootstrap = ServerBootstrap(group: group)
    .serverChannelOption(.backlog, value: 4096)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
    .childChannelInitializer { channel in
        let upgrader = NIOWebSocketServerUpgrader(
            maxFrameSize: EchoArguments.maxSize,
            shouldUpgrade: { channel, _ in channel.eventLoop.makeSucceededFuture(HTTPHeaders()) },
            upgradePipelineHandler: { channel, _ in
                WebSocketKit.WebSocket.server(on: channel, config: wsConfig) { ws in
                    ws.onText { ws, text in ws.send(text) }
                    ws.onBinary { ws, buffer in ws.send(buffer) }
                }
            })
        return channel.pipeline.configureHTTPServerPipeline(
            withServerUpgrade: (upgraders: [upgrader], completionHandler: { _ in }))
    }
let channel = try await bootstrap.bind(host: "127.0.0.1", port: arguments.port).get()
announce("echo-websocketkit listening on 127.0.0.1:\(arguments.port) threads=\(arguments.threads)")
try await channel.closeFuture.get()
