import NIOCore
import NIOSSL

// The HTTP/2 connections a client shares between its WebSockets (RFC 8441), one per server.
extension WebSocketClient {
    /// The shared HTTP/2 connection to `host:port`, opened on first use and again after it
    /// closed or failed; a server found not to take WebSockets over HTTP/2 is remembered.
    func pooledHTTP2Connection(host: String, port: Int, serverName: String?) -> EventLoopFuture<WebSocketHTTP2Connection.OpenResult> {
        let key = "\(host):\(port)"
        let eventLoop = eventLoopGroup.next()
        let context: NIOSSLContext
        do {
            context = try cachedHTTP2TLSContext.withLockedValue { cached in
                if let cached { return cached }
                let context = try NIOSSLContext(configuration: WebSocketHTTP2Connection.alpnConfiguration(configuration.tlsConfiguration))
                cached = context
                return context
            }
        } catch {
            return eventLoop.makeFailedFuture(WebSocketError(.tlsFailed, "The TLS configuration is not usable: \(error)"))
        }
        let promise = eventLoop.makePromise(of: WebSocketHTTP2Connection.OpenResult.self)
        let existing = http2Pool.withLockedValue { pool -> EventLoopFuture<WebSocketHTTP2Connection.OpenResult>? in
            switch pool[key] {
            case .opening(let future): return future
            case .known(let result):
                if case .http2(let connection) = result, !connection.isActive { break }
                return eventLoop.makeSucceededFuture(result)
            case nil: break
            }
            pool[key] = .opening(promise.futureResult)
            return nil
        }
        if let existing {
            promise.completeWith(existing)  // (a promise must not be dropped uncompleted)
            return existing
        }
        // Opened outside the lock: its callbacks take the lock.
        WebSocketHTTP2Connection.open(
            host: host, port: port, sslContext: context, serverName: serverName, eventLoop: eventLoop,
            timeout: configuration.handshakeTimeout, writeBufferWaterMark: configuration.writeBufferWaterMark
        ).whenComplete { result in
            self.http2Pool.withLockedValue { pool in
                switch result {
                case .success(let known): pool[key] = .known(known)
                case .failure: pool[key] = nil
                }
            }
            if case .success(.http2(let connection)) = result {
                // Forget it once closed (a new one is opened on the next connect).
                connection.channel.closeFuture.whenComplete { _ in
                    self.http2Pool.withLockedValue { pool in
                        if case .known(.http2(let pooled)) = pool[key], pooled === connection { pool[key] = nil }
                    }
                }
            }
            promise.completeWith(result)
        }
        return promise.futureResult
    }

    /// What the pool holds for `host:port` (for tests): nil, "opening", "http2" or "http1".
    func http2PoolState(host: String, port: Int) -> String? {
        http2Pool.withLockedValue { pool in
            switch pool["\(host):\(port)"] {
            case nil: return nil
            case .opening: return "opening"
            case .known(.http2): return "http2"
            case .known(.notSupported): return "http1"
            }
        }
    }

    /// An entry of the HTTP/2 connection pool.
    enum HTTP2PoolEntry: Sendable {
        case opening(EventLoopFuture<WebSocketHTTP2Connection.OpenResult>)
        case known(WebSocketHTTP2Connection.OpenResult)
    }
}
