import BenchSupport
import Metrics
import NIOPosix
import Prometheus
import WebSocket

// echo-ours with a metrics backend: swift-prometheus bootstrapped before the server is made, so
// every connection counts its messages and bytes (run.sh --metrics compares it with echo-ours).
// The registry is never scraped: the cost measured is the recording.
let registry = PrometheusCollectorRegistry()
MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
let arguments = EchoArguments()
var configuration = WebSocketServer.Configuration()
configuration.maxReceivedFrameSize = EchoArguments.maxSize
configuration.maxReceivedMessageSize = EchoArguments.maxSize
configuration.autoAcceptConnections = true
configuration.fragmentOutgoingMessages = false
if arguments.deflate { configuration.perMessageDeflate = PerMessageDeflate.Options() }
let group = MultiThreadedEventLoopGroup(numberOfThreads: arguments.threads)
let server = WebSocketServer(configuration: configuration, eventLoopGroup: group)
server.onConnect { connection in
    connection.onMessage { message in connection.send(message) }
}
_ = try await server.listen(host: "127.0.0.1", port: arguments.port)
announce("echo-ours-metrics listening on 127.0.0.1:\(arguments.port) threads=\(arguments.threads) deflate=\(arguments.deflate) metrics=prometheus")
while true { try await Task.sleep(for: .seconds(3600)) }
