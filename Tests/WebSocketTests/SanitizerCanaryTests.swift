import Foundation
import Testing

/// Proof that a sanitizer run can fail: with `WS_SANITIZER_CANARY=thread` this test races on
/// purpose, with `WS_SANITIZER_CANARY=address` it reads past the end of a heap block.
/// `scripts/sanitizers.sh` runs it after the suite, under the same build, and fails unless the
/// sanitizer reports it; a build that is not really instrumented would pass it silently. Skipped
/// in every other run.
@Suite("Sanitizer canary")
struct SanitizerCanaryTests {
    static let canary = ProcessInfo.processInfo.environment["WS_SANITIZER_CANARY"]

    /// Unsynchronized on purpose.
    final class Racy: @unchecked Sendable {
        var value = 0
    }

    @Test("two threads write one variable without a lock", .enabled(if: canary == "thread", "WS_SANITIZER_CANARY is not thread"))
    func dataRace() {
        let racy = Racy()
        let done = DispatchGroup()
        for _ in 0..<2 {
            done.enter()
            Thread.detachNewThread {
                for _ in 0..<10_000 { racy.value += 1 }
                done.leave()
            }
        }
        #expect(done.wait(timeout: .now() + 30) == .success)
    }

    @Test("a read one byte past a heap block", .enabled(if: canary == "address", "WS_SANITIZER_CANARY is not address"))
    func heapOverflow() {
        let block = UnsafeMutablePointer<UInt8>.allocate(capacity: 16)
        block.initialize(repeating: 7, count: 16)
        defer { block.deallocate() }
        // The index comes from outside, so no compiler can see the overflow coming.
        let index = Int(ProcessInfo.processInfo.environment["WS_SANITIZER_CANARY_INDEX"] ?? "16") ?? 16
        Self.keep(block[index])
    }

    @inline(never)
    static func keep(_ byte: UInt8) {
        _ = byte
    }
}
