import Testing

import WebSocket

/// `WebSocketRequest.resourceURL`: the request target's path and its query, looked up by name.
@Suite("WebSocketRequest resourceURL")
struct WebSocketRequestTests {
    @Test("queryItem(named:) is the first value, percent-decoded, + a space; nil when missing")
    func firstValue() {
        let url = WebSocketResourceURL("/chat?room=a%20b&name=J%C3%BCrgen+M&room=c")
        #expect(url.path == "/chat")
        #expect(url.queryItem(named: "room") == "a b")
        #expect(url.queryItem(named: "name") == "Jürgen M")
        #expect(url.queryItem(named: "missing") == nil)
        #expect(url.queryItem(named: "Room") == nil)  // names are case-sensitive
    }

    @Test("queryItems(named:) is every value in order; [] when missing")
    func everyValue() {
        let url = WebSocketResourceURL("/chat?room=a%20b&x=1&room=c&room=")
        #expect(url.queryItems(named: "room") == ["a b", "c", ""])
        #expect(url.queryItems(named: "x") == ["1"])
        #expect(url.queryItems(named: "missing") == [])
    }

    @Test("a name without = has the value \"\"; names are compared decoded; %2B is a plus")
    func edges() {
        let url = WebSocketResourceURL("/?flag&r%6Fom=one&sum=1%2B1&a+b=c")
        #expect(url.queryItem(named: "flag") == "")
        #expect(url.queryItem(named: "room") == "one")
        #expect(url.queryItem(named: "sum") == "1+1")
        #expect(url.queryItem(named: "a b") == "c")
    }

    @Test("a % not followed by two hex digits stays as it is (no sign taken as a digit)")
    func invalidPercent() {
        let url = WebSocketResourceURL("/?a=%+1&b=%zz&c=100%&d=%4")
        #expect(url.queryItem(named: "a") == "% 1")
        #expect(url.queryItem(named: "b") == "%zz")
        #expect(url.queryItem(named: "c") == "100%")
        #expect(url.queryItem(named: "d") == "%4")
    }

    @Test("invalid UTF-8 after decoding becomes U+FFFD")
    func invalidUTF8() {
        #expect(WebSocketResourceURL("/?x=%FF").queryItem(named: "x") == "\u{FFFD}")
    }

    @Test("no query: path only, every lookup empty")
    func noQuery() {
        let url = WebSocketResourceURL("/plain")
        #expect(url.path == "/plain")
        #expect(url.query == nil)
        #expect(url.queryItems.isEmpty)
        #expect(url.queryItem(named: "room") == nil)
        #expect(url.queryItems(named: "room") == [])
    }

    @Test("a live request's resourceURL answers the lookup")
    func overASocket() async throws {
        let rooms = Expectation<(String?, [String])>()
        let server = try await TestServer.start(setup: { server in
            server.onRequest { request in
                rooms.fulfill((request.resourceURL.queryItem(named: "room"), request.resourceURL.queryItems(named: "tag")))
                request.reject(status: 404)
            }
        })
        defer { Task { await server.stop() } }
        // Refused with 404: the connect throws, which is not what this test is about.
        let client = WebSocketClient()
        _ = try? await client.connect(url: "ws://127.0.0.1:\(server.port)/chat?room=l%C3%A4rm&tag=a&tag=b+c") as WebSocketConnection
        let (room, tags) = try await rooms.value()
        #expect(room == "lärm")
        #expect(tags == ["a", "b c"])
    }
}
