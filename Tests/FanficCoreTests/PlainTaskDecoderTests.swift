import Foundation
import TestSupport
import Testing

@testable import FanficCore

@Suite("Tasks read without JSONDecoder")
struct PlainTaskDecoderTests {
    static let tasks = [
        TaskMessage(url: "https://test1.com?sid=1", site: "test1.com", submittedBy: "cli:reader"),
        TaskMessage(
            url: "https://www.fanfiction.net/s/123/1/", site: "www.fanfiction.net", calibreID: 42, attempt: 2,
            retryTier: 1, hailMary: true, behavior: .force, submittedBy: "email:reader@example.com",
            submittedAt: Date(timeIntervalSince1970: 1_700_000_000.123_456)),
        TaskMessage(
            url: "https://archiveofourown.org/works/1", site: "archiveofourown.org", calibreID: 0, attempt: 0,
            retryTier: 0, submittedBy: TaskMessage.sweepSubmitter,
            submittedAt: Date(timeIntervalSince1970: -1_000_000)),
    ]

    @Test("a task as this build writes it takes the plain path, and comes out the same")
    func canonical() {
        for task in Self.tasks {
            #expect(PlainTaskDecoder.decode(WireCodec.encode(task)) == task)
        }
    }

    @Test("on random variations of a task, the plain path reads what JSONDecoder reads, or leaves it")
    func agreesWithJSONDecoder() throws {
        var random = SplitMix64(seed: 2026_12_06)
        var plain = 0
        var onlyJSONDecoder = 0
        for round in 0..<20_000 {
            let data = Self.variation(of: Self.tasks[round % Self.tasks.count], using: &random)
            let text = String(decoding: data, as: UTF8.self)
            let read = PlainTaskDecoder.decode(data)
            let reference = try? WireCodec.decodeTaskWithJSONDecoder(data)
            if let read {
                plain += 1
                #expect(read == reference, "\(text)")
            } else if reference != nil {
                onlyJSONDecoder += 1
            }
            #expect(WireCodec.plainPathAgrees(data), "\(text)")
        }
        // Both kinds occur, or the comparison above proves little.
        #expect(plain > 1000, "\(plain) read by the plain path")
        #expect(onlyJSONDecoder > 1000, "\(onlyJSONDecoder) left to JSONDecoder and read by it")
    }

    /// The task's fields as JSON text, each value and the space around the tokens varied at
    /// random: odd numbers, escapes, non-ASCII, nulls, nesting, repeated and unknown keys.
    static func variation(of task: TaskMessage, using random: inout SplitMix64) -> Data {
        var fields: [(String, String)] = [
            ("version", "\(task.version)"), ("id", "\"\(task.id)\""), ("url", "\"\(task.url)\""),
            ("site", "\"\(task.site)\""), ("attempt", "\(task.attempt)"), ("hail_mary", "\(task.hailMary)"),
            ("behavior", "\"\(task.behavior.rawValue)\""), ("submitted_by", "\"\(task.submittedBy)\""),
            ("submitted_at", "\"\(Timestamp.format(task.submittedAt))\""),
        ]
        if let calibreID = task.calibreID { fields.append(("calibre_id", "\(calibreID)")) }
        if let retryTier = task.retryTier { fields.append(("retry_tier", "\(retryTier)")) }
        let odd = [
            "0", "-0", "01", "1", "-5", "1.0", "1e2", "2E0", "123456789012345678", "999999999999999999",
            "1234567890123456789",
            "99999999999999999999999", "-999999999999999999", "true",
            "false", "null", "\"\"", "\"x\"", "\"a\\/b\"", "\"\\u0041\"", "\"é\"", "\"\u{7F}\"", "\"normal\"",
            "\"force\"", "\"2026-12-06T01:02:03.004Z\"", "\"2026-12-06T01:02:03Z\"", "\"not a date\"", "{}", "[]",
            "[1]", "{\"a\":1}", "\"https://test2.com?sid=2\"", "1 1", "tru", "nul", "-", "\"unterminated",
        ]
        for _ in 0..<Int.random(in: 0...2, using: &random) {
            let index = Int.random(in: 0..<fields.count, using: &random)
            switch Int.random(in: 0..<6, using: &random) {
            case 0: fields.remove(at: index)
            case 1: fields.append(fields[index])
            case 2: fields.append((["extra", "Version", "url ", "", "calibre_id"].randomElement(using: &random)!, "1"))
            default: fields[index].1 = odd.randomElement(using: &random)!
            }
        }
        if Bool.random(using: &random) { fields.shuffle(using: &random) }
        let spaces = ["", "", "", " ", "\n", "\t", " \r\n "]
        func space() -> String { spaces.randomElement(using: &random)! }
        var text = space() + "{"
        for (index, (key, value)) in fields.enumerated() {
            if index > 0 { text += space() + "," }
            text += space() + "\"\(key)\"" + space() + ":" + space() + value
        }
        text += space() + "}" + space()
        if Int.random(in: 0..<50, using: &random) == 0 { text += ["x", "{}", ","].randomElement(using: &random)! }
        return Data(text.utf8)
    }
}
