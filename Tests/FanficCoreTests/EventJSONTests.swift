import Foundation
import TestSupport
import Testing

@testable import FanficCore

@Suite("Events written by hand, byte for byte as JSONEncoder writes them")
struct EventJSONTests {
    /// Nothing to escape: the first eight.
    static let plainCount = 8
    static let texts = [
        "", "http://test1.com?sid=1", "https://www.fanfiction.net/s/1234/1/", "fanfic.worker.w-1",
        "coordinator@vm:21327", "a/b", "with space", "~!@#$%^&*()_+{}|:<>?`-=[];',./",
        "quote \" inside", "back\\slash", "tab\there", "line\nbreak", "bell\u{7}", "del\u{7F}", "café", "日本語",
        "emoji 📚", "\u{2028}", "nul\u{0}byte",
    ]

    static func randomEvent(_ random: inout SplitMix64) -> FanficEvent {
        // One event in four may have text to escape anywhere.
        let choices = Int.random(in: 0..<4, using: &random) == 0 ? texts.count : plainCount
        func text() -> String? {
            Int.random(in: 0..<3, using: &random) == 0 ? nil : texts[Int.random(in: 0..<choices, using: &random)]
        }
        func number() -> Int? {
            [nil, 0, 1, 42, -7, Int.max, Int.min][Int.random(in: 0..<7, using: &random)]
        }
        let kinds = FanficEvent.Kind.allCases
        var event = FanficEvent(
            kinds[Int.random(in: 0..<kinds.count, using: &random)],
            source: texts[Int.random(in: 0..<choices, using: &random)],
            at: Date(
                timeIntervalSince1970: Double(Int.random(in: 0..<4_000_000_000, using: &random)) + Double(
                    Int.random(in: 0..<1000, using: &random)) / 1000),
            worker: text(), site: text(), url: text(), taskID: text(), calibreID: number(), destination: text(),
            reason: text(), detail: text(), attempt: number(), durationMilliseconds: number())
        event.storyURL = text()
        event.title = text()
        if Int.random(in: 0..<8, using: &random) == 0 { event.stagesMilliseconds = ["fanficfare": 1500, "lookup": 3] }
        return event
    }

    @Test("thousands of events: the same bytes as JSONEncoder, or left to it when a string needs escaping")
    func sameBytes() {
        var random = SplitMix64(seed: 2026)
        var written = 0
        for _ in 0..<5_000 {
            let event = Self.randomEvent(&random)
            let expected = WireCodec.encodeJSON(event)
            guard let fast = EventJSON.encode(event) else {
                #expect(WireCodec.encode(event) == expected)
                continue
            }
            written += 1
            #expect(
                fast == expected,
                "\(String(decoding: fast, as: UTF8.self)) != \(String(decoding: expected, as: UTF8.self))")
        }
        #expect(written > 500, "the hand-written path is taken for plain events: \(written)")
    }

    @Test("the coordinator's task.routed is written by hand and decodes back to itself")
    func routed() throws {
        let event = FanficEvent(
            .taskRouted, source: "coordinator@vm:1", site: "test1.com", url: "http://test1.com?sid=1",
            taskID: "7A1C", calibreID: 12, destination: "fanfic.worker.w1")
        let bytes = try #require(EventJSON.encode(event))
        #expect(bytes == WireCodec.encodeJSON(event))
        #expect(try WireCodec.decodeEvent(bytes) == event)
        var quoted = event
        quoted.url = "http://test1.com?sid=\"1\""
        #expect(EventJSON.encode(quoted) == nil, "a quote needs escaping: JSONEncoder writes it")
        #expect(try WireCodec.decodeEvent(WireCodec.encode(quoted)) == quoted)
    }
}
