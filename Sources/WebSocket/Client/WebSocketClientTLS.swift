import NIOSSL

extension WebSocketClient {
    /// A client TLS configuration from PEM files, for the common cases without touching
    /// swift-nio-ssl's types (set it as ``Configuration/tlsConfiguration`` or
    /// ``RequestOptions/tlsConfiguration``).
    ///
    /// - Parameters:
    ///   - caFile: CA certificates (PEM) to trust instead of the system's roots; `nil` keeps the
    ///     system's.
    ///   - certificateChainFile: a client certificate chain (PEM) to present, with
    ///     `privateKeyFile`.
    ///   - privateKeyFile: the client certificate's private key (PEM).
    ///   - verifyCertificates: `false` skips every check of the server's certificate. For
    ///     tests only: anyone in the middle can then read and change the traffic.
    /// - Throws: a ``WebSocketError`` (`.invalidArgument`) naming the file that cannot be read.
    public static func tlsConfiguration(
        caFile: String? = nil, certificateChainFile: String? = nil, privateKeyFile: String? = nil,
        verifyCertificates: Bool = true
    ) throws -> TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        if let caFile {
            do {
                configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile))
            } catch {
                throw WebSocketError(.invalidArgument, "Cannot read the CA certificates from \(caFile): \(error)")
            }
        }
        switch (certificateChainFile, privateKeyFile) {
        case (nil, nil):
            break
        case (let chainFile?, let keyFile?):
            do {
                configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(chainFile).map { .certificate($0) }
            } catch {
                throw WebSocketError(.invalidArgument, "Cannot read the client certificate chain from \(chainFile): \(error)")
            }
            do {
                configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem))
            } catch {
                throw WebSocketError(.invalidArgument, "Cannot read the client private key from \(keyFile): \(error)")
            }
        default:
            throw WebSocketError(.invalidArgument, "A client certificate needs both certificateChainFile and privateKeyFile")
        }
        if !verifyCertificates { configuration.certificateVerification = .none }
        return configuration
    }
}
