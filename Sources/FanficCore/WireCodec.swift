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
        let task: TaskMessage = try decodeVersioned(data)
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

    /// JSON object with a supported `version`, then the typed fields.
    static func decodeVersioned<Message: VersionedMessage>(_ data: Data) throws(MessageDecodingError) -> Message {
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
        let message: Message
        do {
            message = try decoder.decode(Message.self, from: data)
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
/// fraction (…123 becomes …122), and a task must survive a round trip unchanged.
enum Timestamp {
    static func milliseconds(_ date: Date) -> Int64 {
        Int64((date.timeIntervalSince1970 * 1000).rounded())
    }

    static func date(milliseconds: Int64) -> Date {
        Date(timeIntervalSince1970: Double(milliseconds) / 1000)
    }

    static func format(_ date: Date) -> String {
        let millis = milliseconds(date)
        let seconds = Date(timeIntervalSince1970: Double(millis.quotientAndRemainderFlooring(1000).quotient))
        let whole = seconds.formatted(Date.ISO8601FormatStyle())  // 2026-01-02T03:04:05Z
        let fraction = millis.quotientAndRemainderFlooring(1000).remainder
        return whole.dropLast() + "." + String(format: "%03d", fraction) + "Z"
    }

    static func parse(_ text: String) -> Date? {
        let withFraction = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        guard let date = (try? Date(text, strategy: withFraction)) ?? (try? Date(text, strategy: .iso8601)) else {
            return nil
        }
        return Self.date(milliseconds: milliseconds(date))
    }
}

extension Int64 {
    fileprivate func quotientAndRemainderFlooring(_ divisor: Int64) -> (quotient: Int64, remainder: Int64) {
        let remainder = ((self % divisor) + divisor) % divisor
        return ((self - remainder) / divisor, remainder)
    }
}
