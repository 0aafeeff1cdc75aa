import NIOCore

extension ByteBuffer {
    /// The readable bytes, copied into storage of their own.
    ///
    /// For input kept past the read it came in: it must not keep the channel's receive buffer.
    /// NIO reuses that buffer for the next read only while nobody else holds it; otherwise it
    /// allocates another and keeps both (up to `maxMessagesPerRead` of them, each up to 64 KiB)
    /// for the rest of the connection's life. A connection paused in the middle of a burst kept
    /// 0.5 MiB that way.
    func ownStorage() -> ByteBuffer {
        var copy = ByteBufferAllocator().buffer(capacity: readableBytes)
        copy.writeImmutableBuffer(self)
        return copy
    }
}
