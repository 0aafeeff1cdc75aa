import NIOCore

/// Negotiates one WebSocket extension (RFC 6455 §9) for many connections: the extension point
/// WebSocket-Node lacked. ``PerMessageDeflate`` is written on it.
///
/// Add negotiators to a server's or client's configuration (`extensions`). The client offers
/// what ``makeOffers()`` returns; the server calls ``accept(offers:)`` with the client's offers
/// of this extension, in the client's order; the client checks the server's answer with
/// ``accepted(response:)``. Each successful negotiation makes one ``WebSocketExtensionCodec``
/// for that connection.
public protocol WebSocketExtensionNegotiator: Sendable {
    /// The extension token, e.g. `permessage-deflate`.
    var name: String { get }

    /// Client side: the offers to send, most preferred first.
    func makeOffers() -> [WebSocketExtension]

    /// Server side: picks the first acceptable offer and returns the answer to send with the
    /// codec for the connection; `nil` declines every offer (the connection goes on without
    /// this extension).
    func accept(offers: [WebSocketExtension]) -> (response: WebSocketExtension, codec: any WebSocketExtensionCodec)?

    /// Client side: the server accepted with `response`; returns the codec, or throws (with a
    /// clear message) when the answer is not one the client can accept, failing the handshake.
    func accepted(response: WebSocketExtension) throws -> any WebSocketExtensionCodec
}

/// One connection's instance of a negotiated extension: it transforms messages going out and
/// frame payloads coming in. Used only on the connection's event loop.
///
/// Outgoing messages pass through every negotiated extension in order; an incoming message is
/// decoded by the first extension that claims its RSV bits (``startDecoding(reservedBits:)``),
/// alone: stacking two extensions that both transform the same message is not supported.
public protocol WebSocketExtensionCodec: AnyObject {
    /// What was agreed, as reported by `connection.extensions`.
    var negotiated: WebSocketExtension { get }

    /// The RSV bits this extension owns, as in the first header byte (RSV1 = 0x40, RSV2 = 0x20,
    /// RSV3 = 0x10). Frames may carry only bits some negotiated extension owns.
    var reservedBits: UInt8 { get }

    /// Outgoing: transforms the payload of a data message before it is fragmented. Returns the
    /// new payload with the RSV bits to set on its first frame, or `nil` to send it unchanged.
    /// `allowed` is false when the sender opted out for this message.
    func encode(message: ByteBuffer, opcode: WebSocketOpcode, allowed: Bool, allocator: ByteBufferAllocator) throws -> (payload: ByteBuffer, reservedBits: UInt8)?

    /// Incoming: whether the message whose first frame carries `reservedBits` is this codec's
    /// to decode.
    func startDecoding(reservedBits: UInt8) -> Bool

    /// Incoming: decodes the next (unmasked) payload bytes of the message being decoded, as
    /// they arrive, appending the result to `output`. `endOfMessage` is set once, after the
    /// last byte. Throw a ``WebSocketProtocolError`` to fail the connection: 1009 when the
    /// output would exceed `limit` more bytes, 1007 for undecodable input.
    func decode(_ input: inout ByteBuffer, endOfMessage: Bool, into output: inout ByteBuffer, limit: Int) throws
}

extension Array where Element == any WebSocketExtensionNegotiator {
    /// Server side: negotiates each configured extension against the client's offers; returns
    /// the response header value (nil when nothing was agreed) and the codecs.
    func negotiate(offers: [WebSocketExtension]) -> (header: String?, codecs: [any WebSocketExtensionCodec]) {
        var responses: [WebSocketExtension] = []
        var codecs: [any WebSocketExtensionCodec] = []
        for negotiator in self {
            let mine = offers.filter { $0.name.lowercased() == negotiator.name.lowercased() }
            guard !mine.isEmpty, let (response, codec) = negotiator.accept(offers: mine) else { continue }
            responses.append(response)
            codecs.append(codec)
        }
        return (responses.isEmpty ? nil : responses.map(\.description).joined(separator: ", "), codecs)
    }
}
