import Foundation
import Logging

/// How `ws` writes its log lines to standard error.
enum LogFormat: String, CaseIterable, Sendable {
    /// `2026-11-27T15:45:00Z info  connection opened remote=127.0.0.1 path=/`
    case text
    /// One JSON object per line: `{"time":…,"level":…,"message":…, metadata…}`
    case json
}

/// A swift-log handler for `ws`: readable lines by default, JSON lines when asked.
struct WSLogHandler: LogHandler {
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]
    let format: LogFormat

    init(format: LogFormat, level: Logger.Level) {
        self.format = format
        self.logLevel = level
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var all = metadata
        if let extra = event.metadata { all.merge(extra) { $1 } }
        let time = Date().formatted(.iso8601)
        let line: String
        switch format {
        case .text:
            let fields = all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            let level = event.level.rawValue.padding(toLength: 8, withPad: " ", startingAt: 0)
            line = "\(time) \(level) \(event.message)" + (fields.isEmpty ? "" : " " + fields)
        case .json:
            var fields = ["\"time\":\(ChatRoom.quote(time))", "\"level\":\(ChatRoom.quote(event.level.rawValue))", "\"message\":\(ChatRoom.quote("\(event.message)"))"]
            fields += all.sorted { $0.key < $1.key }.map { "\(ChatRoom.quote($0.key)):\(ChatRoom.quote("\($0.value)"))" }
            line = "{" + fields.joined(separator: ",") + "}"
        }
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
}
