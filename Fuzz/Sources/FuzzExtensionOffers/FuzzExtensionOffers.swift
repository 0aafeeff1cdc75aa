// Fuzz target (d): the Sec-WebSocket-Extensions parser and permessage-deflate's offer handling
// (`WebSocketExtension.parse`, `PerMessageDeflate.accept(offers:)`).
//
// Input layout: byte 0 the server's permessage-deflate options (bit 0 server_no_context_takeover,
// bit 1 client_no_context_takeover, bits 2-4 server_max_window_bits 8-15 when bit 5,
// bit 6 client_max_window_bits 10); the rest: header values separated by newlines.
//
// Checks: no crash; every parsed extension has a non-empty name; an accepted offer's answer
// carries only valid parameters, each at most once, with server_max_window_bits no larger than
// offered and client_max_window_bits only when offered; a client with default settings accepts
// the answer; and messages round-trip through the two codecs both ways (so the agreed window
// sizes and context takeover really work together).
import NIOCore
import WebSocket
import FuzzSupport

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    guard let flags = input.byte() else { return 0 }
    var options = PerMessageDeflate.Options()
    options.serverNoContextTakeover = flags & 0x01 != 0
    options.clientNoContextTakeover = flags & 0x02 != 0
    if flags & 0x20 != 0 { options.serverMaxWindowBits = 8 + Int((flags >> 2) & 0x07) }
    if flags & 0x40 != 0 { options.clientMaxWindowBits = 10 }
    options.threshold = 0

    let text = String(decoding: input.rest(), as: UTF8.self)
    let values = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    let offers = WebSocketExtension.parse(values)
    for offer in offers {
        check(!offer.name.isEmpty, "an extension without a name")
        // What the parser makes of an extension's own header form is the same extension.
        if isPlain(offer.name) && offer.parameters.allSatisfy({ isPlain($0.name) && !$0.name.contains("=") && isPlain($0.value ?? "x") }) {
            let again = WebSocketExtension.parse([offer.description])
            check(again == [offer], "\(offer) re-parses as \(again)")
        }
    }

    let mine = offers.filter { $0.name.lowercased() == "permessage-deflate" }
    guard let (response, serverCodec) = PerMessageDeflate(options).accept(offers: mine) else { return 0 }
    check(response.name == "permessage-deflate", "answered as \(response.name)")
    var names = Set<String>()
    for parameter in response.parameters {
        check(names.insert(parameter.name).inserted, "\(parameter.name) twice in \(response)")
        switch parameter.name {
        case "server_no_context_takeover", "client_no_context_takeover":
            check(parameter.value == nil, "\(parameter.name) with a value in \(response)")
        case "server_max_window_bits", "client_max_window_bits":
            guard let value = parameter.value, let bits = Int(value), (8...15).contains(bits) else {
                fatalError("invariant violated: \(parameter.name) without a valid value in \(response)")
            }
        default:
            fatalError("invariant violated: unknown parameter in the answer \(response)")
        }
    }
    // The offer that was taken is the first one the server could accept: find the one whose
    // parameters are all valid, to compare.
    let bits = { (ext: WebSocketExtension, name: String) -> String?? in
        ext.parameters.first { $0.name.lowercased() == name }.map { $0.value }
    }
    if let taken = mine.first(where: { PerMessageDeflate(options).accept(offers: [$0]) != nil }) {
        if case .some(.some(let answered)) = bits(response, "server_max_window_bits"), case .some(.some(let offered)) = bits(taken, "server_max_window_bits") {
            check(Int(answered)! <= Int(offered)!, "server_max_window_bits \(answered) above the \(offered) offered")
        }
        if bits(response, "client_max_window_bits") != nil {
            check(bits(taken, "client_max_window_bits") != nil, "client_max_window_bits answered but not offered: \(taken) -> \(response)")
        }
    }

    let clientCodec: any WebSocketExtensionCodec
    do {
        clientCodec = try PerMessageDeflate().accepted(response: response)
    } catch {
        fatalError("invariant violated: a default client refuses the answer \(response): \(error)")
    }
    let messages = [
        ByteBuffer(string: String(repeating: "hello permessage-deflate ", count: 20)),
        ByteBuffer(bytes: (0..<3000).map { UInt8(truncatingIfNeeded: $0 &* 7919) }),
        ByteBuffer(string: String(repeating: "hello permessage-deflate ", count: 20)),
    ]
    for message in messages {
        roundTrip(message, from: serverCodec, to: clientCodec, response: response)
        roundTrip(message, from: clientCodec, to: serverCodec, response: response)
    }
    return 0
}

private func roundTrip(_ message: ByteBuffer, from sender: any WebSocketExtensionCodec, to receiver: any WebSocketExtensionCodec, response: WebSocketExtension) {
    let encoded: ByteBuffer
    do {
        guard let (payload, rsv) = try sender.encode(message: message, opcode: .binary, allowed: true, allocator: ByteBufferAllocator()) else {
            return  // sent uncompressed (an 8-bit window)
        }
        check(rsv == 0x40, "compressed with RSV bits \(rsv)")
        encoded = payload
    } catch {
        fatalError("invariant violated: could not compress with \(response): \(error)")
    }
    check(receiver.startDecoding(reservedBits: 0x40), "the receiver does not decode RSV1")
    var input = encoded
    var output = ByteBuffer()
    do {
        try receiver.decode(&input, endOfMessage: true, into: &output, limit: 1 << 20)
    } catch {
        fatalError("invariant violated: could not decompress with \(response): \(error)")
    }
    check(output == message, "the message did not round-trip with \(response)")
}

/// Text that survives a trip through the header form: printable ASCII (header tokens are; the
/// parser works on `Character`s, and a combining mark after "=" or ";" makes a different
/// grapheme), no separators or quotes, no space at either end, not empty.
private func isPlain(_ s: String) -> Bool {
    guard let first = s.first, let last = s.last else { return false }
    return s.utf8.allSatisfy { (0x21...0x7E).contains($0) || $0 == 0x20 }
        && !s.contains(where: { "\";,".contains($0) }) && first != " " && last != " "
}
