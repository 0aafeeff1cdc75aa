// swift-tools-version:6.0
// Adapters that attach this library to the HTTP server an application already has: a package of
// its own (as Benchmarks/ is), so that the library's users never build Hummingbird or Vapor
// unless they want an adapter. Each adapter is a thin bridge: the framework reads the HTTP
// request, the library decides on the upgrade and runs the connection.
import PackageDescription

let package = Package(
    name: "WebSocketIntegrations",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "WebSocketHummingbird", targets: ["WebSocketHummingbird"]),
        .library(name: "WebSocketVapor", targets: ["WebSocketVapor"]),
        .executable(name: "example-hummingbird", targets: ["HummingbirdExample"]),
        .executable(name: "example-vapor", targets: ["VaporExample"]),
        .executable(name: "article-hummingbird", targets: ["ArticleHummingbird"]),
        .executable(name: "article-vapor", targets: ["ArticleVapor"]),
    ],
    dependencies: [
        .package(name: "swift-websocket-node", path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/vapor/vapor.git", from: "4.122.3"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
    ],
    targets: [
        .target(
            name: "WebSocketHummingbird",
            dependencies: [
                .product(name: "WebSocket", package: "swift-websocket-node"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .target(
            name: "WebSocketVapor",
            dependencies: [
                .product(name: "WebSocket", package: "swift-websocket-node"),
                .product(name: "Vapor", package: "vapor"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]),
        // The example apps: a library each (the tests run it in-process on port 0) and a small
        // executable that runs it on a given port.
        .target(
            name: "HummingbirdExampleApp",
            dependencies: ["WebSocketHummingbird", .product(name: "Hummingbird", package: "hummingbird")]),
        .executableTarget(name: "HummingbirdExample", dependencies: ["HummingbirdExampleApp"]),
        .target(
            name: "VaporExampleApp",
            dependencies: ["WebSocketVapor", .product(name: "Vapor", package: "vapor")]),
        .executableTarget(name: "VaporExample", dependencies: ["VaporExampleApp"]),
        // The article's two programs, compiled as it shows them.
        .executableTarget(
            name: "ArticleHummingbird",
            dependencies: ["WebSocketHummingbird", .product(name: "Hummingbird", package: "hummingbird")]),
        .executableTarget(
            name: "ArticleVapor",
            dependencies: ["WebSocketVapor", .product(name: "Vapor", package: "vapor")]),
        .testTarget(
            name: "IntegrationsTests",
            dependencies: [
                "HummingbirdExampleApp", "VaporExampleApp", "WebSocketHummingbird", "WebSocketVapor",
                .product(name: "WebSocket", package: "swift-websocket-node"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Vapor", package: "vapor"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ]),
    ],
    swiftLanguageModes: [.v6]
)
