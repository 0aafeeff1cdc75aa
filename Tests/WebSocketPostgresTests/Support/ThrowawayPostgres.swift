import Foundation
import NIOCore
import NIOPosix
import PostgresNIO
import WebSocket
import WebSocketPostgres

/// A PostgreSQL 15 cluster of its own for one test: `initdb` in a temporary directory, started
/// with `pg_ctl` on a free port of 127.0.0.1 (as the `postgres` OS user when the tests run as
/// root: PostgreSQL refuses to run as root), password authentication over TCP for user `ws`
/// (password `secret`, a database named after the instance: `database`). `destroy()` stops it
/// and removes the directory.
///
/// Each instance's database has a name of its own: a port is reused once its server stops, and
/// the nodes of a test whose PostgreSQL is stopped keep reconnecting to its port. Should another
/// test's instance get that port, they would otherwise log in to it (same user, same password)
/// and publish into a stranger's table.
final class ThrowawayPostgres: Sendable {
    static let binaries = "/usr/lib/postgresql/15/bin"
    static let user = "ws"
    static let password = "secret"

    let directory: String
    let port: Int
    /// This instance's database: `ws_` and the directory's random suffix.
    let database: String
    /// The network namespace it runs in (nil: this process's), and the addresses it listens on.
    let namespace: String?
    let addresses: [String]

    /// Whether PostgreSQL 15 is installed (scripts/test.sh installs Debian's `postgresql`).
    static var isInstalled: Bool {
        FileManager.default.isExecutableFile(atPath: "\(binaries)/initdb")
    }

    private init(directory: String, port: Int, namespace: String? = nil, addresses: [String] = ["127.0.0.1"]) {
        self.directory = directory
        self.port = port
        self.database = "ws_" + directory.split(separator: "-").last!.lowercased()
        self.namespace = namespace
        self.addresses = addresses
    }

    var url: String { "postgres://\(Self.user):\(Self.password)@127.0.0.1:\(port)/\(database)" }

    var configuration: PostgresConnection.Configuration {
        .init(host: "127.0.0.1", port: port, username: Self.user, password: Self.password, database: database, tls: .disable)
    }

    /// Starts one; with `namespace`, inside that network namespace (made by the test), listening
    /// on `addresses` there and accepting password logins from 10.0.0.0/8.
    static func start(namespace: String? = nil, addresses: [String] = ["127.0.0.1"]) async throws -> ThrowawayPostgres {
        guard isInstalled else {
            throw PostgresTestError("PostgreSQL 15 is not installed: run `apt-get install postgresql` (scripts/test.sh does it when run as root)")
        }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ws-pg-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let passwordFile = directory + "/password"
        try password.write(toFile: passwordFile, atomically: true, encoding: .utf8)
        if getuid() == 0 {
            try run("/bin/chown", ["-R", "postgres:postgres", directory], asPostgres: false)
        }
        try run("\(binaries)/initdb", [
            "-D", directory + "/data", "-U", user, "--pwfile=\(passwordFile)", "--auth-local=trust",
            "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8", "--locale=C",
        ])
        if namespace != nil {
            let hba = directory + "/data/pg_hba.conf"
            let lines = ((try? String(contentsOfFile: hba, encoding: .utf8)) ?? "") + "\nhost all all 10.0.0.0/8 scram-sha-256\n"
            try lines.write(toFile: hba, atomically: false, encoding: .utf8)
        }
        // A free port can be taken between the check and the start (suites run in parallel):
        // try another one, three times at most, and say what the server logged.
        var attempt = 0
        while true {
            let server = ThrowawayPostgres(directory: directory, port: try await freePort(), namespace: namespace, addresses: addresses)
            do {
                try server.startServer()
                try run("\(binaries)/createdb", ["-h", directory, "-p", "\(server.port)", "-U", user, server.database])
                return server
            } catch {
                attempt += 1
                _ = try? server.stopServer(immediate: true)
                let log = (try? String(contentsOfFile: directory + "/log", encoding: .utf8)) ?? ""
                guard attempt < 3 else { throw PostgresTestError("\(error); the server's log: \(log.suffix(2000))") }
            }
        }
    }

