import NIOCore

/// How connections size their receive buffers.
enum WebSocketReceiveBuffers {
    /// The receive buffer sizes of server and client connections (HTTP/1.1): NIO's adaptive
    /// sizes, from 512 bytes to 16 KiB instead of from 2 KiB to 64 KiB. NIO keeps a connection's receive buffer for its
    /// next read for as long as the connection is open, at the largest size it has had, so an
    /// idle connection costs its first size, and one that once received a large message costs
    /// the largest. A handshake of up to 512 bytes fits in one read; a longer one (a browser's
    /// is ~600 bytes) takes another and leaves a 1 KiB buffer. A buffer that a read fills doubles
    /// for the next read. Measured (Benchmarks, W3: 64 KiB messages, 6 interleaved runs): 16 KiB
    /// reads echo 25% more per second than 64 KiB ones (18.7 against 23.8 µs of server CPU per
    /// message; probably because the unmasking reads bytes the copy from the kernel has just left
    /// in the cache), and
    /// an idle connection after a 1 MiB burst keeps 20 KiB instead of 68.
    static let sizes = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 16 * 1024)
}

extension ByteBuffer {
    /// The readable bytes, copied into storage of their own.
    ///
    /// For input kept past the read it came in: it must not keep the channel's receive buffer.
    /// NIO reuses that buffer for the next read only while nobody else holds it; otherwise it
    /// allocates another and keeps both (up to `maxMessagesPerRead` of them, each as large as
    /// the receive buffers grow) for the rest of the connection's life. A connection paused in
    /// the middle of a burst kept 0.5 MiB that way.
    func ownStorage() -> ByteBuffer {
        var copy = ByteBufferAllocator().buffer(capacity: readableBytes)
        copy.writeImmutableBuffer(self)
        return copy
    }
}
