import Foundation
import Testing

// The DocC article "Using it inside Hummingbird or Vapor" shows two complete programs; they are
// compiled as the targets ArticleHummingbird and ArticleVapor, and the article must quote them
// word for word (the files add only a comment at the top).
@Suite("The article's programs")
struct ArticleTests {
    static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()  // Integrations/

    /// The article's ```swift blocks.
    static func articleBlocks() throws -> [String] {
        let article = try String(
            contentsOf: root.deletingLastPathComponent().appendingPathComponent("Sources/WebSocket/WebSocket.docc/UsingItInsideHummingbirdOrVapor.md"),
            encoding: .utf8)
        return article.components(separatedBy: "```swift\n").dropFirst().compactMap { $0.components(separatedBy: "```").first }
    }

    /// A program's source without its leading `//` comment lines.
    static func program(_ target: String) throws -> String {
        let source = try String(contentsOf: root.appendingPathComponent("Sources/\(target)/main.swift"), encoding: .utf8)
        return source.split(separator: "\n", omittingEmptySubsequences: false)
            .drop { $0.hasPrefix("//") }.joined(separator: "\n")
    }

    @Test("the article quotes the compiled programs word for word", arguments: ["ArticleHummingbird", "ArticleVapor"])
    func quoted(_ target: String) throws {
        let program = try Self.program(target)
        #expect(program.contains("import WebSocket"))
        #expect(try Self.articleBlocks().contains(program), "the article's block differs from Integrations/Sources/\(target)/main.swift")
    }
}
