#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The command line every echo server takes: `PORT [--threads N] [--deflate]`.
public struct EchoArguments: Sendable {
    /// The TCP port to listen on, on 127.0.0.1.
    public var port = 9000
    /// Event loop threads (default 1).
    public var threads = 1
    /// Negotiate permessage-deflate.
    public var deflate = false

    /// The limit on frames and messages of every server under test: 16 MiB.
    public static let maxSize = 16 << 20

    public init(_ arguments: [String] = CommandLine.arguments) {
        var rest = arguments.dropFirst()
        while let argument = rest.popFirst() {
            switch argument {
            case "--threads": threads = Int(rest.popFirst() ?? "") ?? 1
            case "--deflate": deflate = true
            case "--http": break  // echo-floor reads it itself
            default:
                guard let port = Int(argument) else {
                    print("usage: \(arguments[0]) PORT [--threads N] [--deflate]")
                    exit(2)
                }
                self.port = port
            }
        }
    }
}

/// Prints a line and flushes it, so that a script reading the pipe sees it at once.
public func announce(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
}
