import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// Checks of a connection attempt's arguments, and the naming of what made a connect fail.
extension WebSocketClient {
    /// Characters a subprotocol name (an HTTP token) may not contain, besides controls and space.
    private static let separators = Set("()<>@,;:\\\"/[]?={}")

    static func isToken(_ s: String) -> Bool {
        !s.isEmpty && s.unicodeScalars.allSatisfy { $0.value >= 0x21 && $0.value <= 0x7E && !separators.contains(Character($0)) }
    }

    /// Node's check: every subprotocol is a token; we also refuse duplicates (RFC 6455 §4.1).
    static func validate(protocols: [String]) throws {
        var seen = Set<String>()
        for name in protocols {
            guard isToken(name) else {
                throw WebSocketError(.invalidArgument, "The subprotocol \"\(name)\" is not a valid token (no spaces, controls or separators like , ; / \")")
            }
            guard seen.insert(name.lowercased()).inserted else {
                throw WebSocketError(.invalidArgument, "The subprotocol \"\(name)\" is offered twice")
            }
        }
    }

    /// Turns a TCP connect failure into a ``WebSocketError`` naming the cause.
    static func classifyConnectError(_ error: any Error, host: String, port: Int, isProxy: Bool) -> WebSocketError {
        let what = (isProxy ? "the proxy " : "") + (host.contains(":") ? "[\(host)]" : host) + ":\(port)"
        func isRefused(_ error: any Error) -> Bool {
            (error as? IOError)?.errnoCode == ECONNREFUSED
        }
        if let error = error as? NIOConnectionError {
            if error.connectionErrors.isEmpty, let dns = error.dnsAError ?? error.dnsAAAAError {
                return WebSocketError(.dnsFailed, "Could not resolve the host name \"\(host)\"\(isProxy ? " of the proxy" : ""): \(dns)")
            }
            if !error.connectionErrors.isEmpty, error.connectionErrors.allSatisfy({ isRefused($0.error) }) {
                return WebSocketError(.connectionRefused, "Connection refused by \(what) (nothing listens there?)")
            }
            let details = error.connectionErrors.map { "\($0.target): \($0.error)" }.joined(separator: "; ")
            return WebSocketError(.connectionFailed, "Could not connect to \(what): \(details.isEmpty ? "\(error)" : details)")
        }
        if let error = error as? ChannelError, case .connectTimeout(let amount) = error {
            return WebSocketError(.timeout, "Could not connect to \(what) within \(Double(amount.nanoseconds) / 1e9) s")
        }
        if isRefused(error) {
            return WebSocketError(.connectionRefused, "Connection refused by \(what) (nothing listens there?)")
        }
        if error is SocketAddressError || error is SocketAddressError.UnknownHost {
            return WebSocketError(.dnsFailed, "Could not resolve the host name \"\(host)\": \(error)")
        }
        if let error = error as? WebSocketError { return error }
        return WebSocketError(.connectionFailed, "Could not connect to \(what): \(error)")
    }
}
