#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// ANSI colours for `ws`'s direction markers and notices, used only when standard output is a
/// terminal that takes them (not a pipe, `NO_COLOR` unset, `TERM` not `dumb`).
enum TerminalStyle {
    static let enabled: Bool = {
        guard isatty(1) == 1 else { return false }
        if let noColor = getenv("NO_COLOR"), noColor.pointee != 0 { return false }
        if let term = getenv("TERM"), String(cString: term) == "dumb" { return false }
        return true
    }()

    private static func paint(_ text: String, _ code: String) -> String {
        enabled ? "\u{1B}[\(code)m\(text)\u{1B}[0m" : text
    }

    /// `<`: something the peer sent (cyan).
    static var incoming: String { paint("<", "36") }
    /// `>`: something we sent (green).
    static var outgoing: String { paint(">", "32") }
    /// A notice such as "Connected to …" (yellow).
    static func notice(_ text: String) -> String { paint(text, "33") }
    /// An error (red).
    static func error(_ text: String) -> String { paint(text, "31") }
}
