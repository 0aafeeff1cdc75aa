import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

@testable import WebSocket

/// A raw TCP peer for protocol tests: it sends exactly the bytes a test gives it and parses
/// what the other end sends back, so tests can break the protocol on purpose.
final class RawClient: Sendable {
    private final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let state = NIOLockedValueBox<(buffer: ByteBuffer, eof: Bool)>((ByteBuffer(), false))
        /// When set, received bytes are only counted, not kept.
        let discarding = NIOLockedValueBox<(on: Bool, count: Int)>((false, 0))

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var incoming = unwrapInboundIn(data)
            let kept = discarding.withLockedValue { state -> Bool in
                if state.on { state.count += incoming.readableBytes }
                return !state.on
            }
            if kept { state.withLockedValue { $0.buffer.writeBuffer(&incoming) } }
        }

        func channelInactive(context: ChannelHandlerContext) {
            state.withLockedValue { $0.eof = true }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            state.withLockedValue { $0.eof = true }
            context.close(promise: nil)
        }
    }

    let channel: Channel
    private let collector: Collector

    private init(channel: Channel, collector: Collector) {
        self.channel = channel
        self.collector = collector
    }

    /// Connects to 127.0.0.1:`port`, from the loopback address `from` when given (any of
    /// 127.0.0.0/8 works on Linux, so a test can tell clients apart by address).
    static func connect(port: Int, from: String? = nil) async throws -> RawClient {
        let collector = Collector()
        var bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        if let from { bootstrap = bootstrap.bind(to: try SocketAddress(ipAddress: from, port: 0)) }
        let channel = try await bootstrap
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(collector) }
            }
            .connect(host: "127.0.0.1", port: port).get()
        return RawClient(channel: channel, collector: collector)
    }

    /// Connects and performs a valid opening handshake; returns the client.
    static func connected(port: Int, path: String = "/", headers: [String] = []) async throws -> RawClient {
        let client = try await connect(port: port)
        let response = try await client.handshake(path: path, headers: headers)
        guard response.hasPrefix("HTTP/1.1 101") else {
            throw WebSocketError(.handshakeFailed, "unexpected response: \(response)")
        }
        return client
    }

    func send(_ bytes: [UInt8]) async throws {
        try await channel.writeAndFlush(channel.allocator.buffer(bytes: bytes)).get()
    }

    func send(_ text: String) async throws {
        try await send(Array(text.utf8))
    }

    /// Sends a frame; masked (as a client must) unless `masked` is false.
    func send(frame: WebSocketFrame, masked: Bool = true) async throws {
        var frame = frame
        frame.mask = masked
        if masked && frame.maskingKey == nil { frame.maskingKey = .random() }
        try await channel.writeAndFlush(frame.serialized()).get()
    }

    /// Sends the request for `path` with the standard upgrade headers (and `headers`, whole
    /// lines) and returns the whole response head.
    func handshake(path: String = "/", headers: [String] = [], version: String = "13", key: String = "dGhlIHNhbXBsZSBub25jZQ==") async throws -> String {
        var request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        request += "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: \(version)\r\n"
        for line in headers { request += line + "\r\n" }
        request += "\r\n"
        try await send(request)
        return try await readHTTPHead()
    }

    /// Reads up to and including the blank line that ends an HTTP head.
    func readHTTPHead(timeout: Double = 5) async throws -> String {
        try await poll(timeout, "HTTP response") { state in
            let view = state.buffer.readableBytesView
            guard let end = view.firstRange(of: Array("\r\n\r\n".utf8)) else { return nil }
            let length = end.upperBound - view.startIndex
            return state.buffer.readString(length: length)
        }
    }

    /// Everything received so far as text (for non-101 responses with bodies).
    func readAllText(timeout: Double = 5) async throws -> String {
        try await poll(timeout, "end of stream") { state in
            guard state.eof else { return nil }
            return state.buffer.readString(length: state.buffer.readableBytes) ?? ""
        }
    }

    /// The next frame from the server; `nil` when the connection ended first.
    func readFrame(timeout: Double = 5) async throws -> WebSocketFrame? {
        try await poll(timeout, "a frame") { state -> WebSocketFrame?? in
            if let frame = try? WebSocketFrame.parse(from: &state.buffer) { return .some(frame) }
            return state.eof ? .some(nil) : nil
        }
    }

    /// Reads frames until the server's close frame; returns its code (nil for an empty close
    /// payload), and fails if none comes.
    func readCloseCode(timeout: Double = 5) async throws -> Int? {
        while true {
            guard let frame = try await readFrame(timeout: timeout) else {
                throw WebSocketError(.notConnected, "connection ended without a close frame")
            }
            if frame.opcode == .connectionClose {
                var payload = frame.binaryPayload
                return payload.readInteger(as: UInt16.self).map(Int.init)
            }
        }
    }

    /// Waits until the server has closed the TCP connection.
    func waitForEOF(timeout: Double = 5) async throws {
        _ = try await poll(timeout, "the server to close the connection") { state -> Bool? in
            state.eof ? true : nil
        }
    }

    /// Stops or restarts reading from the socket (a peer that does not read fills the other
    /// end's write buffer).
    func setReading(_ on: Bool) async throws {
        try await channel.setOption(ChannelOptions.autoRead, value: on).get()
        if on { channel.read() }
    }

    /// From now on only counts received bytes (for bulk transfers); returns the count so far.
    @discardableResult
    func discardIncoming() -> Int {
        collector.discarding.withLockedValue { state in
            state.on = true
            return state.count
        }
    }

    /// Discards what was received so far; returns how many bytes that was.
    func discardReceived() -> Int {
        collector.state.withLockedValue { state in
            defer { state.buffer.clear() }
            return state.buffer.readableBytes
        }
    }

    var isEOF: Bool { collector.state.withLockedValue { $0.eof } }

    func close() async {
        try? await channel.close()
    }

    private func poll<T>(_ timeout: Double, _ what: String, _ attempt: (inout (buffer: ByteBuffer, eof: Bool)) throws -> T?) async throws -> T {
        let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
        while true {
            if let value = try collector.state.withLockedValue({ try attempt(&$0) }) { return value }
            guard ContinuousClock.now < deadline else { throw TestTimeout(what: what) }
            try await Task.sleep(for: .milliseconds(5))
        }
    }
}
