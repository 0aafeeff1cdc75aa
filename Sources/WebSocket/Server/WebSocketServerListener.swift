import NIOCore
import NIOSSL

extension WebSocketServer {
    /// One address the server listens on, plain (`ws://`) or with TLS (`wss://`). A server may
    /// have several, as the original could be given several HTTP servers.
    public struct Listener: Sendable {
        /// The address to bind, e.g. `"0.0.0.0"` or `"::"`.
        public var host: String
        /// The port; 0 picks a free one.
        public var port: Int
        /// TLS for `wss://`; `nil` for plain `ws://`.
        public var tlsConfiguration: TLSConfiguration?

        /// A listener on `host:port`, with TLS when `tlsConfiguration` is given.
        public init(host: String = "0.0.0.0", port: Int, tlsConfiguration: TLSConfiguration? = nil) {
            self.host = host
            self.port = port
            self.tlsConfiguration = tlsConfiguration
        }
    }

    /// A server TLS configuration from PEM files: the certificate chain (leaf first) and its
    /// private key. Throws with the file and reason when one cannot be read.
    public static func tlsConfiguration(certificateChainFile: String, privateKeyFile: String) throws -> TLSConfiguration {
        let chain: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificateChainFile)
        } catch {
            throw WebSocketError(.invalidArgument, "Cannot read the certificate chain from \(certificateChainFile): \(error)")
        }
        do {
            key = try NIOSSLPrivateKey(file: privateKeyFile, format: .pem)
        } catch {
            throw WebSocketError(.invalidArgument, "Cannot read the private key from \(privateKeyFile): \(error)")
        }
        return .makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
    }

    /// A server TLS configuration from PEM text held in memory.
    public static func tlsConfiguration(certificateChainPEM: String, privateKeyPEM: String) throws -> TLSConfiguration {
        do {
            let chain = try NIOSSLCertificate.fromPEMBytes(Array(certificateChainPEM.utf8))
            let key = try NIOSSLPrivateKey(bytes: Array(privateKeyPEM.utf8), format: .pem)
            return .makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        } catch {
            throw WebSocketError(.invalidArgument, "Cannot read the PEM certificate chain or private key: \(error)")
        }
    }
}
