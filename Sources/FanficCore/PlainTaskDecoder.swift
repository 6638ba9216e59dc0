import Foundation

/// The common task message read without JSONDecoder, which was most of the cost of decoding a
/// task (and decoding most of routing one). It takes only the plainest form of a task: one JSON
/// object of this build's version, ASCII with no escapes and no control characters, each of the
/// task's own keys at most once and no other key, and values that are strings, integers without
/// fraction or exponent, `true`, `false` or `null`. For anything else it answers nil, and the
/// message takes JSONDecoder's path (``WireCodec/decodeTaskWithJSONDecoder(_:)``), which decides
/// and says what is wrong. Where it answers, it answers what that path would: the unit tests and
/// the task-codec fuzzer compare the two on every input.
enum PlainTaskDecoder {
    static func decode(_ data: Data) -> TaskMessage? {
        data.withUnsafeBytes { raw in
            var reader = Reader(bytes: raw.bindMemory(to: UInt8.self))
            return reader.task()
        }
    }

    private enum Value {
        case string(String)
        case integer(Int)
        case boolean(Bool)
        case null
    }

    private enum Key: String, CaseIterable {
        case version, id, url, site, attempt, behavior
        case calibreID = "calibre_id"
        case retryTier = "retry_tier"
        case hailMary = "hail_mary"
        case submittedBy = "submitted_by"
        case submittedAt = "submitted_at"
    }

    private struct Reader {
        let bytes: UnsafeBufferPointer<UInt8>
        var index = 0

        init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

        mutating func task() -> TaskMessage? {
            var values: [Key: Value] = [:]
            skipSpace()
            guard take(UInt8(ascii: "{")) else { return nil }
            skipSpace()
            if !take(UInt8(ascii: "}")) {
                while true {
                    skipSpace()
                    guard let name = string(), let key = Key(rawValue: name), values[key] == nil else { return nil }
                    skipSpace()
                    guard take(UInt8(ascii: ":")) else { return nil }
                    skipSpace()
                    guard let value = value() else { return nil }
                    values[key] = value
                    skipSpace()
                    if take(UInt8(ascii: "}")) { break }
                    guard take(UInt8(ascii: ",")) else { return nil }
                }
            }
            skipSpace()
            guard index == bytes.count else { return nil }
            return Self.task(from: values)
        }

        private static func task(from values: [Key: Value]) -> TaskMessage? {
            guard case .integer(TaskMessage.currentVersion) = values[.version],
                case .string(let id) = values[.id],
                case .string(let url) = values[.url],
                case .string(let site) = values[.site],
                case .integer(let attempt) = values[.attempt],
                case .boolean(let hailMary) = values[.hailMary],
                case .string(let behaviorName) = values[.behavior],
                let behavior = TaskMessage.Behavior(rawValue: behaviorName),
                case .string(let submittedBy) = values[.submittedBy],
                case .string(let submittedAtText) = values[.submittedAt],
                let submittedAt = Timestamp.parse(submittedAtText),
                let calibreID = optionalInteger(values[.calibreID]),
                let retryTier = optionalInteger(values[.retryTier])
            else { return nil }
            var task = TaskMessage(
                id: id, url: url, site: site, calibreID: calibreID, attempt: attempt, retryTier: retryTier,
                hailMary: hailMary, behavior: behavior, submittedBy: submittedBy, submittedAt: submittedAt)
            // As the date strategy gives it, not rounded again by the initializer.
            task.submittedAt = submittedAt
            return task
        }

        /// Absent or null: `.some(nil)`; an integer: it; anything else: nil (not this path's).
        private static func optionalInteger(_ value: Value?) -> Int?? {
            switch value {
            case nil, .null: .some(nil)
            case .integer(let number): .some(number)
            default: nil
            }
        }

        private mutating func skipSpace() {
            while index < bytes.count {
                switch bytes[index] {
                case 0x20, 0x09, 0x0A, 0x0D: index += 1
                default: return
                }
            }
        }

        private mutating func take(_ byte: UInt8) -> Bool {
            guard index < bytes.count, bytes[index] == byte else { return false }
            index += 1
            return true
        }

        private mutating func take(_ word: StaticString) -> Bool {
            let count = word.utf8CodeUnitCount
            guard bytes.count - index >= count else { return false }
            for offset in 0..<count where bytes[index + offset] != word.utf8Start[offset] { return false }
            index += count
            return true
        }

        private mutating func value() -> Value? {
            guard index < bytes.count else { return nil }
            switch bytes[index] {
            case UInt8(ascii: "\""): return string().map(Value.string)
            case UInt8(ascii: "t"): return take("true") ? .boolean(true) : nil
            case UInt8(ascii: "f"): return take("false") ? .boolean(false) : nil
            case UInt8(ascii: "n"): return take("null") ? .null : nil
            default: return integer().map(Value.integer)
            }
        }

        /// A string of printable ASCII without escapes.
        private mutating func string() -> String? {
            guard take(UInt8(ascii: "\"")) else { return nil }
            let start = index
            while index < bytes.count {
                let byte = bytes[index]
                if byte == UInt8(ascii: "\"") {
                    defer { index += 1 }
                    return String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
                }
                guard byte >= 0x20, byte < 0x7F, byte != UInt8(ascii: "\\") else { return nil }
                index += 1
            }
            return nil
        }

        /// `0`, or an optional `-` and 1 to 18 digits without a leading zero, and then no `.`,
        /// exponent or further digit: an integer that fits, written the plain way.
        private mutating func integer() -> Int? {
            let negative = take(UInt8(ascii: "-"))
            let start = index
            var magnitude = 0
            while index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) {
                // A 19th digit could overflow: such a number is not this path's.
                guard index - start < 18 else { return nil }
                magnitude = magnitude * 10 + Int(bytes[index] - UInt8(ascii: "0"))
                index += 1
            }
            let digits = index - start
            guard digits > 0, bytes[start] != UInt8(ascii: "0") || (digits == 1 && !negative) else { return nil }
            if index < bytes.count, [UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E")].contains(bytes[index]) {
                return nil
            }
            return negative ? -magnitude : magnitude
        }
    }
}
