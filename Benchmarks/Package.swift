// swift-tools-version:6.0
// The benchmark suite: echo servers on this library and on its Swift peers, and the
// micro-benchmarks. A package of its own, so the library never depends on the peers.
import PackageDescription

let package = Package(
    name: "WebSocketBenchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "swift-websocket-node", path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/vapor/websocket-kit.git", exact: "2.16.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", exact: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket.git", exact: "2.8.1"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        .target(name: "BenchSupport", path: "Sources/BenchSupport"),
        .executableTarget(
            name: "echo-ours",
            dependencies: [
                "BenchSupport",
                .product(name: "WebSocket", package: "swift-websocket-node"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Sources/EchoOurs"),
        .executableTarget(
            name: "echo-ours-async",
            dependencies: [
                "BenchSupport",
                .product(name: "WebSocket", package: "swift-websocket-node"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Sources/EchoOursAsync"),
        .executableTarget(
            name: "echo-ours-metrics",
            dependencies: [
                "BenchSupport",
                .product(name: "WebSocket", package: "swift-websocket-node"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            path: "Sources/EchoOursMetrics"),
        .executableTarget(
            name: "echo-nio",
            dependencies: [
                "BenchSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            path: "Sources/EchoNIO"),
        .executableTarget(
            name: "echo-floor",
            dependencies: [
                "BenchSupport",
                .product(name: "WebSocket", package: "swift-websocket-node"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "Sources/EchoFloor"),
        .executableTarget(
            name: "echo-websocketkit",
            dependencies: [
                "BenchSupport",
                .product(name: "WebSocketKit", package: "websocket-kit"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            path: "Sources/EchoVapor"),
        .executableTarget(
            name: "echo-hummingbird",
            dependencies: [
                "BenchSupport",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "HummingbirdWSCompression", package: "hummingbird-websocket"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Sources/EchoHummingbird"),
        // W7, broadcast fan-out (the servers answer on /broadcast).
        .executableTarget(
            name: "broadcast-ours",
            dependencies: [
                "BenchSupport",
                .product(name: "WebSocket", package: "swift-websocket-node"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Sources/BroadcastOurs"),
        .executableTarget(
            name: "broadcast-ours-loop",
            dependencies: [
                "BenchSupport",
                .product(name: "WebSocket", package: "swift-websocket-node"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            path: "Sources/BroadcastOursLoop"),
        .executableTarget(
            name: "broadcast-hummingbird",
            dependencies: [
                "BenchSupport",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            path: "Sources/BroadcastHummingbird"),
        // The cluster benchmark (cluster.sh): a node with the PostgreSQL broker.
        .executableTarget(
            name: "cluster-node",
            dependencies: [
                "BenchSupport",
                .product(name: "WebSocket", package: "swift-websocket-node"),
                .product(name: "WebSocketPostgres", package: "swift-websocket-node"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Sources/ClusterNode"),
        .executableTarget(
            name: "micro",
            dependencies: [.product(name: "WebSocket", package: "swift-websocket-node"), .product(name: "NIOCore", package: "swift-nio")],
            path: "Sources/Micro"),
    ],
    swiftLanguageModes: [.v6]
)
