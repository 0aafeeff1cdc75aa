import Foundation
import NIOCore
import NIOPosix
import Testing

@testable import WebSocket

/// A real reverse proxy in front of the server: nginx from Debian's packages, on 127.0.0.1.
@Suite("Behind nginx")
struct NginxProxyTests {
    static func nginx() throws -> String {
        for candidate in ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"] where FileManager.default.isExecutableFile(atPath: candidate) {
            return candidate
        }
        throw WebSocketError(.invalidArgument, "nginx is not installed: run `apt-get install nginx-light` (scripts/test.sh does it when run as root)")
    }

    /// A free TCP port on 127.0.0.1 (bound, then released).
    static func freePort() async throws -> Int {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        let port = channel.localAddress!.port!
        try await channel.close()
        return port
    }

    @Test("nginx proxies the upgrade; remoteAddress comes from X-Forwarded-For; messages flow both ways")
    func proxied() async throws {
        let nginx = try Self.nginx()
        let requests = Expectation<WebSocketRequest>()
        let server = try await TestServer.start(setup: { server in
            server.onRequest { request in
                requests.fulfill(request)
                guard let connection = try? request.accept() else { return }
                connection.onMessage { connection.send($0) }
                try? connection.ping("from server")
            }
        })
        defer { Task { await server.stop() } }

        let prefix = FileManager.default.temporaryDirectory.appendingPathComponent("ws-nginx-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: prefix, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: prefix) }
        let p = prefix.path
        // A free port can be taken by another test between the check and nginx's bind (the suite
        // runs in parallel): then nginx exits, and a connection to the port may reach whatever
        // took it. So wait for nginx's pid file (written once it listens) while it still runs,
        // and take another port when it exited: three times at most.
        var started: (Process, Int)?
        for _ in 0..<3 where started == nil {
            let port = try await Self.freePort()
            let config = """
                worker_processes 1;
                daemon off;
                pid \(p)/nginx.pid;
                error_log \(p)/error.log;
                events { worker_connections 64; }
                http {
                    access_log off;
                    client_body_temp_path \(p)/body; proxy_temp_path \(p)/proxy;
                    fastcgi_temp_path \(p)/fastcgi; uwsgi_temp_path \(p)/uwsgi; scgi_temp_path \(p)/scgi;
                    map $http_upgrade $connection_upgrade { default upgrade; '' close; }
                    server {
                        listen 127.0.0.1:\(port);
                        location / {
                            proxy_pass http://127.0.0.1:\(server.port);
                            proxy_http_version 1.1;
                            proxy_set_header Upgrade $http_upgrade;
                            proxy_set_header Connection $connection_upgrade;
                            proxy_set_header Host $host;
                            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
                        }
                    }
                }
                """
            try config.write(to: prefix.appendingPathComponent("nginx.conf"), atomically: true, encoding: .utf8)
            try? FileManager.default.removeItem(atPath: "\(p)/nginx.pid")
            let process = Process()
            process.executableURL = URL(fileURLWithPath: nginx)
            process.arguments = ["-p", p, "-c", "\(p)/nginx.conf"]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            try await withTimeout(10, "nginx to listen or exit") {
                while process.isRunning && !FileManager.default.fileExists(atPath: "\(p)/nginx.pid") {
                    try await Task.sleep(for: .milliseconds(20))
                }
            }
            if process.isRunning { started = (process, port) }
        }
        guard let (process, port) = started else {
            let log = (try? String(contentsOfFile: "\(p)/error.log", encoding: .utf8)) ?? ""
            throw InteropError("nginx did not start: \(log)")
        }
        let pid = process.processIdentifier
        defer {
            kill(pid, SIGTERM)
            process.waitUntilExit()
        }

        // Connect through nginx from 127.0.0.5.
        let raw = try await withTimeout(10, "nginx to accept") {
            while true {
                if let raw = try? await RawClient.connect(port: port, from: "127.0.0.5") { return raw }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        // The client forges an X-Forwarded-For of its own; nginx appends the address it saw
        // ($proxy_add_x_forwarded_for), and the server believes only that one.
        let response = try await raw.handshake(path: "/through/nginx", headers: ["X-Forwarded-For: 6.6.6.6"])
        #expect(response.hasPrefix("HTTP/1.1 101"), "\(response)")
        let request = try await requests.value()
        #expect(request.remoteAddress == "127.0.0.5")
        #expect(request.remoteAddresses == ["6.6.6.6", "127.0.0.5", "127.0.0.1"])
        #expect(request.socket.remoteAddress?.ipAddress == "127.0.0.1")
        #expect(request.resource == "/through/nginx")

        let ping = try #require(try await raw.readFrame())
        #expect(ping.opcode == .ping && ping.binaryPayload == ByteBuffer(string: "from server"))
        try await raw.send(frame: WebSocketFrame(opcode: .text, binaryPayload: ByteBuffer(string: "through the proxy ✓")))
        let echo = try #require(try await raw.readFrame())
        #expect(echo.opcode == .text && echo.binaryPayload == ByteBuffer(string: "through the proxy ✓"))
        try await raw.send(frame: WebSocketFrame(opcode: .connectionClose, binaryPayload: ByteBuffer(bytes: [0x03, 0xE8])))
        #expect(try await raw.readCloseCode() == 1000)
    }
}
