// Metrics: an echo server whose metrics a Prometheus server scrapes from GET /metrics.
//   swift run example-metrics [port]        (WebSockets on PORT, default 8080; metrics on PORT+1)
//   curl http://127.0.0.1:8081/metrics
// The library reports through swift-metrics: bootstrap a backend (here swift-prometheus) before
// creating the server, and the server's metrics go to it. Without a bootstrap nothing is recorded.
import Metrics
import Prometheus
import WebSocket

let port = CommandLine.arguments.dropFirst().first.flatMap(Int.init) ?? 8080

// 1. The backend, once per process, before any WebSocketServer is created.
let registry = PrometheusCollectorRegistry()
MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))

// 2. The WebSocket server: its connections, handshakes, messages... are counted.
let server = WebSocketServer(configuration: .init())
server.onRequest { request in
    guard let connection = try? request.accept(origin: request.origin) else { return }
    connection.onMessage { connection.send($0) }
}
try await server.listen(host: "127.0.0.1", port: port)

// 3. The scrape endpoint: any HTTP server will do; here a second WebSocketServer's plain HTTP
//    handler (it has no WebSocket routes: upgrades to it are refused).
let metrics = WebSocketServer(configuration: .init())
metrics.setHTTPHandler { head in
    guard head.uri == "/metrics" else { return (.notFound, [:], "Not Found") }
    return (.ok, ["Content-Type": "text/plain; version=0.0.4"], registry.emitToString())
}
metrics.onRequest { $0.reject(status: 404) }
try await metrics.listen(host: "127.0.0.1", port: port + 1)
print("echo on ws://127.0.0.1:\(port)/, metrics on http://127.0.0.1:\(port + 1)/metrics")

// Run until stopped (Ctrl-C).
while true { try await Task.sleep(for: .seconds(3600)) }
