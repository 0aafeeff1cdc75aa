// Metrics: an echo server whose metrics a Prometheus server scrapes from GET /metrics, on the
// same port as its WebSockets, with a graceful shutdown on Ctrl-C or SIGTERM.
//   swift run example-metrics [port]        (default 8080)
//   curl http://127.0.0.1:8080/metrics
// The library reports through swift-metrics: bootstrap a backend (here swift-prometheus) before
// creating the server, and the server's metrics go to it. Without a bootstrap nothing is recorded.
import Metrics
import Prometheus
import ServiceLifecycle
import WebSocket

let port = CommandLine.arguments.dropFirst().first.flatMap(Int.init) ?? 8080

// 1. The backend, once per process, before any WebSocketServer is created.
let registry = PrometheusCollectorRegistry()
MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))

// 2. The server: WebSockets on every path, and GET /metrics beside them on the same port (a
//    plain HTTP request, not an upgrade, goes to the server's HTTP handler).
let logger = Logger(label: "example-metrics")
let server = WebSocketServer(logger: logger, listeners: [.init(host: "127.0.0.1", port: port)])
server.setHTTPHandler { head in
    guard head.uri == "/metrics" else { return (.notFound, [:], "Not Found") }
    return (.ok, ["Content-Type": "text/plain; version=0.0.4"], registry.emitToString())
}
server.onRequest { request in
    guard let connection = try? request.accept(origin: request.origin) else { return }
    connection.onMessage { connection.send($0) }
}

// 3. Until SIGINT or SIGTERM: then every client gets 1001 and the program ends normally.
let group = ServiceGroup(services: [server], gracefulShutdownSignals: [.sigint, .sigterm], logger: logger)
print("echo on ws://127.0.0.1:\(port)/, metrics on http://127.0.0.1:\(port)/metrics")
try await group.run()
