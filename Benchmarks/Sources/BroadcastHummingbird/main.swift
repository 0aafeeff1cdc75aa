import BenchSupport
import Hummingbird
import HummingbirdWebSocket
import NIOConcurrencyHelpers
import NIOPosix

// W7 on hummingbird-websocket, which has no topics: a locked registry of the outbound writers
// of the connections on /broadcast (each handler adds its own and removes it when it ends) and,
// for every message, a loop that writes it to each of them (the sender included).
let arguments = EchoArguments()
let group = MultiThreadedEventLoopGroup(numberOfThreads: arguments.threads)

final class Writers: Sendable {
    private struct State { var next = 0; var writers: [Int: WebSocketOutboundWriter] = [:] }
    private let state = NIOLockedValueBox(State())
    func add(_ writer: WebSocketOutboundWriter) -> Int {
        state.withLockedValue { s in
            s.next += 1
            s.writers[s.next] = writer
            return s.next
        }
    }
    func remove(_ id: Int) { state.withLockedValue { _ = $0.writers.removeValue(forKey: id) } }
    var all: [WebSocketOutboundWriter] { state.withLockedValue { Array($0.writers.values) } }
}
let writers = Writers()

let app = Application(
    router: Router(),
    server: .http1WebSocketUpgrade(configuration: .init(ws: .init(maxFrameSize: EchoArguments.maxSize))) { request, _, _ in
        guard request.path == "/broadcast" else { return .dontUpgrade }
        return .upgrade([:]) { inbound, outbound, _ in
            let id = writers.add(outbound)
            defer { writers.remove(id) }
            for try await message in inbound.messages(maxSize: EchoArguments.maxSize) {
                for writer in writers.all {
                    switch message {
                    case .binary(let buffer): try? await writer.write(.binary(buffer))
                    case .text(let text): try? await writer.write(.text(text))
                    }
                }
            }
        }
    },
    configuration: .init(address: .hostname("127.0.0.1", port: arguments.port)),
    onServerRunning: { _ in
        announce("broadcast-hummingbird listening on 127.0.0.1:\(arguments.port) threads=\(arguments.threads)")
    },
    eventLoopGroupProvider: .shared(group)
)
try await app.runService()
