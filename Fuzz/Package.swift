// swift-tools-version:6.0
// libFuzzer targets for the WebSocket library. Build and run them with `Fuzz/run.sh`
// (swift build -c release -Xswiftc -sanitize=fuzzer,address -Xswiftc -enable-testing).
// Each target is an executable whose sources define only `LLVMFuzzerTestOneInput` (compiled
// with -parse-as-library); its `main` (SwiftPM's `<Target>_main`, in FuzzMain) runs libFuzzer's
// driver.
import PackageDescription

// The library is the package one folder up; SwiftPM names a path dependency after its folder.
let libraryPackage = String(#filePath.split(separator: "/").dropLast(2).last ?? "main")

let fuzzFlags: [SwiftSetting] = [.unsafeFlags(["-parse-as-library"])]

func fuzzTarget(_ name: String, _ dependencies: [Target.Dependency]) -> Target {
    .executableTarget(name: name, dependencies: dependencies + ["FuzzMain"], path: "Sources/\(name)", swiftSettings: fuzzFlags)
}

let webSocket: Target.Dependency = .product(name: "WebSocket", package: libraryPackage)
let nioCore: Target.Dependency = .product(name: "NIOCore", package: "swift-nio")
let nioEmbedded: Target.Dependency = .product(name: "NIOEmbedded", package: "swift-nio")
let nioHTTP1: Target.Dependency = .product(name: "NIOHTTP1", package: "swift-nio")
let support: Target.Dependency = "FuzzSupport"

let package = Package(
    name: "WebSocketFuzz",
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
    ],
    targets: [
        .target(name: "FuzzMain"),
        .target(
            name: "FuzzSupport",
            dependencies: [webSocket, nioCore, nioEmbedded, .product(name: "Logging", package: "swift-log")]),
        fuzzTarget("FuzzReceiver", [webSocket, nioCore]),
        fuzzTarget("FuzzConnection", [webSocket, nioCore, nioEmbedded, support]),
        fuzzTarget("FuzzHandshake", [webSocket, nioCore, nioEmbedded, support]),
        fuzzTarget("FuzzExtensionOffers", [webSocket, nioCore, support]),
        fuzzTarget("FuzzInflate", [webSocket, nioCore, support]),
    ],
    swiftLanguageModes: [.v6]
)
