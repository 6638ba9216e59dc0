import FanficCore
import Foundation
import Testing

@Suite("Task message codec")
struct WireCodecTests {
    let task = TaskMessage(
        url: "https://www.fanfiction.net/s/123/1/", site: "www.fanfiction.net", calibreID: 42, attempt: 2,
        retryTier: 1, hailMary: false, behavior: .force, submittedBy: "email:reader@example.com",
        submittedAt: Date(timeIntervalSince1970: 1_700_000_000.123_456))

    @Test("round trip keeps every field")
    func roundTrip() throws {
        let decoded = try WireCodec.decode(WireCodec.encode(task))
        #expect(decoded == task)
        #expect(decoded.identity == task.identity)
    }

    @Test("the JSON uses DESIGN.md's field names and a schema version")
    func fieldNames() throws {
        let object = try #require(try JSONSerialization.jsonObject(with: WireCodec.encode(task)) as? [String: Any])
        #expect(
            Set(object.keys) == [
                "version", "id", "url", "site", "calibre_id", "attempt", "retry_tier", "hail_mary", "behavior",
                "submitted_by", "submitted_at",
            ])
        #expect(object["version"] as? Int == 1)
        #expect(object["submitted_at"] as? String == "2023-11-14T22:13:20.123Z")
    }

    @Test("a minimal hand-written message decodes, optional fields absent")
    func minimalMessage() throws {
        let json = """
            {"version": 1, "id": "x", "url": "http://test1.com?sid=1", "site": "test1.com", "attempt": 0,
             "hail_mary": false, "behavior": "normal", "submitted_by": "script",
             "submitted_at": "2026-01-02T03:04:05Z"}
            """
        let decoded = try WireCodec.decode(Data(json.utf8))
        #expect(decoded.calibreID == nil)
        #expect(decoded.retryTier == nil)
        #expect(decoded.submittedAt == Date(timeIntervalSince1970: 1_767_323_045))
    }

    @Test("an unknown version is refused and says which versions are read")
    func unknownVersion() throws {
        var object = try #require(try JSONSerialization.jsonObject(with: WireCodec.encode(task)) as? [String: Any])
        object["version"] = 2
        let error = #expect(throws: MessageDecodingError.self) {
            try WireCodec.decode(try JSONSerialization.data(withJSONObject: object))
        }
        #expect(error?.code == .unsupportedVersion)
        #expect(error?.message.contains("version 2") == true)
    }

    @Test(
        "garbage is refused with a reason",
        arguments: [
            ("not json at all", MessageDecodingError.Code.notJSON),
            ("[1, 2]", .notJSON),
            ("{\"url\": \"x\"}", .missingField),
            ("{\"version\": \"1\"}", .missingField),
            ("{\"version\": 1, \"url\": \"x\"}", .invalidField),
            (
                "{\"version\": 1, \"id\": \"x\", \"url\": \"u\", \"site\": \"s\", \"attempt\": \"two\", \"hail_mary\": false, \"behavior\": \"normal\", \"submitted_by\": \"s\", \"submitted_at\": \"2026-01-02T03:04:05Z\"}",
                .invalidField
            ),
            (
                "{\"version\": 1, \"id\": \"x\", \"url\": \"u\", \"site\": \"s\", \"attempt\": 0, \"hail_mary\": false, \"behavior\": \"sometimes\", \"submitted_by\": \"s\", \"submitted_at\": \"2026-01-02T03:04:05Z\"}",
                .invalidField
            ),
            (
                "{\"version\": 1, \"id\": \"x\", \"url\": \"\", \"site\": \"s\", \"attempt\": 0, \"hail_mary\": false, \"behavior\": \"normal\", \"submitted_by\": \"s\", \"submitted_at\": \"2026-01-02T03:04:05Z\"}",
                .invalidField
            ),
            (
                "{\"version\": 1, \"id\": \"x\", \"url\": \"u\", \"site\": \"s\", \"attempt\": 0, \"hail_mary\": false, \"behavior\": \"normal\", \"submitted_by\": \"s\", \"submitted_at\": \"yesterday\"}",
                .invalidField
            ),
        ])
    func garbage(input: String, code: MessageDecodingError.Code) {
        let error = #expect(throws: MessageDecodingError.self) { try WireCodec.decode(Data(input.utf8)) }
        #expect(error?.code == code, "\(input) -> \(String(describing: error))")
        #expect(error?.message.isEmpty == false)
    }

    @Test("invalid UTF-8 bytes are refused, not crashed on")
    func binaryGarbage() {
        let error = #expect(throws: MessageDecodingError.self) { try WireCodec.decode(Data([0xFF, 0xFE, 0x00, 0x7B])) }
        #expect(error?.code == .notJSON)
    }

    @Test("identity ignores id, attempt and timestamps")
    func identity() {
        var retried = task
        retried.id = "other"
        retried.attempt = 3
        retried.submittedAt = Date()
        #expect(retried.identity == task.identity)
        var otherBook = task
        otherBook.calibreID = 7
        #expect(otherBook.identity != task.identity)
    }
}

