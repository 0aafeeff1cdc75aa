import NIOCore

/// permessage-deflate (RFC 7692): compresses each message with DEFLATE, as browsers, `ws` and
/// Python `websockets` do. A ``WebSocketExtensionNegotiator``; turn it on with a configuration's
/// `perMessageDeflate` (or list it in `extensions`).
///
/// Server default: off (opt in), like `ws`: each compressed connection keeps zlib state (about
/// 300 KiB with the defaults while it is in use; see ``Options``), compression costs CPU, and
/// compressing secrets beside attacker-chosen data leaks them (CRIME/BREACH). Library client
/// default: not offered either (set `WebSocketClient.Configuration.perMessageDeflate`); the `ws`
/// tool's clients (`ws connect`, `ws autobahn-client`) offer it by default, as browsers do.
public struct PerMessageDeflate: WebSocketExtensionNegotiator {
    /// The settings of permessage-deflate, for either end.
    public struct Options: Sendable, Hashable {
        /// Server: always answer `server_no_context_takeover` (reset the compressor after each
        /// message: less memory between messages, worse compression). Client: ask for it.
        /// Default false.
        public var serverNoContextTakeover = false
        /// Server: answer `client_no_context_takeover`, so the client resets and this end can drop
        /// its inflater's window between messages. Client: offer it. Default false.
        public var clientNoContextTakeover = false
        /// Server: the largest window (8-15) its compressor uses, announced as
        /// `server_max_window_bits` when below 15. Client: ask the server for at most this.
        /// `nil` for 15. (zlib cannot make raw DEFLATE with an 8-bit window: under a limit of 8,
        /// messages go out uncompressed.)
        public var serverMaxWindowBits: Int? = nil
        /// Server: the largest window it lets the client use, when the client allows a value.
        /// Client: the value offered with `client_max_window_bits` (`nil`: offered without a
        /// value). Default nil.
        public var clientMaxWindowBits: Int? = nil
        /// zlib compression level, 0 (none) to 9 (best). Default 6 (zlib's default).
        public var compressionLevel = 6
        /// zlib memory level, 1-9: more memory, faster and better compression. Default 8.
        public var memoryLevel = 8
        /// Messages shorter than this many bytes go out uncompressed. Default 64.
        public var threshold = 64

        /// The defaults above.
        public init() {}
    }

    /// The settings.
    public let options: Options

    /// `permessage-deflate`.
    public var name: String { "permessage-deflate" }

    /// A negotiator with `options`.
    public init(_ options: Options = Options()) {
        self.options = options
    }

    // MARK: Parameters

    /// The four parameters of RFC 7692 §7.1, parsed and checked.
    struct Parameters: Equatable {
        var serverNoContextTakeover = false
        var clientNoContextTakeover = false
        var serverMaxWindowBits: Int?
        /// `.some(nil)`: present without a value.
        var clientMaxWindowBits: Int??

        /// Parses an offer's or answer's parameters; throws for an unknown, duplicate or invalid one.
        init(_ ext: WebSocketExtension) throws {
            var seen = Set<String>()
            for parameter in ext.parameters {
                let name = parameter.name.lowercased()
                guard seen.insert(name).inserted else {
                    throw WebSocketError(.invalidArgument, "Duplicate permessage-deflate parameter \(name)")
                }
                switch name {
                case "server_no_context_takeover", "client_no_context_takeover":
                    guard parameter.value == nil else {
                        throw WebSocketError(.invalidArgument, "permessage-deflate parameter \(name) takes no value")
                    }
                    if name == "server_no_context_takeover" { serverNoContextTakeover = true } else { clientNoContextTakeover = true }
                case "server_max_window_bits":
                    guard let value = parameter.value, let bits = Self.windowBits(value) else {
                        throw WebSocketError(.invalidArgument, "server_max_window_bits needs a value from 8 to 15, not \(parameter.value ?? "none")")
                    }
                    serverMaxWindowBits = bits
                case "client_max_window_bits":
                    if let value = parameter.value {
                        guard let bits = Self.windowBits(value) else {
                            throw WebSocketError(.invalidArgument, "client_max_window_bits must be from 8 to 15, not \(value)")
                        }
                        clientMaxWindowBits = .some(bits)
                    } else {
                        clientMaxWindowBits = .some(nil)
                    }
                default:
                    throw WebSocketError(.invalidArgument, "Unknown permessage-deflate parameter \(parameter.name)")
                }
            }
        }

        init() {}

