import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import WebSocket

/// The other end of a connection whose handlers (the library's real ones) run in a
/// `NIOAsyncTestingChannel`, on virtual time: the test feeds the bytes the peer sends, reads the
/// bytes the library writes, and moves the clock with ``advance(by:)``. Timers fire when the
/// clock reaches them and never otherwise, so a test can check that nothing happens one
/// nanosecond before a deadline and that the action happens at it, with no sleep and no
/// dependence on the machine's load.
///
/// Use it through ``withServer(_:setup:_:)`` or ``withClient(_:_:)``, which shut the channel and
/// its event loop down whatever the test does.
final class VirtualPeer: Sendable {
    let channel: NIOAsyncTestingChannel
    var loop: NIOAsyncTestingEventLoop { channel.testingEventLoop }
    /// Bytes the library wrote that no read has consumed yet.
    private let written = NIOLockedValueBox(ByteBuffer())

    private init(channel: NIOAsyncTestingChannel) {
        self.channel = channel
    }

    /// The virtual time since the peer was created.
    var elapsed: TimeAmount { .nanoseconds(Int64(loop.now.uptimeNanoseconds)) }

    /// Moves the clock forward by `amount`, running every timer due until then (in order).
    func advance(by amount: TimeAmount) async {
        await loop.advanceTime(by: amount)
    }

    /// Runs what is queued on the event loop now (a barrier for work the library hands to it).
    func settle() async {
        await loop.run()
    }

    /// Whether the library closed the connection.
    var isClosed: Bool { !channel.isActive }

    // MARK: What the peer sends

    func send(_ bytes: [UInt8]) async throws {
        try await channel.writeInbound(ByteBuffer(bytes: bytes))
        await settle()
    }

    func send(_ text: String) async throws {
        try await send(Array(text.utf8))
    }

    /// Sends a frame; masked (as a client must) unless `masked` is false.
    func send(frame: WebSocketFrame, masked: Bool) async throws {
        var frame = frame
        frame.mask = masked
        if masked && frame.maskingKey == nil { frame.maskingKey = WebSocketMaskingKey(1, 2, 3, 4) }
        try await channel.writeInbound(frame.serialized())
        await settle()
    }

    // MARK: What the library writes

    /// Moves everything the library wrote so far into `written`.
    private func collect() async throws {
        while let buffer = try await channel.readOutbound(as: ByteBuffer.self) {
            var buffer = buffer
            written.withLockedValue { $0.writeBuffer(&buffer) }
        }
    }

    /// The complete frames written since the last read.
    func frames() async throws -> [WebSocketFrame] {
        try await collect()
        return try written.withLockedValue { buffer in
            var frames: [WebSocketFrame] = []
            while let frame = try WebSocketFrame.parse(from: &buffer) { frames.append(frame) }
            return frames
        }
    }

    /// The close code of the one frame written since the last read, which must be a close frame.
    func closeCode() async throws -> Int? {
        let frames = try await frames()
        guard frames.count == 1, let frame = frames.first, frame.opcode == .connectionClose else {
            Issue.record("expected one close frame, got \(frames.map(\.opcode))")
            return nil
        }
        var payload = frame.binaryPayload
        return payload.readInteger(as: UInt16.self).map(Int.init)
    }

    /// An HTTP head written since the last read, up to its blank line (nil while incomplete).
    func httpHead() async throws -> String? {
        try await collect()
        return written.withLockedValue { buffer in
            let view = buffer.readableBytesView
            guard let end = view.firstRange(of: Array("\r\n\r\n".utf8)) else { return nil }
            return buffer.readString(length: end.upperBound - view.startIndex)
        }
    }

    /// Everything written since the last read, as text.
    func text() async throws -> String {
        try await collect()
        return written.withLockedValue { $0.readString(length: $0.readableBytes) ?? "" }
    }

    // MARK: Setting up

    /// Closes the channel (if the library did not) and shuts the event loop down, cancelling
    /// the timers still scheduled.
    private func finish() async {
        _ = try? await channel.finish(acceptAlreadyClosed: true)
        await loop.shutdownGracefully()
    }

    private static func run<T>(_ peer: VirtualPeer, _ body: (VirtualPeer) async throws -> T) async throws -> T {
        do {
            let result = try await body(peer)
            await peer.finish()
            return result
        } catch {
            await peer.finish()
            throw error
        }
    }

