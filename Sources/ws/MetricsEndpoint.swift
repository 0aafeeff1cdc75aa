import CoreMetrics
import Logging
import NIOCore
import Prometheus
import WebSocket

/// `ws serve --metrics-port`: the library's metrics (see the Metrics article) in Prometheus's
/// text exposition format on `GET /metrics`, through swift-prometheus.
enum MetricsEndpoint {
    /// Bootstraps swift-metrics with a Prometheus registry (before any server is made, so that
    /// servers resolve their metrics against it) and listens on `host:port` for scrapes.
    /// Returns the bound address.
    static func start(host: String, port: Int) async throws -> SocketAddress {
        let registry = PrometheusCollectorRegistry()
        // The scrape listener is a WebSocketServer of its own with a plain HTTP handler, made
        // before the bootstrap: it reports no metrics itself.
        var logger = Logger(label: "ws.metrics")
        logger.logLevel = .warning
        let listener = WebSocketServer(configuration: .init(), logger: logger)
        listener.setHTTPHandler { head in
            guard head.method == .GET, head.uri == "/metrics" || head.uri.hasPrefix("/metrics?") else {
                return (.notFound, [:], "Not Found: the metrics are on /metrics\n")
            }
            return (.ok, ["Content-Type": "text/plain; version=0.0.4; charset=utf-8"], registry.emitToString())
        }
        listener.onRequest { $0.reject(status: 404, reason: "No WebSockets here: the metrics are on GET /metrics") }
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        return try await listener.listen(host: host, port: port)
    }
}
