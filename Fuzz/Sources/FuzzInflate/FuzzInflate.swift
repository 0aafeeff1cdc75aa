// Fuzz target (e): the permessage-deflate inflater (the codec's `decode`) with a small limit.
//
// Input layout: byte 0: bit 0 client_no_context_takeover (the inflater resets after each
// message), bits 1-3 the limit (0 B to 256 KiB); then chunks, each a byte c (bits 0-6 the chunk
// length, bit 7 "the message ends after this chunk") followed by that many compressed bytes.
//
// Checks: no crash; a message never decodes to more than its limit (the promise is limit +
// 64 KiB at most; the codec keeps to the limit itself); an error is 1007 or 1009; all input is
// consumed; and a message decodes to the same bytes, or fails with the same code, whether it
// arrives in the given chunks or whole (with a fresh inflater on the same history); only
// when both fail may one say 1009 and the other 1007.
import NIOCore
import WebSocket
import FuzzSupport

private func makeCodec(_ resetAfterMessage: Bool) -> any WebSocketExtensionCodec {
    var offer = WebSocketExtension(name: "permessage-deflate")
    if resetAfterMessage { offer.parameters.append(.init(name: "client_no_context_takeover")) }
    guard let (_, codec) = PerMessageDeflate().accept(offers: [offer]) else { fatalError("permessage-deflate declined") }
    return codec
}

private enum Decoded: Equatable {
    case bytes(ByteBuffer)
    case failure(Int)
}

/// Decodes one message given as `chunks` with `codec`, as the receiver does.
private func decode(_ chunks: [ByteBuffer], with codec: any WebSocketExtensionCodec, limit: Int) -> Decoded {
    var output = ByteBuffer()
    for (index, chunk) in chunks.enumerated() {
        var input = chunk
        let last = index == chunks.count - 1
        do {
            try codec.decode(&input, endOfMessage: last, into: &output, limit: limit - output.readableBytes)
        } catch let error as WebSocketProtocolError {
            check([1007, 1009].contains(error.closeCode), "decode failed with \(error.closeCode): \(error.reason)")
            check(output.readableBytes <= limit + 64 * 1024, "\(output.readableBytes) bytes decoded before failing, limit \(limit)")
            return .failure(error.closeCode)
        } catch {
            fatalError("invariant violated: decode threw \(type(of: error)): \(error)")
        }
        check(input.readableBytes == 0, "decode left \(input.readableBytes) bytes unread")
        check(output.readableBytes <= limit, "\(output.readableBytes) bytes decoded, limit \(limit)")
    }
    return .bytes(output)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    guard let flags = input.byte() else { return 0 }
    let reset = flags & 0x01 != 0
    let limit = [0, 1, 100, 1000, 4096, 20_000, 65_536, 262_144][Int(flags >> 1) & 0x07]

    // The messages, each a list of chunks.
    var messages: [[ByteBuffer]] = []
    var current: [ByteBuffer] = []
    while let c = input.byte() {
        current.append(ByteBuffer(bytes: input.take(Int(c & 0x7F))))
        if c & 0x80 != 0 {
            messages.append(current)
            current = []
        }
    }
    if !current.isEmpty { messages.append(current) }

    let chunked = makeCodec(reset)
    let whole = makeCodec(reset)
    for message in messages {
        let a = decode(message, with: chunked, limit: limit)
        var joined = ByteBuffer()
        for var chunk in message { joined.writeBuffer(&chunk) }
        let b = decode([joined], with: whole, limit: limit)
        switch (a, b) {
        case (.failure(let x), .failure(let y)):
            // Which of "too big" (1009) and "invalid data" (1007) is seen first depends on where
            // the input is cut: zlib reports an error for the whole call, output and all.
            check(x == y || Set([x, y]) == [1007, 1009], "chunked and whole decoding fail differently: \(x) vs \(y)")
        default:
            check(a == b, "chunked and whole decoding differ: \(a) vs \(b)")
        }
        if case .failure = a { break }  // the connection is failed: nothing more is decoded
    }
    return 0
}
