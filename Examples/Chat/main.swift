// example-chat: a chat room in structured concurrency: requests and messages as async
// sequences, one child task per member, an actor for the room.
//
//     swift run example-chat [port]                  # default 8080
//     swift run ws connect "ws://127.0.0.1:8080/?name=ann" --protocol chat
//     swift run ws connect "ws://127.0.0.1:8080/?name=bob" --protocol chat
//
// Every line one member types is sent to every member as "name: text".

import Foundation  // exit
import WebSocket

let port = CommandLine.arguments.dropFirst().first.flatMap { Int($0) } ?? 8080

/// The members of the room. An actor: members join, leave and speak from many tasks at once.
actor ChatRoom {
    private var members: [ObjectIdentifier: (name: String, connection: WebSocketConnection)] = [:]

    func join(_ name: String, _ connection: WebSocketConnection) {
        members[ObjectIdentifier(connection)] = (name, connection)
        broadcast("* \(name) joined (\(members.count) here)")
    }

    func leave(_ connection: WebSocketConnection) {
        guard let member = members.removeValue(forKey: ObjectIdentifier(connection)) else { return }
        broadcast("* \(member.name) left")
    }

    func broadcast(_ text: String) {
        for member in members.values {
            // `completion:` picks the send that returns at once (in async code plain
            // `sendUTF(text)` is the variant that waits for the write): one slow member must
            // not hold up the others.
            member.connection.sendUTF(text, completion: nil)
        }
    }
}

/// One member, from the handshake to the end of its connection.
func serve(_ request: WebSocketRequest, room: ChatRoom) async {
    guard request.requestedProtocols.contains("chat") else {
        request.reject(status: 400, reason: "Ask for the chat subprotocol")
        return
    }
    let name = request.resourceURL.queryItem(named: "name") ?? "guest"
    guard let connection = try? request.accept(protocol: "chat", origin: request.origin) else { return }
    await room.join(name, connection)
    do {
        // Ends when the connection closes; throws if it failed with a socket error.
        for try await message in connection.messages {
            switch message {
            case .utf8(let text):
                await room.broadcast("\(name): \(text)")
            case .binary:
                // A chat is text: close with 1003 "Unprocessable input".
                try? connection.close(reasonCode: WebSocketConnection.CLOSE_REASON_UNPROCESSABLE_INPUT, description: "Text only")
            }
        }
    } catch {
        print("\(name): connection failed: \(error)")
    }
    await room.leave(connection)
}

let server = WebSocketServer()
let room = ChatRoom()
do {
    let address = try await server.listen(host: "127.0.0.1", port: port)
    print("Chat room on ws://127.0.0.1:\(address.port ?? port)/?name=YOUR_NAME (subprotocol: chat)")
} catch {
    print("Cannot listen on 127.0.0.1:\(port): \(error)")
    exit(1)
}

// `server.requests` is the `request` event as an AsyncSequence. Each request must be accepted
// or rejected within `requestTimeout` (10 s by default), so hand each to its own task at once.
await withTaskGroup(of: Void.self) { group in
    for await request in server.requests {
        group.addTask { await serve(request, room: room) }
    }
}
