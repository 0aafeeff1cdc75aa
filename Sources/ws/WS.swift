import ArgumentParser

/// `ws`: the command-line face of the library.
@main
struct WS: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ws",
        abstract: "WebSocket server and client tool built on the WebSocket library.",
        subcommands: [Serve.self, Connect.self, AutobahnClient.self, Bench.self])
}