    /// A WebSocket server's connection on virtual time: the server's own pipeline
    /// (`configurePipeline`, with its handshake timers) on a channel from 127.0.0.1, whose
    /// requests `setup` handles (by default: accepted, the connection recorded in
    /// `server.accepted`). The peer plays the client.
    static func withServer<T>(
        _ configure: (inout WebSocketServer.Configuration) -> Void = { _ in },
        setup: ((WebSocketServer, VirtualServerEvents) -> Void)? = nil,
        _ body: (VirtualPeer, VirtualServerEvents) async throws -> T
    ) async throws -> T {
        var configuration = WebSocketServer.Configuration()
        configure(&configuration)
        let server = WebSocketServer(configuration: configuration)
        let events = VirtualServerEvents(server: server)
        server.onUpgradeError { events.upgradeErrors.append("\($0)") }
        if let setup {
            setup(server, events)
        } else {
            server.onRequest { request in
                guard let connection = try? request.accept() else { return }
                events.record(connection)
            }
        }
        let channel = NIOAsyncTestingChannel()
        let peer = VirtualPeer(channel: channel)
        return try await run(peer) { peer in
            try await channel.testingEventLoop.executeInContext { try server.configurePipeline(for: channel) }
            try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 40_000)).get()
            return try await body(peer, events)
        }
    }

    /// Sends a valid opening handshake and checks the 101; returns the server's connection.
    func upgrade(_ events: VirtualServerEvents) async throws -> WebSocketConnection {
        try await send(
            "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        let head = try #require(try await httpHead())
        try #require(head.hasPrefix("HTTP/1.1 101"), "\(head)")
        return try #require(events.connections.all.last)
    }

    /// A client connection on virtual time: the client's handshake handlers (those
    /// `WebSocketClient.connect` installs) on a channel to 127.0.0.1, answered by the peer with a
    /// valid 101. The peer plays the server.
    static func withClient<T>(
        _ configure: (inout WebSocketClient.Configuration) -> Void = { _ in },
        _ body: (VirtualPeer, WebSocketConnection) async throws -> T
    ) async throws -> T {
        var configuration = WebSocketClient.Configuration()
        configure(&configuration)
        let channel = NIOAsyncTestingChannel()
        let peer = VirtualPeer(channel: channel)
        let request = WebSocketClientHandshakeHandler.Request(
            target: "/", host: "127.0.0.1", protocols: [], origin: nil, headers: [],
            version: configuration.webSocketVersion, options: configuration.connectionOptions,
            logger: Logger(label: "virtual.client"), peerDescription: "127.0.0.1:80", negotiators: [])
        return try await run(peer) { peer in
            let promise = channel.testingEventLoop.makePromise(of: WebSocketConnection.self)
            try await channel.testingEventLoop.executeInContext {
                let encoder = HTTPRequestEncoder()
                let decoder = ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .fireError))
                let handshake = WebSocketClientHandshakeHandler(request: request, encoder: encoder, decoder: decoder, promise: promise)
                try channel.pipeline.syncOperations.addHandlers([encoder, decoder, handshake])
            }
            try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 80)).get()
            await peer.settle()
            let head = try #require(try await peer.httpHead())
            let keyLine = try #require(head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("sec-websocket-key:") })
            let key = String(keyLine.split(separator: ":", maxSplits: 1)[1].filter { $0 != " " })
            try await peer.send(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    + "Sec-WebSocket-Accept: \(WebSocketHandshake.acceptValue(forKey: key))\r\n\r\n")
            let connection = try await promise.futureResult.get()
            return try await body(peer, connection)
        }
    }
}

/// What a server on virtual time reported.
final class VirtualServerEvents: Sendable {
    let server: WebSocketServer
    let connections = Collected<WebSocketConnection>()
    /// `close` events of the recorded connections, in order.
    let closes = Collected<CloseEvent>()
    let upgradeErrors = Collected<String>()

    init(server: WebSocketServer) {
        self.server = server
    }

    /// Records an accepted connection and its close events.
    func record(_ connection: WebSocketConnection) {
        connections.append(connection)
        connection.onClose { self.closes.append(CloseEvent(code: $0, description: $1)) }
    }
}
