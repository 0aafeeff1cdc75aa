import NIOCore
import NIOHTTP1
import Testing

@testable import WebSocket

/// A refused `connect` over a real socket (127.0.0.1): the error carries the status, the
/// `X-WebSocket-Reject-Reason` and the response headers as fields, in the async and the callback
/// forms alike.
@Suite("Refused connect")
struct RefusedConnectClientTests {
    /// A server that rejects every request with 403 and the reason "go away".
    static func rejectingServer() async throws -> TestServer {
        try await TestServer.start(setup: { server in
            server.onRequest { $0.reject(status: 403, reason: "go away") }
        })
    }

    /// The error of an async connect to `url`, waiting at most 10 s.
    static func asyncConnectError(_ client: WebSocketClient, url: String) async throws -> WebSocketError {
        try await withTimeout(10, "the async connect to fail") {
            do {
                let connection: WebSocketConnection = try await client.connect(url: url)
                try? connection.close()
                throw TestFailure("the connect to a rejecting server succeeded")
            } catch let error as WebSocketError {
                return error
            }
        }
    }

    /// Checks that `error` says: 403, "go away", with the header among the response headers.
    static func expectRefusal(_ error: WebSocketError) throws {
        #expect(error.code == .unexpectedStatus)
        #expect(error.message.contains("403"))
        let response = try #require(error.response, "the error carries no response: \(error)")
        #expect(response.statusCode == 403)
        #expect(response.statusMessage == "Forbidden")
        #expect(response.rejectReason == "go away")
        #expect(response.headers.first(name: "X-WebSocket-Reject-Reason") == "go away")
        #expect(response.headers.first(name: "content-type") == "text/plain; charset=utf-8")
    }

    @Test("the async connect throws unexpectedStatus with 403, the reason and the headers as fields")
    func asyncForm() async throws {
        let server = try await Self.rejectingServer()
        let error = try await Self.asyncConnectError(WebSocketClient(), url: server.url)
        try Self.expectRefusal(error)
        await server.stop()
    }

    @Test("onConnectFailed gets the same fields")
    func callbackForm() async throws {
        let server = try await Self.rejectingServer()
        let client = WebSocketClient()
        let failures = Expectation<WebSocketError>()
        client.onConnectFailed { failures.fulfill($0) }
        client.connect(server.url)
        let error = try await failures.value(10, "connectFailed")
        try Self.expectRefusal(error)
        await server.stop()
    }

    @Test("with onHttpResponse registered, the async connect throws the same error; httpResponse replaces connectFailed")
    func withHTTPResponseHandler() async throws {
        let server = try await Self.rejectingServer()
        let client = WebSocketClient()
        let responses = Expectation<WebSocketClient.HTTPResponse>()
        let failures = Expectation<WebSocketError>()
        client.onHttpResponse { response, _ in responses.fulfill(response) }
        client.onConnectFailed { failures.fulfill($0) }
        let error = try await Self.asyncConnectError(client, url: server.url)
        try Self.expectRefusal(error)
        // The handlers ran before the connect threw.
        let response = try await responses.value(0, "httpResponse (already delivered)")
        #expect(response.statusCode == 403)
        #expect(response.headers.first(name: "X-WebSocket-Reject-Reason") == "go away")
        #expect(String(buffer: response.body) == "Forbidden")
        #expect(await failures.values(during: 0.2).isEmpty)
        await server.stop()
    }

    @Test("errors other than a refusal carry no response")
    func noResponseOtherwise() async throws {
        let error = try await Self.asyncConnectError(WebSocketClient(), url: "ws://127.0.0.1:1/")
        #expect(error.code == .connectionRefused)
        #expect(error.response == nil)
    }
}

/// A test that reached a state it should not have.
struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
