import Logging
import NIOConcurrencyHelpers
import WebSocket

/// The `/chat` room of `ws serve`: every text message a member sends is broadcast to every
/// member; joins and leaves are announced with the member count.
///
/// The server speaks JSON lines: `{"type":"join","name":…,"count":N}`,
/// `{"type":"message","from":…,"text":…}`, `{"type":"leave","name":…,"count":N}`, and to a new
/// member `{"type":"welcome","name":…,"count":N}`. Members send plain text.
final class ChatRoom: Sendable {
    private struct Member {
        var connection: WebSocketConnection
        var name: String
    }
    private let members = NIOLockedValueBox<(next: Int, all: [ObjectIdentifier: Member])>((0, [:]))
    private let logger: Logger

    init(logger: Logger) {
        self.logger = logger
    }

    /// Mounts the room on `router` at `/chat` for subprotocol `chat`.
    func mount(on router: WebSocketRouter) throws {
        try router.mount("/chat", protocol: "chat") { [self] request in
            guard let connection = try? request.accept(origin: request.origin) else { return }
            let wanted = request.resourceURL.queryItem(named: "name")
            join(connection, wanted: wanted)
        }
    }

    var count: Int { members.withLockedValue { $0.all.count } }

    private func join(_ connection: WebSocketConnection, wanted: String?) {
        let id = ObjectIdentifier(connection)
        let (name, count) = members.withLockedValue { state -> (String, Int) in
            state.next += 1
            let clean = wanted.map { String($0.filter { !$0.isNewline }.prefix(32)) }
            let name = (clean?.isEmpty == false ? clean! : "guest-\(state.next)")
            state.all[id] = Member(connection: connection, name: name)
            return (name, state.all.count)
        }
        logger.info("chat join", metadata: ["name": "\(name)", "members": "\(count)", "remote": "\(connection.remoteAddress)"])
        connection.sendUTF(Self.json(["type": "welcome", "name": name, "count": count]))
        broadcast(Self.json(["type": "join", "name": name, "count": count]), except: id)
        connection.onMessage { [self] message in
            guard case .utf8(let text) = message else { return }
            broadcast(Self.json(["type": "message", "from": name, "text": text]), except: nil)
        }
        connection.onClose { [self] code, _ in
            let left = members.withLockedValue { state -> Int in
                state.all.removeValue(forKey: id)
                return state.all.count
            }
            logger.info("chat leave", metadata: ["name": "\(name)", "members": "\(left)", "code": "\(code)"])
            broadcast(Self.json(["type": "leave", "name": name, "count": left]), except: nil)
        }
    }

    private func broadcast(_ text: String, except: ObjectIdentifier?) {
        let targets = members.withLockedValue { state in state.all.filter { $0.key != except }.map(\.value.connection) }
        for connection in targets { connection.sendUTF(text) }
    }

    /// A flat JSON object of strings and integers.
    static func json(_ fields: [String: any Sendable]) -> String {
        let body = fields.sorted { $0.key < $1.key }.map { key, value -> String in
            let rendered: String
            if let number = value as? Int { rendered = String(number) } else { rendered = quote("\(value)") }
            return "\(quote(key)):\(rendered)"
        }
        return "{" + body.joined(separator: ",") + "}"
    }

    static func quote(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}
