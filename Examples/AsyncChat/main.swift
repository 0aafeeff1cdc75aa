// example-async-chat: chat rooms in async code, with a graceful shutdown. Each request is
// handled by an async function in a task of its own; on SIGINT (Ctrl-C) or SIGTERM every member
// gets close code 1001 "going away", every handler returns, and the process exits 0.
//
//     swift run example-async-chat [port]               # default 8080; 0 picks a free one
//     swift run ws connect "ws://127.0.0.1:8080/?room=swift&name=ann" --protocol chat
//     swift run ws connect "ws://127.0.0.1:8080/?room=swift&name=bob" --protocol chat
//
// Every line a member types goes to every member of the same room as "name: text".
//
// `server.run(handlingRequests:)` is the server's one service in the ServiceGroup (wrapped in
// ServiceLifecycle's `ClosureService`): do not add `server` beside it. It stops listening, sends
// 1001 to every connection, waits for them to close and for the handlers to return, then
// returns, so the group ends without an error. (A second service iterating `server.requests`
// would end when the server's shutdown ends that sequence, before the group asked it to: a
// `ServiceGroupError`.)

import Foundation  // exit
import ServiceLifecycle  // ServiceGroup, ClosureService: add swift-service-lifecycle to your package
import WebSocket  // also brings Logger, ByteBuffer and TLSConfiguration

let port = CommandLine.arguments.dropFirst().first.flatMap { Int($0) } ?? 8080

/// The rooms and their members. An actor: members join, leave and speak from many tasks at once.
actor ChatRooms {
    private var rooms: [String: [ObjectIdentifier: (name: String, connection: WebSocketConnection)]] = [:]

    func join(_ room: String, _ name: String, _ connection: WebSocketConnection) {
        rooms[room, default: [:]][ObjectIdentifier(connection)] = (name, connection)
        broadcast(in: room, "* \(name) joined \(room) (\(rooms[room, default: [:]].count) here)")
    }

    func leave(_ room: String, _ connection: WebSocketConnection) {
        guard let member = rooms[room]?.removeValue(forKey: ObjectIdentifier(connection)) else { return }
        if rooms[room]?.isEmpty == true { rooms[room] = nil }
        broadcast(in: room, "* \(member.name) left")
    }

    func broadcast(in room: String, _ text: String) {
        for member in rooms[room, default: [:]].values {
            // `completion:` picks the send that returns at once: one slow member must not hold
            // up the others (the async `sendUTF(_:)` waits for the write).
            member.connection.sendUTF(text, completion: nil)
        }
    }
}

/// One member, from the handshake until its connection has closed: the server waits for this
/// function to return when it shuts down, so it must not outlive the connection.
func serve(_ request: WebSocketRequest, rooms: ChatRooms) async throws {
    guard request.requestedProtocols.contains("chat") else {
        request.reject(status: 400, reason: "Ask for the chat subprotocol")
        return
    }
    let room = request.resourceURL.queryItem(named: "room") ?? "lobby"
    let name = request.resourceURL.queryItem(named: "name") ?? "guest"
    let connection = try request.accept(protocol: "chat", origin: request.origin)
    await rooms.join(room, name, connection)
    do {
        // Ends when the connection closes (on shutdown: with 1001); throws on a socket error.
        for try await message in connection.messages {
            switch message {
            case .utf8(let text):
                await rooms.broadcast(in: room, "\(name): \(text)")
            case .binary:
                try connection.close(reasonCode: WebSocketCloseReason.unprocessableInput, description: "Text only")
            }
        }
    } catch {
        print("\(name): \(error)")
    }
    await rooms.leave(room, connection)
    print("\(name) left \(room): \(connection.closeReasonCode) \(connection.closeDescription ?? "")")
}

let logger = Logger(label: "example-async-chat")
let server = WebSocketServer(logger: logger, listeners: [.init(host: "127.0.0.1", port: port)])
let rooms = ChatRooms()
let chat = ClosureService {
    try await server.run(handlingRequests: { request in try await serve(request, rooms: rooms) })
}
let group = ServiceGroup(services: [chat], gracefulShutdownSignals: [.sigint, .sigterm], logger: logger)

print("Chat rooms on ws://127.0.0.1:\(port)/?room=ROOM&name=NAME, subprotocol chat (Ctrl-C to stop)")
do {
    try await group.run()
    print("Stopped.")
} catch {
    print("Stopped: \(error)")  // e.g. the port is in use
    exit(1)
}
