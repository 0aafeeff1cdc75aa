import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// TCP keepalive instead of WebSocket pings (`useNativeKeepalive`): SO_KEEPALIVE, and on Linux
/// the idle time before the first probe set to `keepaliveInterval`.
enum WebSocketNativeKeepalive {
    static func enable(on channel: Channel, interval: TimeAmount) {
        guard let options = channel.syncOptions else { return }
        try? options.setOption(ChannelOptions.socketOption(.so_keepalive), value: 1)
        #if os(Linux)
        let idle = max(1, Int(interval.nanoseconds / 1_000_000_000))
        try? options.setOption(
            ChannelOptions.Types.SocketOption(
                level: NIOBSDSocket.OptionLevel(rawValue: CInt(IPPROTO_TCP)),
                name: NIOBSDSocket.Option(rawValue: CInt(TCP_KEEPIDLE))),
            value: idle)
        #endif
    }
}