    /// Starts (again) the server on its port.
    func startServer() throws {
        let arguments = [
            "-D", directory + "/data", "-l", directory + "/log", "-w", "-t", "30",
            "-o", "-p \(port) -c listen_addresses=\(addresses.joined(separator: ",")) -k \(directory) -c fsync=off -c max_connections=60", "start",
        ]
        if let namespace {
            // The postmaster pg_ctl forks stays in the namespace.
            let user = getuid() == 0 ? ["/usr/sbin/runuser", "-u", "postgres", "--"] : []
            try Self.run("/usr/sbin/ip", ["netns", "exec", namespace] + user + ["\(Self.binaries)/pg_ctl"] + arguments, asPostgres: false)
        } else {
            try Self.run("\(Self.binaries)/pg_ctl", arguments)
        }
    }

    /// Stops the server; `immediate` is a crash as far as clients can tell (connections cut,
    /// no shutdown handshake).
    func stopServer(immediate: Bool = true) throws {
        try Self.run("\(Self.binaries)/pg_ctl", ["-D", directory + "/data", "-m", immediate ? "immediate" : "fast", "-w", "-t", "30", "stop"])
    }

    /// Runs SQL as the superuser (over the socket) and returns psql's output.
    @discardableResult
    func psql(_ sql: String) throws -> String {
        try Self.run("/usr/bin/psql", ["-h", directory, "-p", "\(port)", "-U", Self.user, "-d", database, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
    }

    func destroy() {
        _ = try? stopServer(immediate: true)
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Runs a program to its end (at most 60 s), as the `postgres` user when running as root;
    /// throws with its output when it fails.
    ///
    /// posix_spawn and waitpid, not Foundation's Process: Process on Linux sees a program end
    /// only when every process holding a descriptor it passed on has ended, and `pg_ctl start`
    /// leaves the server running with it.
    @discardableResult
    static func run(_ executable: String, _ arguments: [String], asPostgres: Bool = true) throws -> String {
        let argv = asPostgres && getuid() == 0 ? ["/usr/sbin/runuser", "-u", "postgres", "--", executable] + arguments : [executable] + arguments
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("ws-pg-run-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: output) }
        let pid = try spawn(argv, output: output)
        var status: Int32 = 0
        let deadline = Date().addingTimeInterval(60)
        while waitpid(pid, &status, WNOHANG) == 0 {
            guard Date() < deadline else {
                kill(pid, SIGKILL)
                waitpid(pid, &status, 0)
                throw PostgresTestError("\(executable) \(arguments.joined(separator: " ")) did not end within 60 s")
            }
            usleep(10_000)
        }
        let text = ((try? String(contentsOfFile: output, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        let exited = status & 0x7f == 0
        let code = (status >> 8) & 0xff
        guard exited && code == 0 else {
            throw PostgresTestError("\(executable) \(arguments.joined(separator: " ")) failed (status \(status)): \(text)")
        }
        return text
    }

    /// Starts `argv` with stdin from /dev/null and stdout and stderr into the file `output`.
    /// posix_spawn rather than Foundation's Process: see `run`.
    static func spawn(_ argv: [String], output: String) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let cArguments = argv.map { strdup($0) } + [nil]
        defer { for argument in cArguments { free(argument) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, argv[0], &actions, nil, cArguments, environ)
        guard spawned == 0 else { throw PostgresTestError("could not start \(argv[0]): error \(spawned)") }
        return pid
    }

    /// A free TCP port on 127.0.0.1 (bound, then released).
    static func freePort() async throws -> Int {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        let port = channel.localAddress!.port!
        try await channel.close()
        return port
    }
}

struct PostgresTestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
