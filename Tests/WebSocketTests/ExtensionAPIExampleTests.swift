import NIOCore
import Testing

import WebSocket

// The example of the DocC article "Writing an extension" (Sources/WebSocket/WebSocket.docc/
// WritingExtensions.md), copied verbatim, so that the article's code is known to compile and work.

struct InvertExtension: WebSocketExtensionNegotiator {
    var name: String { "x-invert" }

    // Client: offer the extension, without parameters.
    func makeOffers() -> [WebSocketExtension] {
        [WebSocketExtension(name: name)]
    }

    // Server: accept the first offer without parameters.
    func accept(offers: [WebSocketExtension]) -> (response: WebSocketExtension, codec: any WebSocketExtensionCodec)? {
        guard offers.contains(where: { $0.parameters.isEmpty }) else { return nil }
        return (WebSocketExtension(name: name), InvertCodec())
    }

    // Client: the server agreed; check its answer.
    func accepted(response: WebSocketExtension) throws -> any WebSocketExtensionCodec {
        guard response.parameters.isEmpty else {
            throw WebSocketError(.handshakeFailed, "x-invert takes no parameters, the server sent \(response)")
        }
        return InvertCodec()
    }
}

final class InvertCodec: WebSocketExtensionCodec {
    let negotiated = WebSocketExtension(name: "x-invert")
    var reservedBits: UInt8 { 0x20 }  // RSV2

    func encode(message: ByteBuffer, opcode: WebSocketOpcode, allowed: Bool, allocator: ByteBufferAllocator) throws -> (payload: ByteBuffer, reservedBits: UInt8)? {
        guard allowed else { return nil }
        var output = allocator.buffer(capacity: message.readableBytes)
        for byte in message.readableBytesView { output.writeInteger(~byte) }
        return (output, 0x20)
    }

    func startDecoding(reservedBits: UInt8) -> Bool {
        reservedBits == 0x20
    }

    func decode(_ input: inout ByteBuffer, endOfMessage: Bool, into output: inout ByteBuffer, limit: Int) throws {
        guard input.readableBytes <= limit else {
            throw WebSocketProtocolError(WebSocketCloseReason.messageTooBig, "The message is too big")
        }
        while let byte = input.readInteger(as: UInt8.self) { output.writeInteger(~byte) }
    }
}

@Suite("The extension API example of the documentation")
struct ExtensionAPIExampleTests {
    @Test("x-invert is negotiated on both ends and messages arrive as sent")
    func invertRoundTrip() async throws {
        let server = try await TestServer.echo { $0.extensions = [InvertExtension()] }
        defer { Task { await server.stop() } }
        var configuration = WebSocketClient.Configuration()
        configuration.extensions = [InvertExtension()]
        let client = WebSocketClient(configuration: configuration)
        let connection = try await withTimeout(10) {
            try await client.connect(url: server.url)
        }
        #expect(connection.extensions == [WebSocketExtension(name: "x-invert")])
        let received = try await withTimeout(10) {
            try await connection.write("Hello, inverted world")
            try await connection.write(ByteBuffer(bytes: [0, 1, 2, 0xFF]))
            var messages: [WebSocketMessage] = []
            for try await message in connection.messages {
                messages.append(message)
                if messages.count == 2 { try connection.close() }
            }
            return messages
        }
        #expect(received == [.utf8("Hello, inverted world"), .binary(ByteBuffer(bytes: [0, 1, 2, 0xFF]))])
    }

    @Test("a server without the extension declines it and the connection goes on without it")
    func declined() async throws {
        let server = try await TestServer.echo()
        defer { Task { await server.stop() } }
        var configuration = WebSocketClient.Configuration()
        configuration.extensions = [InvertExtension()]
        let client = WebSocketClient(configuration: configuration)
        let connection = try await withTimeout(10) {
            try await client.connect(url: server.url)
        }
        #expect(connection.extensions.isEmpty)
        try connection.close()
    }
}
