import Foundation
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle
import Testing

@testable import WebSocket

/// Test-only TLS material from Tests/WebSocketTests/Resources/tls.
enum TestTLS {
    static func path(_ name: String) -> String {
        Bundle.module.url(forResource: "Resources/tls/\(name)", withExtension: nil)!.path
    }
    static var caFile: String { path("ca.pem") }
    static func serverConfiguration() throws -> TLSConfiguration {
        try WebSocketServer.tlsConfiguration(certificateChainFile: path("server.pem"), privateKeyFile: path("server-key.pem"))
    }
}

@Suite("wss:// listeners and ServiceLifecycle")
struct TLSAndLifecycleTests {
    @Test("one server listens on ws:// and wss:// at once; Python websockets talks to both, trusting the test CA")
    func plainAndTLS() async throws {
        let server = try await TestServer.echo(Interop.largeLimits)
        defer { Task { await server.stop() } }
        let tlsAddress = try await server.server.listen(host: "127.0.0.1", port: 0, tlsConfiguration: TestTLS.serverConfiguration())
        #expect(server.server.localAddresses.count == 2)
        setenv("WS_TEST_CAFILE", TestTLS.caFile, 1)
        let tls = try await Interop.runPythonClient(url: "wss://localhost:\(tlsAddress.port!)/", scenario: "binary")
        #expect(tls["close_code"] as? Int == 1000)
        let plain = try await Interop.runPythonClient(url: server.url, scenario: "text")
        #expect(plain["texts"] as? Int == 3)
    }

    @Test("our client over wss:// to our server's TLS listener, trusting the test CA, with deflate")
    func ourClientOverTLS() async throws {
        let accepted = Expectation<WebSocketConnection>()
        let server = try await TestServer.start({ $0.perMessageDeflate = PerMessageDeflate.Options() }, setup: { server in
            server.onRequest { request in
                request.onRequestAccepted { accepted.fulfill($0) }
                guard let connection = try? request.accept(protocol: request.requestedProtocols.first) else { return }
                connection.onMessage { connection.send($0) }
            }
        })
        defer { Task { await server.stop() } }
        let address = try await server.server.listen(host: "127.0.0.1", port: 0, tlsConfiguration: TestTLS.serverConfiguration())
        var configuration = WebSocketClient.Configuration()
        configuration.tlsConfiguration = try WebSocketClient.tlsConfiguration(caFile: TestTLS.caFile)
        configuration.perMessageDeflate = PerMessageDeflate.Options()
        let client = try await WebSocketClient(configuration: configuration).connect(url: "wss://localhost:\(address.port!)/secure", protocols: ["tls"])
        #expect(client.extensions.map(\.name) == ["permessage-deflate"])
        let serverSide = try await accepted.value()
        #expect(serverSide.protocol == "tls")
        #expect(serverSide.extensions.map(\.name) == ["permessage-deflate"])
        let text = String(repeating: "secret and compressed ", count: 100)
        try await client.write(text)
        #expect(try await withTimeout(5) { try await client.messages.first { _ in true } } == .utf8(text))
        try client.close()
    }

    @Test("a TLS handshake failure gives an upgradeError and leaves the server running")
    func tlsFailure() async throws {
        let errors = Expectation<String>()
        let server = try await TestServer.echo()
        server.server.onUpgradeError { errors.fulfill("\($0)") }
        defer { Task { await server.stop() } }
        let address = try await server.server.listen(host: "127.0.0.1", port: 0, tlsConfiguration: TestTLS.serverConfiguration())
        let raw = try await RawClient.connect(port: address.port!)
        try await raw.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try await raw.waitForEOF()
        #expect(try await errors.value().contains("TLS handshake failed"))
        setenv("WS_TEST_CAFILE", TestTLS.caFile, 1)
        let after = try await Interop.runPythonClient(url: "wss://localhost:\(address.port!)/", scenario: "ping")
        #expect(after["close_code"] as? Int == 1000)
    }

    @Test("bad PEM files give a clear error")
    func badPEM() {
        #expect(throws: WebSocketError.self) {
            try WebSocketServer.tlsConfiguration(certificateChainFile: "/nonexistent.pem", privateKeyFile: "/nonexistent-key.pem")
        }
        #expect(throws: WebSocketError.self) {
            try WebSocketServer.tlsConfiguration(certificateChainPEM: "not a certificate", privateKeyPEM: "nor a key")
        }
    }

    @Test("as a Service in a ServiceGroup: graceful shutdown sends 1001 and run() returns")
    func serviceGroup() async throws {
        var configuration = WebSocketServer.Configuration()
        configuration.autoAcceptConnections = true
        let server = WebSocketServer(configuration: configuration, listeners: [.init(host: "127.0.0.1", port: 0)])
        let group = ServiceGroup(configuration: .init(services: [server], logger: Logger(label: "test.servicegroup")))
        let running = Task { try await group.run() }
        let address = try await withTimeout(5) {
            while server.localAddresses.isEmpty { try await Task.sleep(for: .milliseconds(10)) }
            return server.localAddresses[0]
        }
        let client = try await WebSocketClient().connect(url: "ws://127.0.0.1:\(address.port!)/")
        let closed = Expectation<Int>()
        client.onClose { code, _ in closed.fulfill(code) }
        await group.triggerGracefulShutdown()
        #expect(try await closed.value(15) == 1001)
        try await withTimeout(15) { try await running.value }
        #expect(server.localAddresses.isEmpty)
    }
}
