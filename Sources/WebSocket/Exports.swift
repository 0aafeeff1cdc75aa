// The types of other packages that this library's public API makes its users name, re-exported
// one by one, so that `import WebSocket` alone compiles code such as
// `connection.sendBytes(ByteBuffer(bytes: [1, 2, 3]))`, `WebSocketServer(logger: Logger(label: "app"))`
// or `let tls: TLSConfiguration = try WebSocketServer.tlsConfiguration(…)`.
//
// One type at a time rather than whole modules: `@_exported import NIOCore` would also put
// every other name of NIOCore (`System`, `NIOAny`, `EventLoopFuture`, hundreds more) into each
// user's namespace and make them part of what this library promises. A type's own members and
// extensions come with it (`ByteBuffer(string:)`, `readableBytes`, `Logger.Level`,
// `TLSConfiguration.makeClientConfiguration()`). Anything else of those packages (NIO's
// channel handlers, `LoggingSystem.bootstrap`, `NIOSSLCertificate`) needs that package as a
// dependency and its own import, as does ServiceLifecycle's `ServiceGroup`, which the API does
// not name: see README.md, "Installation".
//
// Hidden from the documentation (`visibility: internal`): they are documented by their own
// packages.

// NIOCore: payloads, the channel under a connection, addresses, event loops.
@_exported @_documentation(visibility: internal) import struct NIOCore.ByteBuffer
@_exported @_documentation(visibility: internal) import struct NIOCore.ByteBufferAllocator
@_exported @_documentation(visibility: internal) import protocol NIOCore.Channel
@_exported @_documentation(visibility: internal) import protocol NIOCore.EventLoopGroup
@_exported @_documentation(visibility: internal) import enum NIOCore.SocketAddress
// NIOPosix: the default event loop group, and the type to make another one.
@_exported @_documentation(visibility: internal) import class NIOPosix.MultiThreadedEventLoopGroup
// NIOHTTP1: the handshake's request and response heads, the plain HTTP handler's status.
@_exported @_documentation(visibility: internal) import struct NIOHTTP1.HTTPRequestHead
@_exported @_documentation(visibility: internal) import struct NIOHTTP1.HTTPResponseHead
@_exported @_documentation(visibility: internal) import struct NIOHTTP1.HTTPHeaders
@_exported @_documentation(visibility: internal) import enum NIOHTTP1.HTTPResponseStatus
// swift-log: the logger servers, clients and connections take.
@_exported @_documentation(visibility: internal) import struct Logging.Logger
// NIOSSL: TLS for wss:// listeners and clients.
@_exported @_documentation(visibility: internal) import struct NIOSSL.TLSConfiguration
