import Testing

@testable import WebSocket

@Suite("UTF8Validator")
struct UTF8ValidatorTests {
    static let valid: [[UInt8]] = [
        [], Array("plain ascii text that is longer than eight bytes".utf8), Array("héllo wörld".utf8),
        Array("世界 😀 𝄞".utf8), [0xEF, 0xBF, 0xBF], [0xF4, 0x8F, 0xBF, 0xBF], [0xED, 0x9F, 0xBF],
        Array("κόσμε".utf8),
    ]
    static let invalid: [[UInt8]] = [
        [0x80], [0xC0, 0x80], [0xC1, 0xBF], [0xE0, 0x80, 0x80], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80],
        [0xF5, 0x80, 0x80, 0x80], [0xFF], Array("abc".utf8) + [0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE, 0xB5, 0xED, 0xA0, 0x80, 0x65, 0x64, 0x69, 0x74, 0x65, 0x64],
        [0xF0, 0x80, 0x80, 0x80], [0xE1, 0x41],
    ]

    @Test("valid texts validate whole and split at every position", arguments: valid)
    func validSplits(bytes: [UInt8]) {
        #expect(UTF8Validator.isValid(bytes))
        for cut in 0...bytes.count {
            var validator = UTF8Validator()
            let first = validator.validate(bytes[..<cut])
            let second = validator.validate(bytes[cut...])
            #expect(first && second)
            #expect(validator.isComplete)
        }
    }

    @Test("invalid texts fail whole and split at every position", arguments: invalid)
    func invalidSplits(bytes: [UInt8]) {
        #expect(!UTF8Validator.isValid(bytes))
        for cut in 0...bytes.count {
            var validator = UTF8Validator()
            let ok = validator.validate(bytes[..<cut]) && validator.validate(bytes[cut...]) && validator.isComplete
            #expect(!ok, "cut at \(cut)")
        }
    }

    @Test("the first invalid byte fails at once, before the text ends")
    func failFast() {
        var validator = UTF8Validator()
        let start = validator.validate(Array("valid start ".utf8))
        let bad = validator.validate([0xCE, 0xBA, 0xF5])
        #expect(start && !bad)
    }

    @Test("a truncated sequence is incomplete, not invalid, until the text ends")
    func truncated() {
        var validator = UTF8Validator()
        let head = validator.validate([0xF0, 0x9F])
        #expect(head)
        #expect(!validator.isComplete)
        let tail = validator.validate([0x98, 0x80])
        #expect(tail)
        #expect(validator.isComplete)
    }

    @Test("agrees with the standard library on random bytes")
    func randomAgreement() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<3000 {
            let length = Int.random(in: 0...24, using: &generator)
            let bytes = (0..<length).map { _ in
                // Bias towards interesting lead and continuation bytes.
                [UInt8.random(in: 0...0x7F, using: &generator), UInt8.random(in: 0x80...0xBF, using: &generator),
                 UInt8.random(in: 0xC0...0xFF, using: &generator)].randomElement(using: &generator)!
            }
            let expected = String(validating: bytes, as: UTF8.self) != nil
            #expect(UTF8Validator.isValid(bytes) == expected, "\(bytes)")
        }
    }
}
