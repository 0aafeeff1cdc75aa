// What the fuzz targets share: an invariant check that crashes with a message, a server on an
// EmbeddedChannel, and reading what the server wrote.
import Logging
import NIOCore
import NIOEmbedded
import WebSocket

/// Crashes (so libFuzzer records the input) when `condition` is false.
public func check(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String, file: StaticString = #fileID, line: UInt = #line) {
    if !condition() { fatalError("invariant violated: \(message())", file: file, line: line) }
}

/// A logger that drops everything (fuzzing must not spend its time printing).
public let silentLogger = Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() })

/// Reads input bytes front to back; past the end every read gives nothing.
public struct FuzzInput {
    public let bytes: [UInt8]
    public private(set) var offset = 0

    public init(_ data: UnsafePointer<UInt8>?, _ size: Int) {
        bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    }

    public var isAtEnd: Bool { offset >= bytes.count }
    public var remaining: Int { bytes.count - offset }

    public mutating func byte() -> UInt8? {
        guard offset < bytes.count else { return nil }
        defer { offset += 1 }
        return bytes[offset]
    }

    public mutating func take(_ count: Int) -> ArraySlice<UInt8> {
        let end = min(bytes.count, offset + max(0, count))
        defer { offset = end }
        return bytes[offset..<end]
    }

    public mutating func rest() -> ArraySlice<UInt8> { take(remaining) }
}

/// A server whose pipeline is installed on an active EmbeddedChannel: bytes written inbound are
/// what a client sent; outbound items are what the server wrote.
public struct EmbeddedServer {
    public let server: WebSocketServer
    public let channel: EmbeddedChannel
    public var loop: EmbeddedEventLoop { channel.embeddedEventLoop }

    public init(configuration: WebSocketServer.Configuration) {
        let channel = EmbeddedChannel()
        let server = WebSocketServer(configuration: configuration, eventLoopGroup: channel.embeddedEventLoop, logger: silentLogger)
        do {
            try server.configurePipeline(for: channel)
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 40_000)).wait()
        } catch {
            fatalError("could not set up the embedded server: \(error)")
        }
        self.server = server
        self.channel = channel
    }

    /// Delivers `bytes` to the server as one read; false once the channel is closed.
    @discardableResult
    public func send<S: Sequence<UInt8>>(_ bytes: S) -> Bool {
        guard channel.isActive else { return false }
        do {
            try channel.writeInbound(ByteBuffer(bytes: Array(bytes)))
        } catch {
            // An error the pipeline passed on (the server closes the channel for these).
        }
        loop.run()
        return channel.isActive
    }

    /// Everything the server wrote since the last call, as bytes.
    public func written() -> [UInt8] {
        var out: [UInt8] = []
        while true {
            let item: Any?
            do {
                item = try channel.readOutbound(as: Any.self)
            } catch {
                fatalError("unreadable outbound item: \(error)")
            }
            guard let item else { break }
            switch item {
            case let buffer as ByteBuffer: out += buffer.readableBytesView
            case let data as IOData:
                guard case .byteBuffer(let buffer) = data else { fatalError("the server wrote a file region") }
                out += buffer.readableBytesView
            default: fatalError("the server wrote an unexpected \(type(of: item))")
            }
        }
        return out
    }

    /// Closes the channel (if the server has not) and runs what remains.
    public func finish() {
        channel.close(promise: nil)  // fails harmlessly when the server closed it already
        loop.run()
        loop.advanceTime(by: .seconds(3600))
        loop.run()
    }
}

/// A valid upgrade request for `key`, with `extra` header lines (each ending in CRLF).
public func upgradeRequest(key: String = "dGhlIHNhbXBsZSBub25jZQ==", extra: String = "") -> [UInt8] {
    Array(
        ("GET /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n\(extra)\r\n").utf8)
}

/// Splits the server's output into the HTTP head (through the blank line) and the rest.
public func splitHead(_ bytes: [UInt8]) -> (head: String, rest: ArraySlice<UInt8>)? {
    let end: [UInt8] = [13, 10, 13, 10]
    guard bytes.count >= 4 else { return nil }
    for i in 0...(bytes.count - 4) where bytes[i..<(i + 4)].elementsEqual(end) {
        return (String(decoding: bytes[..<(i + 4)], as: UTF8.self), bytes[(i + 4)...])
    }
    return nil
}
