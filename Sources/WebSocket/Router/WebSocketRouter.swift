import NIOConcurrencyHelpers

/// Routes a server's requests to handlers by path and subprotocol: the Swift counterpart of
/// WebSocket-Node's `WebSocketRouter`.
///
/// ```swift
/// let router = WebSocketRouter(server: server)
/// try router.mount("/chat", protocol: "chat") { request in
///     let connection = try? request.accept(origin: request.origin)
///     …
/// }
/// try router.mount(.regex("^/rooms/[0-9]+$"), protocol: "*") { request in … }
/// ```
///
/// For each protocol the client requested, in the client's order, the first mounted handler
/// whose path matches and whose protocol is that one (or `*`) gets the request. With no match
/// the request is rejected with 404.
public final class WebSocketRouter: Sendable {
    /// The handler of a mounted route.
    public typealias Handler = @Sendable (WebSocketRouterRequest) -> Void
    /// The scoped handler of a route that accepts every request
    /// (``mount(_:protocol:connectionHandler:)``): it has the connection for as long as it runs.
    public typealias ConnectionHandler = nonisolated(nonsending) @Sendable (WebSocketConnection) async throws -> Void

    /// The protocol key for requests that asked for no subprotocol (as in the original).
    static let noProtocol = "____no_protocol____"

    private struct Route {
        var path: WebSocketRoutePath
        var protocolName: String
        var handler: Handler
    }

    private struct State {
        var routes: [Route] = []
        var token: WebSocketHandlerToken?
    }
    private let state = NIOLockedValueBox(State())

    /// Creates a router, attached to `server` when given.
    public init(server: WebSocketServer? = nil) {
        if let server { attachServer(server) }
    }

    /// Routes `server`'s `request` events through this router (detaching from any earlier one).
    /// The server keeps the router alive until ``detachServer()``, as a Node server keeps its
    /// listeners.
    public func attachServer(_ server: WebSocketServer) {
        detachServer()
        let token = server.onRequest { request in
            self.handleRequest(request)
        }
        state.withLockedValue { $0.token = token }
    }

    /// Stops routing the attached server's requests.
    public func detachServer() {
        let token = state.withLockedValue { state -> WebSocketHandlerToken? in
            defer { state.token = nil }
            return state.token
        }
        token?.cancel()
    }

    /// Mounts `handler` for requests to `path` asking for `protocol` (lower-cased; `*` for any,
    /// `nil` for requests that ask for none). Throws if that path and protocol already have a
    /// handler.
    public func mount(_ path: WebSocketRoutePath, protocol: String? = nil, handler: @escaping Handler) throws {
        let name = `protocol`?.lowercased() ?? Self.noProtocol
        try state.withLockedValue { state in
            if state.routes.contains(where: { $0.path == path && $0.protocolName == name }) {
                throw WebSocketError(
                    .invalidArgument, "You may only mount one handler per path/protocol combination: \(path) \(name) is mounted already")
            }
            state.routes.append(Route(path: path, protocolName: name, handler: handler))
        }
    }

    /// Mounts a route that accepts every request to `path` asking for `protocol` (with that
    /// protocol, echoing the request's origin) and runs `connectionHandler` with the connection.
    /// The connection closes with 1000 when the handler returns and with 1011 when it throws;
    /// when the server shuts down it closes with 1001 and the handler's `messages` loop ends
    /// (see ``WebSocketRequest/accept(protocol:origin:cookies:handler:)``). To look at the request
    /// first, mount a ``Handler`` and call ``WebSocketRouterRequest/accept(origin:cookies:handler:)``.
    ///
    /// ```swift
    /// try router.mount("/echo", protocol: "echo-protocol") { connection in
    ///     for try await message in connection.messages { try await connection.write(message) }
    /// }
    /// ```
    ///
    /// Throws if that path and protocol already have a handler.
    public func mount(_ path: WebSocketRoutePath, protocol: String? = nil, connectionHandler: @escaping ConnectionHandler) throws {
        try mount(path, protocol: `protocol`, handler: { (request: WebSocketRouterRequest) in
            // Fails only for a request already decided (by requestTimeout): nothing left to do.
            _ = try? request.accept(origin: request.origin, handler: connectionHandler)
        })
    }

    /// Removes the handler mounted for `path` and `protocol`; returns whether there was one.
    @discardableResult
    public func unmount(_ path: WebSocketRoutePath, protocol: String? = nil) -> Bool {
        let name = `protocol`?.lowercased() ?? Self.noProtocol
        return state.withLockedValue { state in
            guard let index = state.routes.firstIndex(where: { $0.path == path && $0.protocolName == name }) else { return false }
            state.routes.remove(at: index)
            return true
        }
    }

    /// Routes one request (what the attached server's `request` event does).
    public func handleRequest(_ request: WebSocketRequest) {
        let routes = state.withLockedValue { $0.routes }
        let requested = request.requestedProtocols.isEmpty ? [Self.noProtocol] : request.requestedProtocols
        let path = request.resourceURL.path
        for protocolName in requested {
            for route in routes where route.path.matches(path) && (route.protocolName == protocolName || route.protocolName == "*") {
                route.handler(WebSocketRouterRequest(request: request, protocol: protocolName == Self.noProtocol ? nil : protocolName))
                return
            }
        }
        request.reject(status: 404, reason: "No handler is available for the given request.")
    }
}

/// A route's path: every path (`*`), one exact path, or a regular expression searched in the
/// path. A string literal is `*` or an exact path.
public struct WebSocketRoutePath: Sendable, Hashable, ExpressibleByStringLiteral, CustomStringConvertible {
    enum Kind: Hashable {
        case any
        case exact(String)
        case regex(String)
    }
    let kind: Kind
    private let compiled: CompiledRegex?

    /// Every path.
    public static let any = WebSocketRoutePath(kind: .any, compiled: nil)

    /// Exactly `path`.
    public static func exact(_ path: String) -> WebSocketRoutePath {
        WebSocketRoutePath(kind: .exact(path), compiled: nil)
    }

    /// Paths in which `pattern` (Swift `Regex` syntax) finds a match; anchor it with `^…$` to
    /// match whole paths. Throws for an invalid pattern.
    public static func regex(_ pattern: String) throws -> WebSocketRoutePath {
        do {
            return WebSocketRoutePath(kind: .regex(pattern), compiled: CompiledRegex(regex: try Regex(pattern)))
        } catch {
            throw WebSocketError(.invalidArgument, "Invalid route pattern \"\(pattern)\": \(error)")
        }
    }

    private init(kind: Kind, compiled: CompiledRegex?) {
        self.kind = kind
        self.compiled = compiled
    }

    /// `"*"` is every path; anything else is an exact path.
    public init(stringLiteral value: String) {
        self = value == "*" ? .any : .exact(value)
    }

    func matches(_ path: String) -> Bool {
        switch kind {
        case .any: return true
        case .exact(let exact): return path == exact
        case .regex: return compiled.map { (try? $0.regex.firstMatch(in: path)) != nil } ?? false
        }
    }

    public var description: String {
        switch kind {
        case .any: return "*"
        case .exact(let path): return path
        case .regex(let pattern): return "/\(pattern)/"
        }
    }

    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.kind == rhs.kind }
    public func hash(into hasher: inout Hasher) { hasher.combine(kind) }

    /// A compiled `Regex` is an immutable value, safe to share across threads.
    private struct CompiledRegex: @unchecked Sendable {
        let regex: Regex<AnyRegexOutput>
    }
}