@Suite("Retry ladder")
struct RetryLadderTests {
    @Test("the default ladder: 1, 5, 15 minutes, then the Hail Mary after an hour, then give up")
    func defaultLadder() {
        let ladder = RetryLadder()
        #expect(ladder.tiers.map(\.name) == ["60s", "300s", "900s", "hail-mary-3600s"])
        #expect(ladder.decide(failedAttempts: 1) == .retry(ladder.tiers[0], index: 0))
        #expect(ladder.decide(failedAttempts: 2) == .retry(ladder.tiers[1], index: 1))
        #expect(ladder.decide(failedAttempts: 3) == .retry(ladder.tiers[2], index: 2))
        #expect(ladder.decide(failedAttempts: 4) == .hailMary(ladder.tiers[3]))
        #expect(ladder.decide(failedAttempts: 5) == .giveUp)
    }

    @Test("without the Hail Mary, the ladder ends after its last delay")
    func noHailMary() {
        let ladder = RetryLadder(delays: [1], hailMary: false)
        #expect(ladder.tiers.map(\.delaySeconds) == [1])
        #expect(ladder.decide(failedAttempts: 2) == .giveUp)
    }

    @Test("repeated delays share one queue")
    func repeatedDelays() {
        #expect(RetryLadder(delays: [5, 5, 10], hailMary: false).tiers.map(\.name) == ["5s", "10s"])
    }

    @Test("a failed task's next step carries its attempt, its tier or the Hail Mary mark")
    func steps() {
        let ladder = RetryLadder(delays: [60, 300])
        var task = TaskMessage(url: "http://test1.com?sid=1", site: "test1.com", submittedBy: "test")
        var seen: [String] = []
        while case .wait(let next, let tier) = ladder.step(afterFailureOf: task) {
            seen.append("\(next.attempt):\(tier.name):\(next.retryTier.map(String.init) ?? "-"):\(next.hailMary)")
            task = next
        }
        #expect(seen == ["1:60s:0:false", "2:300s:1:false", "3:hail-mary-3600s:-:true"])
        var last = task
        last.attempt += 1
        #expect(ladder.step(afterFailureOf: task) == .giveUp(last))
    }
}

@Suite("Limits on what is read")
struct WireLimitsTests {
    @Test("a message past max_message_bytes is not parsed; a URL past max_url_length is refused; both say the key")
    func limits() throws {
        let limits = WireLimits(maxMessageBytes: 2048, maxURLLength: 100)
        let task = TaskMessage(url: "http://test1.com?sid=1", site: "test1.com", submittedBy: "t")
        #expect(try WireCodec.decode(WireCodec.encode(task), limits: limits) == task)

        var big = task
        big.submittedBy = String(repeating: "x", count: 4096)
        let tooBig = #expect(throws: MessageDecodingError.self) {
            try WireCodec.decode(WireCodec.encode(big), limits: limits)
        }
        #expect(tooBig?.code == .tooLarge && tooBig?.message.contains("limits.max_message_bytes") == true)
        let control = Data(String(repeating: " ", count: 4096).utf8)
        #expect(throws: MessageDecodingError.self) { try WireCodec.decodeControl(control, limits: limits) }

        var long = task
        long.url = "http://test1.com?sid=1&" + String(repeating: "a", count: 200)
        let tooLong = #expect(throws: MessageDecodingError.self) {
            try WireCodec.decode(WireCodec.encode(long), limits: limits)
        }
        #expect(tooLong?.message.contains("limits.max_url_length") == true)
    }
}

