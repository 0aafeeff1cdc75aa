import NIOConcurrencyHelpers
import ServiceLifecycle

extension WebSocketServer: Service {
    /// Runs the server as a ServiceLifecycle `Service`: starts its ``Configuration/broker`` and
    /// listens on ``listeners`` (there may be none), then waits;
    /// on graceful shutdown (SIGTERM in a `ServiceGroup`) or cancellation it calls
    /// ``shutDown()``, which sends 1001 to every connection and waits for them to close. If a
    /// listener cannot be opened, the ones already open are closed and the error is thrown.
    ///
    /// Requests go to the `request` handlers (``onRequest(_:)``). To handle them in `async`
    /// code, run ``run(handlingRequests:)`` instead: iterating ``requests`` in a second service of
    /// the same `ServiceGroup` fails on shutdown (see ``requests``).
    public func run() async throws {
        try await serve(beforeShutDown: {})
    }

    /// Runs the server like ``run()`` and hands each request to `handler`, in a child task of
    /// its own; returns once the server has shut down and every `handler` has returned.
    ///
    /// This is the shape for handling requests in `async` code with a graceful shutdown. On
    /// graceful shutdown (a signal in a `ServiceGroup`) or cancellation it:
    /// 1. stops listening and hands out no more requests (later ones are rejected with 503);
    /// 2. closes every connection with 1001 (going away), a connection accepted from here on
    ///    included, and waits for them to close (each at most `closeTimeout`);
    /// 3. waits for the handlers, whose `for try await … in connection.messages` loops the
    ///    closes have ended, and returns (or, after cancellation, throws `CancellationError`).
    ///
    /// In a `ServiceGroup` it takes the server's place: wrap it in ServiceLifecycle's
    /// `ClosureService` and do not add the server itself as well.
    ///
    /// ```swift
    /// import ServiceLifecycle
    /// import WebSocket
    ///
    /// let server = WebSocketServer(listeners: [.init(host: "127.0.0.1", port: 8080)])
    /// let service = ClosureService {
    ///     try await server.run { request in
    ///         let connection = try request.accept(protocol: request.requestedProtocols.first)
    ///         for try await message in connection.messages { try await connection.write(message) }
    ///     }
    /// }
    /// let group = ServiceGroup(services: [service], gracefulShutdownSignals: [.sigint, .sigterm], logger: server.logger)
    /// try await group.run()
    /// ```
    ///
    /// Each request must still be accepted or rejected within `requestTimeout`. An error the
    /// handler throws ends that request's task only; it is logged (info level) with the
    /// request's resource, but for a `CancellationError`. `handler` should return once its connection has closed: the server
    /// waits for it. With `autoAcceptConnections` no request is handed out.
    ///
    /// - Parameter handler: called once per request, each call in a child task of this one (so
    ///   it sees the `ServiceGroup`'s graceful shutdown and cancellation).
    public func run(handlingRequests handler: @escaping @Sendable (WebSocketRequest) async throws -> Void) async throws {
        let (events, continuation) = AsyncStream.makeStream(of: HandlerEvent.self)
        let stopping = NIOLockedValueBox(false)
        let stop: @Sendable () -> Void = {
            stopping.withLockedValue { $0 = true }
            continuation.finish()
        }
        let requestToken = onRequest { request in
            if case .terminated = continuation.yield(.request(request)) {
                request.reject(status: 503, reason: "The server is shutting down")
            }
        }
        // A handler may accept after the shutdown's 1001s went out (it was deciding): such a
        // connection is closed at once, or the wait for the handlers would never end.
        let connectToken = onConnect { connection in
            if stopping.withLockedValue({ $0 }) { try? connection.close(reasonCode: WebSocketCloseReason.goingAway) }
        }
        defer {
            requestToken.cancel()
            connectToken.cancel()
        }
        let logger = self.logger
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                defer { stop() }
                try await self.serve(beforeShutDown: stop)
            }
            for await event in events {
                switch event {
                case .request(let request):
                    guard !stopping.withLockedValue({ $0 }) else {
                        request.reject(status: 503, reason: "The server is shutting down")
                        continue
                    }
                    group.addTask {
                        do {
                            try await handler(request)
                        } catch is CancellationError {
                            // The run was cancelled: the handler just stopped, as asked.
                        } catch {
                            logger.info(
                                "WebSocket request handler threw",
                                metadata: request.logMetadata.merging(["error": "\(error)"]) { $1 })
                        }
                        continuation.yield(.handled)
                    }
                case .handled:
                    // A handler returned: collect its task, so that a long-running server does
                    // not keep one finished child per connection it ever had.
                    _ = try await group.next()
                }
            }
            try await group.waitForAll()
        }
    }

    /// What ``run(handlingRequests:)`` waits for: a request to hand out, or a handler that
    /// returned.
    private enum HandlerEvent: Sendable {
        case request(WebSocketRequest)
        case handled
    }

    /// Listens on ``listeners`` until graceful shutdown or cancellation, then calls
    /// `beforeShutDown` and ``shutDown()``; the same when a listener cannot be opened, and
    /// then throws that error.
    private func serve(beforeShutDown: @Sendable () -> Void) async throws {
        do {
            // Also for a server with no listeners of its own (one inside another HTTP server, as
            // the Hummingbird adapter runs it): its broker starts here.
            try await startBroker()
            for listener in listeners {
                try await listen(host: listener.host, port: listener.port, tlsConfiguration: listener.tlsConfiguration)
            }
            try await gracefulShutdown()
        } catch {
            beforeShutDown()
            await shutDown()
            throw error
        }
        logger.info("WebSocket server shutting down gracefully")
        beforeShutDown()
        await shutDown()
    }
}
