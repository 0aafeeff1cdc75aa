// Fuzz target (a): the sans-I/O frame parser, `WebSocketReceiver`, fed arbitrary wire bytes in
// arbitrary splits.
//
// Input layout:
//   byte 0      options: bit 0 server role (expect masked frames), bit 1 assemble fragments,
//               bit 2 a negotiated permessage-deflate codec, bit 3 client_no_context_takeover,
//               bits 4-5 the size limits (small to large), bits 6-7 the fragment cap
//   byte 1      n = byte % 16: how many split sizes follow (0: one byte at a time)
//   n bytes     the split sizes, used in turn (0 means 1)
//   the rest    wire bytes
//
// Checks, beside "no crash": every call consumes its whole input; nothing follows a failure or
// a close; failures close with 1002, 1007 or 1009 only; messages and frames respect the limits;
// and the events are the same for the split feed as for the whole input in one buffer
// (failures compared by close code; in a compressed message 1007 and 1009 may swap).
import NIOCore

@testable import WebSocket

private func check(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String) {
    if !condition() { fatalError("FuzzReceiver invariant violated: \(message())") }
}

private struct Limits {
    var frame: Int
    var message: Int
    var fragments: Int
}

private func makeReceiver(flags: UInt8, limits: Limits) -> WebSocketReceiver {
    var codecs: [any WebSocketExtensionCodec] = []
    if flags & 0x04 != 0 {
        var offer = WebSocketExtension(name: "permessage-deflate")
        if flags & 0x08 != 0 { offer.parameters.append(.init(name: "client_no_context_takeover")) }
        guard let (_, codec) = PerMessageDeflate().accept(offers: [offer]) else {
            fatalError("permessage-deflate declined a plain offer")
        }
        codecs.append(codec)
    }
    return WebSocketReceiver(
        options: .init(
            expectMaskedFrames: flags & 0x01 != 0, maxFrameSize: limits.frame, maxMessageSize: limits.message,
            maxFragments: limits.fragments, assembleFragments: flags & 0x02 != 0, codecs: codecs))
}

/// An event as compared between feeds: failures by close code only.
private enum Outcome: Equatable {
    case event(WebSocketReceiver.Event)
    case failure(Int)
}

private func run(_ receiver: inout WebSocketReceiver, chunks: [ByteBuffer], limits: Limits, deflate: Bool) -> [Outcome] {
    var outcomes: [Outcome] = []
    var finished = false
    for chunk in chunks {
        var buffer = chunk
        while let event = receiver.next(from: &buffer) {
            check(!finished, "an event after a failure or a close: \(event)")
            switch event {
            case .failure(let error):
                check(
                    [1002, 1007, 1009].contains(error.closeCode),
                    "failure with close code \(error.closeCode): \(error.reason)")
                outcomes.append(.failure(error.closeCode))
                finished = true
            case .close(let code, _):
                check(code == 1005 || WebSocketCloseReason.isValidOnWire(code), "close event with code \(code)")
                outcomes.append(.event(event))
                finished = true
            case .message(let message):
                let size: Int
                switch message {
                case .utf8(let text): size = text.utf8.count
                case .binary(let bytes): size = bytes.readableBytes
                }
                check(size <= limits.message, "a \(size)-byte message over the \(limits.message)-byte limit")
                outcomes.append(.event(event))
            case .frame(let frame):
                if !deflate {
                    check(frame.length <= limits.frame, "a \(frame.length)-byte frame over the \(limits.frame)-byte limit")
                }
                check(frame.length <= max(limits.frame, limits.message), "a \(frame.length)-byte frame over every limit")
                outcomes.append(.event(event))
            case .ping(let data), .pong(let data):
                check(data.readableBytes <= 125, "a control frame of \(data.readableBytes) bytes")
                outcomes.append(.event(event))
            }
        }
        check(buffer.readableBytes == 0, "next(from:) returned nil with \(buffer.readableBytes) bytes unread")
        check(receiver.isDone == finished, "isDone is \(receiver.isDone) after \(outcomes.count) events")
    }
    return outcomes
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data, size >= 2 else { return 0 }
    let input = UnsafeBufferPointer(start: data, count: size)
    let flags = input[0]
    let splitCount = Int(input[1] % 16)
    guard size >= 2 + splitCount else { return 0 }
    let splits = input[2..<(2 + splitCount)].map { max(1, Int($0)) }
    let wire = input[(2 + splitCount)...]

    let sizes = [(16, 64), (125, 300), (1024, 4096), (65536, 1 << 20)][Int(flags >> 4) & 0x3]
    let limits = Limits(frame: sizes.0, message: sizes.1, fragments: [2, 8, 100, 131_072][Int(flags >> 6)])
    let deflate = flags & 0x04 != 0

    // The whole input at once.
    var whole = makeReceiver(flags: flags, limits: limits)
    let reference = run(&whole, chunks: [ByteBuffer(bytes: wire)], limits: limits, deflate: deflate)

    // The same input in the chosen splits.
    var chunks: [ByteBuffer] = []
    var start = wire.startIndex
    var index = 0
    while start < wire.endIndex {
        let length = splits.isEmpty ? 1 : splits[index % splits.count]
        let end = min(wire.endIndex, start + length)
        chunks.append(ByteBuffer(bytes: wire[start..<end]))
        start = end
        index += 1
    }
    var split = makeReceiver(flags: flags, limits: limits)
    let pieces = run(&split, chunks: chunks, limits: limits, deflate: deflate)
    check(
        reference == pieces || (deflate && sameButTheLastFailure(reference, pieces)),
        "the events differ between the whole input and \(chunks.count) pieces:\n  whole: \(reference)\n  split: \(pieces)")
    return 0
}

/// Whether two outcomes agree up to a last failure that is 1007 in one and 1009 in the other: in
/// a compressed message, whether the decoded size passes the limit (1009) before invalid data or
/// invalid UTF-8 shows (1007) depends on how much output each piece of input inflates to.
private func sameButTheLastFailure(_ a: [Outcome], _ b: [Outcome]) -> Bool {
    guard a.count == b.count, case .failure(let x)? = a.last, case .failure(let y)? = b.last else { return false }
    return a.dropLast() == b.dropLast() && Set([x, y]) == [1007, 1009]
}
