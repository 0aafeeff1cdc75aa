// A Hummingbird app with an HTTP JSON route and this library's WebSockets on one port:
//   swift run example-hummingbird [port]     (default 8080; 0 picks a free port)
// It prints "listening on ws://HOST:PORT/" once it listens (scripts read the port from it).
import Foundation
import Hummingbird
import HummingbirdExampleApp
import Logging

var logger = Logger(label: "example-hummingbird")
logger.logLevel = ProcessInfo.processInfo.environment["LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .warning
let port = CommandLine.arguments.dropFirst().first.flatMap(Int.init) ?? 8080
let (application, _) = try HummingbirdExample.makeApplication(port: port, logger: logger) { channel in
    let bound = channel.localAddress?.port ?? port
    // Unbuffered: a script reads the port from this line while the app runs.
    let line = "example-hummingbird: listening on ws://127.0.0.1:\(bound)/ (HTTP: http://127.0.0.1:\(bound)/status, WebSockets: /echo, /chat)\n"
    FileHandle.standardOutput.write(Data(line.utf8))
}
try await application.runService()
