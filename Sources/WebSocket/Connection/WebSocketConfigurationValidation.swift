// Configuration values checked where they take effect (`listen`, `connect`): a value out of its
// range throws an error naming the field and the range accepted, never traps later (a negative
// frame size once trapped converting to UInt64; `maxHandshakeSize` past UInt32 trapped in the
// HTTP/2 settings).

/// A check of one configuration field.
struct WebSocketConfigurationCheck {
    /// The configuration's name in messages (`WebSocketServer.Configuration`).
    let owner: String

    func range(_ name: String, _ value: Int, _ range: ClosedRange<Int>, _ why: String = "") throws(WebSocketError) {
        guard range.contains(value) else {
            let upper = range.upperBound == Int.max ? "" : " and at most \(range.upperBound)"
            throw WebSocketError(
                .invalidArgument, "\(owner).\(name) is \(value); it must be at least \(range.lowerBound)\(upper)\(why)")
        }
    }

    func nonNegative(_ name: String, _ value: Duration) throws(WebSocketError) {
        guard value >= .zero else {
            throw WebSocketError(.invalidArgument, "\(owner).\(name) is \(value); it must not be negative")
        }
    }
}

extension WebSocketConnectionSettings {
    /// Checks the options both configurations share.
    func validateConnectionSettings(_ check: WebSocketConfigurationCheck) throws(WebSocketError) {
        try check.range("maxReceivedFrameSize", maxReceivedFrameSize, 0...Int.max)
        try check.range("maxReceivedMessageSize", maxReceivedMessageSize, 0...Int.max)
        try check.range("maxFragmentsPerMessage", maxFragmentsPerMessage, 1...Int.max)
        try check.range("fragmentationThreshold", fragmentationThreshold, 0...Int.max)
        try check.range(
            "maxSendBackpressure", maxSendBackpressure, writeBufferWaterMark.high...Int.max,
            " (writeBufferWaterMark.high: sends below the high watermark always go)")
        try check.nonNegative("closeTimeout", closeTimeout)
        try check.nonNegative("keepaliveInterval", keepaliveInterval)
        try check.nonNegative("keepaliveGracePeriod", keepaliveGracePeriod)
    }
}

extension WebSocketServer.Configuration {
    /// Throws ``WebSocketError/Code-swift.struct/invalidArgument`` naming the first field out of
    /// its range (a negative size or duration, `maxHandshakeSize` or `http2MaxConcurrentStreams`
    /// past what HTTP carries, `maxSendBackpressure` below the write buffer's high watermark).
    /// ``WebSocketServer/listen(host:port:tlsConfiguration:)`` calls it first.
    public func validate() throws(WebSocketError) {
        let check = WebSocketConfigurationCheck(owner: "WebSocketServer.Configuration")
        try validateConnectionSettings(check)
        try check.range("maxHandshakeSize", maxHandshakeSize, 1...Int(UInt32.max))
        try check.range("maxHeaderCount", maxHeaderCount, 1...Int.max)
        if let maxConnections { try check.range("maxConnections", maxConnections, 0...Int.max) }
        try check.range("http2MaxConcurrentStreams", http2MaxConcurrentStreams, 0...Int(UInt32.max))
        try check.range("maxBackpressure", maxBackpressure, 0...Int.max)
        try check.nonNegative("requestTimeout", requestTimeout)
        try check.nonNegative("handshakeTimeout", handshakeTimeout)
        try check.nonNegative("http2IdleTimeout", http2IdleTimeout)
    }
}

extension WebSocketClient.Configuration {
    /// Throws ``WebSocketError/Code-swift.struct/invalidArgument`` naming the first field out of
    /// its range (a negative size or duration, a `webSocketVersion` other than 13 or 8,
    /// `maxSendBackpressure` below the write buffer's high watermark). Every `connect` calls it
    /// first.
    public func validate() throws(WebSocketError) {
        let check = WebSocketConfigurationCheck(owner: "WebSocketClient.Configuration")
        guard webSocketVersion == 13 || webSocketVersion == 8 else {
            throw WebSocketError(.invalidArgument, "webSocketVersion must be 13 or 8, not \(webSocketVersion)")
        }
        try validateConnectionSettings(check)
    }
}
