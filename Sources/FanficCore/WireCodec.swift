import Foundation

/// Turns every message on the wire (tasks here; control messages, events and status answers in
/// their own files) into bytes and back, refusing what this build cannot trust.
public enum WireCodec {
    /// Encodes a task as UTF-8 JSON with sorted keys (stable bytes for the same task).
    public static func encode(_ task: TaskMessage) -> Data { encodeJSON(task) }

    /// Any of the messages' value types as this codec writes them (for `--json` output).
    public static func encodeValue(_ value: some Encodable) -> Data { encodeJSON(value) }

    /// Sorted keys (stable bytes), millisecond UTC timestamps.
    static func encodeJSON(_ value: some Encodable) -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(Timestamp.format(date))
        }
        // Encoding a struct of strings, numbers and dates cannot fail.
        return try! encoder.encode(value)
    }

    /// Decodes a task; the error says what is wrong, for the message's `fanfic.failed` record.
    public static func decode(_ data: Data, limits: WireLimits = WireLimits()) throws(MessageDecodingError)
        -> TaskMessage
    {
        try limits.check(size: data.count)
        let task: TaskMessage
        if let plain = PlainTaskDecoder.decode(data) {
            task = plain
        } else {
            task = try decodeVersioned(data)
        }
        if task.url.count > limits.maxURLLength {
            throw MessageDecodingError(
                .tooLarge,
                "'url' is \(task.url.count) characters; at most \(limits.maxURLLength) (limits.max_url_length)")
        }
        if task.url.isEmpty { throw MessageDecodingError(.invalidField, "'url' is empty") }
        if task.site.isEmpty { throw MessageDecodingError(.invalidField, "'site' is empty") }
        if task.attempt < 0 { throw MessageDecodingError(.invalidField, "'attempt' is negative") }
        return task
    }

    /// A task as JSONDecoder reads it, without the plain path ``decode(_:limits:)`` takes first
    /// (and without the limits): what that path must agree with, for the fuzzers and tests.
    public static func decodeTaskWithJSONDecoder(_ data: Data) throws(MessageDecodingError) -> TaskMessage {
        try decodeVersioned(data)
    }

    /// Whether the plain path reads these bytes, and if so as JSONDecoder does: for the fuzzers.
    public static func plainPathAgrees(_ data: Data) -> Bool {
        guard let plain = PlainTaskDecoder.decode(data) else { return true }
        return (try? decodeTaskWithJSONDecoder(data)) == plain
    }

    /// JSON object with a supported `version`, then the typed fields.
    static func decodeVersioned<Message: VersionedMessage>(_ data: Data) throws(MessageDecodingError) -> Message {
        // The common case in one parse: a message of this build's version, naming "version" once
        // and without escapes (twice, or once more as "vers\u0069on", is refused below), decodes
        // as it is. Any other takes the path below, which parses it twice to say exactly what is
        // wrong.
        if namesVersionOnce(data), let message = try? makeDecoder().decode(Message.self, from: data),
            message.version == TaskMessage.currentVersion
        {
            return message
        }
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: data)
        } catch {
            let preview = String(decoding: data.prefix(80), as: UTF8.self)
            throw MessageDecodingError(.notJSON, "the message is not JSON: \(preview.debugDescription)")
        }
        guard let fields = object as? [String: Any] else {
            throw MessageDecodingError(.notJSON, "the message is JSON but not an object")
        }
        guard let version = fields["version"] as? Int else {
            throw MessageDecodingError(.missingField, "the message has no integer 'version' field")
        }
        guard version == TaskMessage.currentVersion else {
            throw MessageDecodingError(
                .unsupportedVersion,
                "schema version \(version) is not supported (this build reads version \(TaskMessage.currentVersion))")
        }
        let message: Message
        do {
            message = try makeDecoder().decode(Message.self, from: data)
        } catch let error as DecodingError {
            throw MessageDecodingError(.invalidField, Self.describe(error))
        } catch {
            throw MessageDecodingError(.invalidField, "\(error)")
        }
        // Given "version" twice, JSONSerialization (above) takes the last and JSONDecoder the
        // first: a message checked as version 1 would be decoded as version 0 (found by the
        // control-codec fuzzer; Fuzz/regressions). The decoded one must be the one checked.
        guard message.version == version else {
            throw MessageDecodingError(
                .invalidField, "'version' is given twice, as \(message.version) and \(version): give it once")
        }
        return message
    }

    private static let versionKey = Data(#""version""#.utf8)

    /// Whether `"version"` occurs exactly once in the bytes (as a key or anywhere else) and no
    /// key can spell it another way: the bytes have no escape at all.
    private static func namesVersionOnce(_ data: Data) -> Bool {
        guard !data.contains(UInt8(ascii: "\\")), let first = data.range(of: versionKey) else { return false }
        return data.range(of: versionKey, in: first.upperBound..<data.endIndex) == nil
    }

    private static func makeDecoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let container = try decoder.singleValueContainer()
            let text = try container.decode(String.self)
            guard let date = Timestamp.parse(text) else {
                throw DecodingError.dataCorruptedError(
                    in: container, debugDescription: "'\(text)' is not an ISO 8601 date-time")
            }
            return date
        }
        return decoder
    }

    private static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            context.codingPath.map(\.stringValue).joined(separator: ".")
        }
        switch error {
        case .keyNotFound(let key, _): return "missing field '\(key.stringValue)'"
        case .typeMismatch(let type, let context): return "field '\(path(context))' is not a \(type)"
        case .valueNotFound(_, let context): return "field '\(path(context))' is null"
        case .dataCorrupted(let context):
            return context.codingPath.isEmpty
                ? context.debugDescription : "field '\(path(context))': \(context.debugDescription)"
        @unknown default: return "\(error)"
        }
    }
}

