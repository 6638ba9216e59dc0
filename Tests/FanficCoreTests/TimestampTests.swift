import Foundation
import Testing

@testable import FanficCore

@Suite("Timestamps on the wire")
struct TimestampTests {
    /// What the hand formatting replaced: Foundation's format style for the whole seconds.
    static func foundationFormat(milliseconds: Int64) -> String {
        let remainder = ((milliseconds % 1000) + 1000) % 1000
        let seconds = Date(timeIntervalSince1970: Double((milliseconds - remainder) / 1000))
        return seconds.formatted(Date.ISO8601FormatStyle()).dropLast() + "." + String(format: "%03d", remainder) + "Z"
    }

    /// Milliseconds spread over years 1600 to 9999 (a prime stride, so every field varies), and the
    /// edges: the epoch, leap days, the turn of centuries, the last millisecond of a year.
    static let samples: [Int64] = {
        let first: Int64 = -11_676_096_000_000
        let last: Int64 = 253_402_300_799_999
        let step = Int((last - first) / 20_000 + 7_919)
        var samples = Array(stride(from: first, through: last, by: step))
        for text in [
            "1970-01-01T00:00:00.000Z", "2000-02-29T23:59:59.999Z", "1900-03-01T00:00:00.000Z",
            "2024-02-29T12:00:00.001Z", "2100-02-28T23:59:59.999Z", "1969-12-31T23:59:59.999Z",
            "1600-01-01T00:00:00.000Z", "9999-12-31T23:59:59.999Z", "2026-12-31T23:59:59.999Z",
        ] {
            let date = try! Date(text, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true))
            samples.append(Timestamp.milliseconds(date))
        }
        return samples
    }()

    @Test("formatting by hand gives Foundation's text for every sampled millisecond of years 1600 to 9999")
    func formatAgreesWithFoundation() {
        for millis in Self.samples {
            let date = Timestamp.date(milliseconds: millis)
            #expect(Timestamp.format(date) == Self.foundationFormat(milliseconds: millis), "\(millis)")
        }
    }

    @Test("the canonical form is read by hand to the same instant Foundation reads, and round-trips")
    func parseAgreesWithFoundation() throws {
        let style = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        for millis in Self.samples {
            let text = Self.foundationFormat(milliseconds: millis)
            let byHand = try #require(Timestamp.canonicalMilliseconds(text), "\(text)")
            #expect(byHand == Timestamp.milliseconds(try Date(text, strategy: style)), "\(text)")
            #expect(byHand == millis, "\(text)")
            #expect(Timestamp.parse(text) == Timestamp.date(milliseconds: millis))
        }
    }

    @Test(
        "what is not exactly the canonical form or not a real time is left to Foundation",
        arguments: [
            "2026-02-30T00:00:00.000Z", "2025-02-29T00:00:00.000Z", "2026-13-01T00:00:00.000Z",
            "2026-00-01T00:00:00.000Z", "2026-01-01T24:00:00.000Z", "2026-01-01T00:60:00.000Z",
            "2026-01-01T00:00:60.000Z", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00.000+00:00",
            "2026-01-01 00:00:00.000Z", "2026-01-01T00:00:00.00aZ", "+026-01-01T00:00:00.000Z", "",
            "0000-01-01T00:00:00.000Z", "1599-12-31T23:59:59.999Z",
        ])
    func notCanonical(text: String) {
        #expect(Timestamp.canonicalMilliseconds(text) == nil)
    }

    @Test("other ISO 8601 spellings are still read, through Foundation")
    func otherSpellings() throws {
        #expect(Timestamp.parse("2026-01-02T03:04:05Z") == Date(timeIntervalSince1970: 1_767_323_045))
        #expect(Timestamp.parse("2026-01-02T03:04:05.678+01:00") == Timestamp.date(milliseconds: 1_767_319_445_678))
        // Foundation is lenient here (March 2nd): kept as it was, the hand path does not guess.
        let style = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        #expect(Timestamp.parse("2026-02-30T00:00:00.000Z") == (try Date("2026-02-30T00:00:00.000Z", strategy: style)))
        // Before 1600 (Julian before 1582 in Foundation's calendar) and after: as Foundation formats.
        let early = Timestamp.date(milliseconds: -62_135_596_800_000)
        #expect(Timestamp.format(early) == Self.foundationFormat(milliseconds: -62_135_596_800_000))
        #expect(Timestamp.parse(Timestamp.format(early)) == early)
    }
}
