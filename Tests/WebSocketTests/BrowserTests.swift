import Foundation
import Testing

/// The demo page of `ws serve` in headless Chromium (Tests/Browser/browser_test.py drives it
/// over the DevTools protocol): chat between three pages in one room (topics), a 1 MiB binary echo, clean 4000 closes,
/// permessage-deflate negotiated by the browser, non-blank screenshots.
@Suite("Browser")
struct BrowserTests {
    /// The `ws` executable built beside this test bundle.
    static var wsBinary: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("ws").path
    }

    @Test("headless Chromium uses the chat page and the echo server")
    func chromium() async throws {
        let ws = Self.wsBinary
        guard FileManager.default.isExecutableFile(atPath: ws) else {
            Issue.record("the ws executable is not built at \(ws); run `swift build` first")
            return
        }
        let shots = FileManager.default.temporaryDirectory.appendingPathComponent("ws-browser-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: shots) }
        let peer = try PeerProcess(
            name: "browser test", executable: try Interop.python(),
            arguments: ["-u", Interop.packageRoot.appendingPathComponent("Tests/Browser/browser_test.py").path, ws, shots])
        defer { peer.killByPID() }
        let summary = try await peer.line(100, "the browser test's summary") { $0.hasPrefix("browser: ") }
        #expect(summary == "browser: 14 passed, 0 failed", "\(summary)\n\(peer.stdoutText)\n\(peer.stderrText)")
    }

    @Test("headless Chromium opens the page and its WebSockets over one HTTP/2 connection (RFC 8441)")
    func chromiumOverHTTP2() async throws {
        let ws = Self.wsBinary
        guard FileManager.default.isExecutableFile(atPath: ws) else {
            Issue.record("the ws executable is not built at \(ws); run `swift build` first")
            return
        }
        let tls = Interop.packageRoot.appendingPathComponent("Tests/WebSocketTests/Resources/tls").path
        let peer = try PeerProcess(
            name: "browser h2 test", executable: try Interop.python(),
            arguments: ["-u", Interop.packageRoot.appendingPathComponent("Tests/Browser/browser_h2_test.py").path, ws, tls])
        defer { peer.killByPID() }
        let summary = try await peer.line(100, "the browser h2 test's summary") { $0.hasPrefix("browser-h2: ") }
        #expect(summary == "browser-h2: 11 passed, 0 failed", "\(summary)\n\(peer.stdoutText)\n\(peer.stderrText)")
    }
}