/// A message of the wire formats: every one carries the schema version it was written in.
protocol VersionedMessage: Decodable {
    var version: Int { get }
}

extension TaskMessage: VersionedMessage {}
extension ControlMessage: VersionedMessage {}
extension CoordinatorStatus: VersionedMessage {}
extension FanficEvent: VersionedMessage {}

/// Why a message is not a task this build can run.
/// How much of a message is read at all (`[limits]`): checked before anything is parsed.
public struct WireLimits: Sendable, Hashable {
    public var maxMessageBytes: Int
    public var maxURLLength: Int

    public init(maxMessageBytes: Int = 65_536, maxURLLength: Int = 2048) {
        self.maxMessageBytes = maxMessageBytes
        self.maxURLLength = maxURLLength
    }

    func check(size: Int) throws(MessageDecodingError) {
        if size > maxMessageBytes {
            throw MessageDecodingError(
                .tooLarge,
                "the message is \(size) bytes; at most \(maxMessageBytes) are read (limits.max_message_bytes)")
        }
    }
}

public struct MessageDecodingError: Error, Sendable, Hashable, CustomStringConvertible {
    public struct Code: Hashable, Sendable {
        let name: String
        public static let notJSON = Code(name: "notJSON")
        public static let missingField = Code(name: "missingField")
        public static let unsupportedVersion = Code(name: "unsupportedVersion")
        public static let invalidField = Code(name: "invalidField")
        /// Past a `[limits]` bound.
        public static let tooLarge = Code(name: "tooLarge")
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

/// ISO 8601 timestamps with milliseconds, in UTC: `2026-01-02T03:04:05.678Z`.
///
/// Formatted from whole milliseconds by hand: Foundation's formatter truncates the binary
/// fraction (…123 becomes …122), and a task must survive a round trip unchanged. By hand also
/// because every task and event the coordinator routes is stamped, and the format style costs
/// more than the rest of the encoding; the canonical form is read the same way, other ISO 8601
/// spellings through Foundation.
public enum Timestamp {
    public static func milliseconds(_ date: Date) -> Int64 {
        Int64((date.timeIntervalSince1970 * 1000).rounded())
    }

    public static func date(milliseconds: Int64) -> Date {
        Date(timeIntervalSince1970: Double(milliseconds) / 1000)
    }

    /// Milliseconds of 1600-01-01T00:00:00.000Z and of 10000-01-01T00:00:00.000Z: four-digit years
    /// of the Gregorian calendar (Foundation's calendar is Julian before October 1582).
    private static let formattedByHand: Range<Int64> = -11_676_096_000_000..<253_402_300_800_000

