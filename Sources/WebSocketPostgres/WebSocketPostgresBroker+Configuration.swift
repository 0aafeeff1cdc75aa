import Foundation
import NIOSSL
import PostgresNIO
import WebSocket

extension WebSocketPostgresBroker {
    /// How the broker reaches PostgreSQL and how it behaves when it cannot.
    public struct Configuration: Sendable {
        /// The database to use: every node of a cluster names the same one.
        public var postgres: PostgresConnection.Configuration
        /// The table of publications (created when missing, with `<table>_retention` and the
        /// function `<table>_publish`); also the NOTIFY channel. A plain lower-case identifier of
        /// at most 48 bytes. Default `websocket_publications`. Nodes of one cluster share it;
        /// separate clusters in one database use different names.
        public var table = "websocket_publications"
        /// This node's name in the table, for people: logs and the table's `node` column. It may
        /// stay the same across restarts (`ws serve --node n1` under a supervisor): what tells
        /// publications apart is the broker's ``WebSocketPostgresBroker/incarnation``, a random
        /// UUID per broker. Default: the host name, the process id and a random suffix.
        public var node = WebSocketPostgresBroker.Configuration.defaultNodeName()
        /// How long rows stay in the table: a node that was away longer than this cannot catch
        /// up on everything it missed and reports a gap (``WebSocketPostgresBroker/onGap(_:)``).
        /// Default 5 minutes.
        public var retention: Duration = .seconds(300)
        /// The most bytes of publications kept in memory while PostgreSQL is unreachable; past
        /// it, `publish` throws ``WebSocketError/Code-swift.struct/brokerUnavailable``. Default
        /// 64 MiB.
        public var maxQueuedBytes = 64 << 20
        /// At most this many publications go to PostgreSQL in one transaction. Default 1,000.
        public var maxBatchCount = 1000
        /// At most this many bytes go to PostgreSQL in one transaction (one publication always
        /// goes, whatever its size). Default 8 MiB.
        public var maxBatchBytes = 8 << 20
        /// The first delay before reconnecting; it doubles on each failed attempt. Default 100 ms.
        public var reconnectInitialDelay: Duration = .milliseconds(100)
        /// The longest delay between reconnect attempts. Default 5 s.
        public var reconnectMaxDelay: Duration = .seconds(5)
        /// How long connecting may take (TCP and authentication), at start and on reconnects.
        /// Default 10 s.
        public var connectTimeout: Duration = .seconds(10)
        /// How long one query may take (a batch stored, a read, a retention round); past it the
        /// connection is taken as lost: closed and made again. Default 10 s.
        public var queryTimeout: Duration = .seconds(10)
        /// How long ``WebSocketPostgresBroker/shutDown()`` waits for queued publications to be
        /// stored. Default 5 s.
        public var shutdownTimeout: Duration = .seconds(5)

        /// Uses `postgres` with the defaults above.
        public init(postgres: PostgresConnection.Configuration) {
            self.postgres = postgres
        }

        /// Reads a URL: `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`, with
        /// `?sslmode=disable` (the default), `prefer` or `require` (TLS with the system's trust
        /// roots). Throws ``WebSocketError/Code-swift.struct/invalidArgument`` naming what is
        /// wrong.
        public init(url: String) throws(WebSocketError) {
            guard let components = URLComponents(string: url),
                  components.scheme == "postgres" || components.scheme == "postgresql" else {
                throw WebSocketError(.invalidArgument, "Not a PostgreSQL URL: \(url) (expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE)")
            }
            guard let host = components.host, !host.isEmpty else {
                throw WebSocketError(.invalidArgument, "The PostgreSQL URL \(url) names no host")
            }
            guard let user = components.user, !user.isEmpty else {
                throw WebSocketError(.invalidArgument, "The PostgreSQL URL \(url) names no user (postgres://USER@\(host)/...)")
            }
            let database = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
            guard !database.isEmpty else {
                throw WebSocketError(.invalidArgument, "The PostgreSQL URL \(url) names no database (postgres://\(user)@\(host)/DATABASE)")
            }
            let port = components.port ?? 5432
            let mode = components.queryItems?.first { $0.name == "sslmode" }?.value ?? "disable"
            let tls: PostgresConnection.Configuration.TLS
            switch mode {
            case "disable": tls = .disable
            case "prefer", "require":
                do {
                    let context = try NIOSSLContext(configuration: .makeClientConfiguration())
                    tls = mode == "require" ? .require(context) : .prefer(context)
                } catch {
                    throw WebSocketError(.invalidArgument, "No TLS context for \(url): \(error)")
                }
            default:
                throw WebSocketError(.invalidArgument, "sslmode=\(mode) in \(url): use disable, prefer or require")
            }
            self.init(postgres: .init(
                host: host, port: port, username: user.removingPercentEncoding ?? user,
                password: components.password?.removingPercentEncoding ?? components.password,
                database: database.removingPercentEncoding ?? database, tls: tls))
        }

        /// `host-pid-random`.
        static func defaultNodeName() -> String {
            let host = ProcessInfo.processInfo.hostName.prefix(40)
            return "\(host)-\(ProcessInfo.processInfo.processIdentifier)-\(UInt32.random(in: 0 ... .max))"
        }

        /// Where it connects, for messages (no password).
        var target: String {
            let host = postgres.host ?? postgres.unixSocketPath ?? "a given channel"
            let port = postgres.port.map { ":\($0)" } ?? ""
            return "PostgreSQL at \(host)\(port) (user \(postgres.username), database \(postgres.database ?? "-"))"
        }

        func validate() throws(WebSocketError) {
            guard PostgresBrokerSQL.isValidIdentifier(table) else {
                throw WebSocketError(.invalidArgument, "The broker's table name \"\(table)\" is not a plain identifier (lower-case letters, digits and _, at most 48 bytes, not starting with a digit)")
            }
            guard !node.isEmpty else {
                throw WebSocketError(.invalidArgument, "The broker's node name is empty")
            }
            guard queryTimeout > .zero, connectTimeout > .zero else {
                throw WebSocketError(.invalidArgument, "The broker's queryTimeout and connectTimeout must be positive")
            }
            guard retention > .zero else {
                throw WebSocketError(.invalidArgument, "The broker's retention must be positive (it is \(retention))")
            }
            guard maxQueuedBytes > 0, maxBatchCount > 0, maxBatchBytes > 0 else {
                throw WebSocketError(.invalidArgument, "maxQueuedBytes, maxBatchCount and maxBatchBytes must be positive")
            }
        }
    }
}
