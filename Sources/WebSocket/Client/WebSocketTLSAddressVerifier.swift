import NIOCore
import NIOSSL
import NIOTLS

/// Checks the server's certificate against the IP address of a `wss://` URL when the socket's
/// peer is an HTTP proxy (CONNECT): NIOSSL checks a certificate against the socket's peer when
/// there is no host name, which would be the proxy's address. Added after the TLS handler, whose
/// own host name check is off for such a connection (the chain is still verified); on a
/// certificate without that address among its IP subject alternative names the attempt fails
/// with `.tlsFailed` and the socket closes before anything is sent over it.
final class WebSocketTLSAddressVerifier: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let address: String
    private let failure: (WebSocketError) -> Void

    init(address: String, failure: @escaping (WebSocketError) -> Void) {
        self.address = address
        self.failure = failure
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSUserEvent, case .handshakeCompleted = event {
            let tls = try? context.pipeline.syncOperations.handler(type: NIOSSLClientHandler.self)
            guard let certificate = tls?.peerCertificate, Self.certificate(certificate, names: address) else {
                // Before NIOSSL sends what was written meanwhile (the upgrade request).
                failure(
                    WebSocketError(
                        .tlsFailed, "The server's certificate is not valid for \(address) (no IP address subject alternative name matches it)"))
                context.close(promise: nil)
                return
            }
            context.fireUserInboundEventTriggered(event)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// Whether `certificate` has `address` among its IP address subject alternative names.
    static func certificate(_ certificate: NIOSSLCertificate, names address: String) -> Bool {
        guard let wanted = try? SocketAddress(ipAddress: address, port: 0) else { return false }
        let bytes: [UInt8]
        switch wanted {
        case .v4(let v4): bytes = withUnsafeBytes(of: v4.address.sin_addr) { Array($0) }
        case .v6(let v6): bytes = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
        default: return false
        }
        for name in certificate._subjectAlternativeNames() where name.nameType == .ipAddress {
            if Array(name.contents) == bytes { return true }
        }
        return false
    }
}