    public static func format(_ date: Date) -> String {
        let millis = milliseconds(date)
        let (seconds, fraction) = millis.quotientAndRemainderFlooring(1000)
        guard formattedByHand.contains(millis) else {
            let whole = Date(timeIntervalSince1970: Double(seconds)).formatted(Date.ISO8601FormatStyle())
            return whole.dropLast() + "." + String(format: "%03d", fraction) + "Z"
        }
        let (days, secondOfDay) = seconds.quotientAndRemainderFlooring(86_400)
        let (year, month, day) = civil(daysSince1970: days)
        var text = [UInt8]()
        text.reserveCapacity(24)
        func digits(_ value: Int64, _ count: Int) {
            var divisor: Int64 = 1
            for _ in 1..<count { divisor *= 10 }
            while divisor > 0 {
                text.append(UInt8(ascii: "0") + UInt8(value / divisor % 10))
                divisor /= 10
            }
        }
        digits(year, 4)
        text.append(UInt8(ascii: "-"))
        digits(month, 2)
        text.append(UInt8(ascii: "-"))
        digits(day, 2)
        text.append(UInt8(ascii: "T"))
        digits(secondOfDay / 3600, 2)
        text.append(UInt8(ascii: ":"))
        digits(secondOfDay / 60 % 60, 2)
        text.append(UInt8(ascii: ":"))
        digits(secondOfDay % 60, 2)
        text.append(UInt8(ascii: "."))
        digits(fraction, 3)
        text.append(UInt8(ascii: "Z"))
        return String(decoding: text, as: UTF8.self)
    }

    public static func parse(_ text: String) -> Date? {
        if let millis = canonicalMilliseconds(text) { return date(milliseconds: millis) }
        let withFraction = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        guard let date = (try? Date(text, strategy: withFraction)) ?? (try? Date(text, strategy: .iso8601)) else {
            return nil
        }
        return Self.date(milliseconds: milliseconds(date))
    }

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ` exactly, a year from 1600 and a real date and time; nil for
    /// anything else (Foundation reads it: it is lenient with `02-30` and Julian before 1582).
    static func canonicalMilliseconds(_ text: String) -> Int64? {
        let bytes = Array(text.utf8)
        guard bytes.count == 24 else { return nil }
        for (index, separator) in [(4, "-"), (7, "-"), (10, "T"), (13, ":"), (16, ":"), (19, "."), (23, "Z")]
        where bytes[index] != UInt8(ascii: Unicode.Scalar(separator)!) {
            return nil
        }
        func number(_ start: Int, _ count: Int) -> Int64? {
            var value: Int64 = 0
            for byte in bytes[start..<start + count] {
                guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else { return nil }
                value = value * 10 + Int64(byte - UInt8(ascii: "0"))
            }
            return value
        }
        guard let year = number(0, 4), let month = number(5, 2), let day = number(8, 2),
            let hour = number(11, 2), let minute = number(14, 2), let second = number(17, 2),
            let fraction = number(20, 3),
            year >= 1600, (1...12).contains(month), day >= 1, day <= daysIn(month: month, year: year), hour < 24,
            minute < 60, second < 60
        else { return nil }
        let days = daysSince1970(year: year, month: month, day: day)
        return ((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + fraction
    }

    // Proleptic Gregorian calendar arithmetic (H. Hinnant's days-from-civil algorithms).

    static func civil(daysSince1970 days: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let shifted = days + 719_468
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let shiftedMonth = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * shiftedMonth + 2) / 5 + 1
        let month = shiftedMonth < 10 ? shiftedMonth + 3 : shiftedMonth - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    static func daysSince1970(year: Int64, month: Int64, day: Int64) -> Int64 {
        let marchYear = month <= 2 ? year - 1 : year
        let era = (marchYear >= 0 ? marchYear : marchYear - 399) / 400
        let yearOfEra = marchYear - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    private static func daysIn(month: Int64, year: Int64) -> Int64 {
        switch month {
        case 2: (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }
}

extension Int64 {
    fileprivate func quotientAndRemainderFlooring(_ divisor: Int64) -> (quotient: Int64, remainder: Int64) {
        let remainder = ((self % divisor) + divisor) % divisor
        return ((self - remainder) / divisor, remainder)
    }
}