        private static func windowBits(_ value: String) -> Int? {
            guard value.allSatisfy(\.isASCII), value.allSatisfy(\.isNumber), let bits = Int(value), (8...15).contains(bits), value.count <= 2 else { return nil }
            return bits
        }
    }

    // MARK: Server

    /// Server side: the first offer whose parameters are valid and acceptable (RFC 7692 §7.1).
    public func accept(offers: [WebSocketExtension]) -> (response: WebSocketExtension, codec: any WebSocketExtensionCodec)? {
        for offer in offers {
            guard let offered = try? Parameters(offer) else { continue }
            var response = WebSocketExtension(name: name)
            // Our compressor's window: at most what the client allows and what we want.
            var serverBits = options.serverMaxWindowBits ?? 15
            if let limit = offered.serverMaxWindowBits { serverBits = min(serverBits, limit) }
            let serverNoContextTakeover = offered.serverNoContextTakeover || options.serverNoContextTakeover
            if serverNoContextTakeover { response.parameters.append(.init(name: "server_no_context_takeover")) }
            let clientNoContextTakeover = offered.clientNoContextTakeover || options.clientNoContextTakeover
            if clientNoContextTakeover { response.parameters.append(.init(name: "client_no_context_takeover")) }
            if serverBits < 15 || offered.serverMaxWindowBits != nil {
                response.parameters.append(.init(name: "server_max_window_bits", value: String(serverBits)))
            }
            if case .some(let clientLimit) = offered.clientMaxWindowBits {
                // The client allows us to limit its window; say so when we want a smaller one.
                let wanted = min(options.clientMaxWindowBits ?? 15, clientLimit ?? 15)
                if wanted < 15 || clientLimit != nil {
                    response.parameters.append(.init(name: "client_max_window_bits", value: String(wanted)))
                }
            }
            let codec = PerMessageDeflateCodec(
                negotiated: response, options: options, compressWindowBits: serverBits,
                resetCompressor: serverNoContextTakeover, resetDecompressor: clientNoContextTakeover)
            guard let codec else { continue }
            return (response, codec)
        }
        return nil
    }

    // MARK: Client

    /// Client side: one offer with the configured preferences, `client_max_window_bits` always
    /// included so the server may choose.
    public func makeOffers() -> [WebSocketExtension] {
        var offer = WebSocketExtension(name: name)
        if options.serverNoContextTakeover { offer.parameters.append(.init(name: "server_no_context_takeover")) }
        if options.clientNoContextTakeover { offer.parameters.append(.init(name: "client_no_context_takeover")) }
        if let bits = options.serverMaxWindowBits { offer.parameters.append(.init(name: "server_max_window_bits", value: String(bits))) }
        offer.parameters.append(.init(name: "client_max_window_bits", value: options.clientMaxWindowBits.map(String.init)))
        return [offer]
    }

    /// Client side: checks the server's answer against what was offered (RFC 7692 §7.1).
    public func accepted(response: WebSocketExtension) throws -> any WebSocketExtensionCodec {
        let answer: Parameters
        do {
            answer = try Parameters(response)
        } catch let error as WebSocketError {
            throw WebSocketError(.handshakeFailed, "Invalid permessage-deflate answer \"\(response)\": \(error.message)")
        }
        if let offered = options.serverMaxWindowBits {
            guard let bits = answer.serverMaxWindowBits, bits <= offered else {
                throw WebSocketError(.handshakeFailed, "The server did not accept server_max_window_bits=\(offered): \"\(response)\"")
            }
        }
        if options.serverNoContextTakeover && !answer.serverNoContextTakeover {
            throw WebSocketError(.handshakeFailed, "The server did not accept server_no_context_takeover: \"\(response)\"")
        }
        var clientBits = options.clientMaxWindowBits ?? 15
        if case .some(let limit) = answer.clientMaxWindowBits {
            guard let limit else {
                throw WebSocketError(.handshakeFailed, "client_max_window_bits in the answer needs a value: \"\(response)\"")
            }
            if let offered = options.clientMaxWindowBits, limit > offered {
                throw WebSocketError(.handshakeFailed, "The server answered client_max_window_bits=\(limit), above the \(offered) offered")
            }
            clientBits = min(clientBits, limit)
        }
        let codec = PerMessageDeflateCodec(
            negotiated: response, options: options, compressWindowBits: clientBits,
            resetCompressor: answer.clientNoContextTakeover || options.clientNoContextTakeover,
            resetDecompressor: answer.serverNoContextTakeover)
        guard let codec else {
            throw WebSocketError(.handshakeFailed, "Could not set up zlib for permessage-deflate")
        }
        return codec
    }
}
