import Logging
import NIOConcurrencyHelpers
import WebSocket

/// The `/chat` room of `ws serve`, built on the server's topics: every member is subscribed to
/// the topic `chat`; every text message a member sends is published to all of them (the sender
/// included); joins and leaves are announced with the member count.
///
/// The server speaks JSON lines: `{"type":"join","name":…,"count":N}`,
/// `{"type":"message","from":…,"text":…}`, `{"type":"leave","name":…,"count":N}`, and to a new
/// member `{"type":"welcome","name":…,"count":N}`. Members send plain text.
final class ChatRoom: Sendable {
    /// The topic every member is subscribed to.
    static let topic = "chat"
    private let server: WebSocketServer
    private let guests = NIOLockedValueBox(0)
    private let logger: Logger

    init(server: WebSocketServer, logger: Logger) {
        self.server = server
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

    var count: Int { server.subscriberCount(of: Self.topic) }

    private func join(_ connection: WebSocketConnection, wanted: String?) {
        let clean = wanted.map { String($0.filter { !$0.isNewline }.prefix(32)) }
        let name = clean?.isEmpty == false ? clean! : "guest-\(guests.withLockedValue { $0 += 1; return $0 })"
        // The welcome goes out before any message of the room: both take the connection's event
        // loop, the direct send first.
        connection.sendUTF(Self.json(["type": "welcome", "name": name, "count": count + 1]))
        guard (try? connection.subscribe(to: Self.topic)) == true else { return }
        let members = count
        logger.info("chat join", metadata: ["name": "\(name)", "members": "\(members)", "remote": "\(connection.remoteAddress)"])
        publish(Self.json(["type": "join", "name": name, "count": members]), except: connection)
        connection.onMessage { [self] message in
            guard case .utf8(let text) = message else { return }
            if !publish(Self.json(["type": "message", "from": name, "text": text])) {
                connection.sendUTF(Self.json(["type": "error", "text": "not sent: the cluster's broker is unavailable"]))
            }
        }
        connection.onClose { [self] code, _ in
            // The connection left the topic before this event.
            let left = count
            logger.info("chat leave", metadata: ["name": "\(name)", "members": "\(left)", "code": "\(code)"])
            publish(Self.json(["type": "leave", "name": name, "count": left]))
        }
    }

    /// Publishes to the room (everyone but `sender`, when given); false, with a log line, when
    /// the cluster's broker refuses it (nobody got it).
    @discardableResult
    private func publish(_ text: String, except sender: WebSocketConnection? = nil) -> Bool {
        do {
            if let sender { try sender.publish(text, to: Self.topic) } else { try server.publish(text, to: Self.topic) }
            return true
        } catch {
            logger.warning("chat publish refused", metadata: ["error": "\(error)"])
            return false
        }
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