@Suite("Control message codec")
struct ControlMessageTests {
    @Test(
        "each kind round-trips",
        arguments: [
            ControlMessage.hello(worker: "box-1", site: "test1.com", unfinished: 2, replyTo: "amq.gen-abc"),
            .heartbeat(worker: "box-1", site: nil, unfinished: 0),
            .finished(
                worker: "box-1", task: TaskMessage(url: "http://test1.com?sid=1", site: "test1.com", submittedBy: "t")),
            .admit(worker: "box-1"),
        ])
    func roundTrip(message: ControlMessage) throws {
        #expect(try WireCodec.decodeControl(WireCodec.encode(message)) == message)
    }

    @Test("the finished message names the task's identity")
    func finishedIdentity() {
        let task = TaskMessage(url: "http://test1.com?sid=1", site: "test1.com", calibreID: 4, submittedBy: "t")
        #expect(ControlMessage.finished(worker: "w", task: task).finishedIdentity == task.identity)
    }

    @Test(
        "incomplete or foreign messages are refused",
        arguments: [
            "{\"version\": 1, \"type\": \"hello\", \"worker\": \"w\", \"sent_at\": \"2026-01-01T00:00:00Z\"}",
            "{\"version\": 1, \"type\": \"finished\", \"worker\": \"w\", \"sent_at\": \"2026-01-01T00:00:00Z\"}",
            "{\"version\": 1, \"type\": \"dance\", \"worker\": \"w\", \"sent_at\": \"2026-01-01T00:00:00Z\"}",
            "{\"version\": 1, \"type\": \"admit\", \"worker\": \"\", \"sent_at\": \"2026-01-01T00:00:00Z\"}",
            "{\"version\": 9, \"type\": \"admit\", \"worker\": \"w\", \"sent_at\": \"2026-01-01T00:00:00Z\"}",
            "{\"version\": 1, \"type\": \"heartbeat\", \"worker\": \"a/b\", \"sent_at\": \"2026-01-01T00:00:00Z\"}",
            "{\"version\": 1, \"type\": \"heartbeat\", \"worker\": \"\(String(repeating: "w", count: 65))\", \"sent_at\": \"2026-01-01T00:00:00Z\"}",
            "garbage",
        ])
    func refused(json: String) {
        #expect(throws: MessageDecodingError.self) { try WireCodec.decodeControl(Data(json.utf8)) }
    }

    @Test("\"version\" given twice: the check and the decode read the same one (a fuzzer's find)")
    func duplicateVersionKey() throws {
        let control = #"{"version":0,"type":"admit","worker":"w1","sent_at":"2026-12-01T00:00:00Z","version":1}"#
        #expect(throws: MessageDecodingError.self) { try WireCodec.decodeControl(Data(control.utf8)) }
        let task =
            #"{"version":0,"id":"t","url":"http://test1.com?sid=1","site":"test1.com","attempt":0,"hail_mary":false,"#
            + #""behavior":"normal","submitted_at":"2026-12-01T00:00:00Z","submitted_by":"cli","version":1}"#
        #expect(throws: MessageDecodingError.self) { try WireCodec.decode(Data(task.utf8)) }
        // The other way round too: the one-parse path must not take the first and pass it.
        let reversed =
            #"{"version":1,"id":"t","url":"http://test1.com?sid=1","site":"test1.com","attempt":0,"hail_mary":false,"#
            + #""behavior":"normal","submitted_at":"2026-12-01T00:00:00Z","submitted_by":"cli","version":0}"#
        #expect(throws: MessageDecodingError.self) { try WireCodec.decode(Data(reversed.utf8)) }
        // And with the second key spelled with an escape, which JSON reads as "version" as well.
        let escaped =
            #"{"version":1,"id":"t","url":"http://test1.com?sid=1","site":"test1.com","attempt":0,"hail_mary":false,"#
            + #""behavior":"normal","submitted_at":"2026-12-01T00:00:00Z","submitted_by":"cli","vers\u0069on":0}"#
        #expect(throws: MessageDecodingError.self) { try WireCodec.decode(Data(escaped.utf8)) }
    }
}
