// example-client: connect, send, read the echoes, close; async/await.
//
//     swift run example-echo-server &               # or: swift run ws serve
//     swift run example-client [ws://127.0.0.1:8080/]
//
// The same in Node-style callbacks is shown at the end, as a comment.

import Foundation  // exit
import NIOCore  // ByteBuffer
import WebSocket

let url = CommandLine.arguments.dropFirst().first ?? "ws://127.0.0.1:8080/"

/// Connects, sends three messages, prints their echoes and closes.
func run(url: String) async throws {
    // `new WebSocketClient()`: defaults are WebSocket-Node's (8 MiB messages, 5 s close timeout…).
    let client = WebSocketClient()

    // `client.connect(url, 'echo-protocol')`; the async variant returns the open connection or
    // throws a WebSocketError whose `code` says why (.connectionRefused, .unexpectedStatus, …).
    let connection = try await client.connect(url: url, protocols: ["echo-protocol"])
    print("WebSocket Client Connected (protocol: \(connection.protocol ?? "none"))")

    // The async send variants return once the message is written to the socket.
    try await connection.write("Hello, server")
    try await connection.write(ByteBuffer(bytes: [0xDE, 0xAD, 0xBE, 0xEF]))
    let number = Int.random(in: 0..<0xFFFFFF)
    try await connection.write("Random number: \(number)")

    // Messages as an async sequence; it ends when the connection closes. No message is lost
    // between `connect` and the start of this loop.
    var received = 0
    for try await message in connection.messages {
        switch message {
        case .utf8(let text): print("Received: '\(text)'")
        case .binary(let bytes): print("Received \(bytes.readableBytes) bytes: \(Array(bytes.readableBytesView))")
        }
        received += 1
        if received == 3 {
            try connection.close()  // 1000 "Normal connection closure"; waits for the server's close frame
        }
    }
    print("Closed with \(connection.closeReasonCode): \(connection.closeDescription ?? "")")
}

do {
    try await run(url: url)
} catch let error as WebSocketError {
    print("Error: \(error.message) [\(error.code)]")
    exit(1)
}

// The same, Node-style (the URL without a label picks the callback form of connect):
//
//     client.onConnectFailed { error in print("Connect Error: \(error)") }
//     client.onConnect { connection in
//         connection.onError { error in print("Connection Error: \(error)") }
//         connection.onClose { _, _ in print("echo-protocol Connection Closed") }
//         connection.onMessage { message in print("Received: '\(message.utf8Data ?? "")'") }
//         connection.sendUTF("Hello, server")
//     }
//     client.connect(url, protocols: ["echo-protocol"])
