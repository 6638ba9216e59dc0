import FanficCore
import Foundation
import Testing

@testable import DashboardHistory

@Suite("History store: events into task runs")
struct HistoryStoreTests {
    static let start = Date(timeIntervalSince1970: 1_800_000_000)

    static func event(
        _ kind: FanficEvent.Kind, _ url: String? = "http://test1.com?sid=1", at seconds: Double,
        site: String? = "test1.com", detail: String? = nil, reason: String? = nil, calibreID: Int? = nil
    ) -> FanficEvent {
        FanficEvent(
            kind, source: kind.rawValue.hasPrefix("task.routed") ? "coordinator@h" : "worker:w1",
            at: start.addingTimeInterval(seconds), site: site, url: url, calibreID: calibreID, reason: reason,
            detail: detail)
    }

    @Test("a task's events make one run whose outcome is its last; the next submission is a new run")
    func runs() throws {
        let store = try SQLiteHistoryStore.inMemory()
        try store.record([
            Self.event(.taskRouted, at: 0),
            Self.event(.taskStarted, at: 1),
            Self.event(.taskRetrying, at: 2, detail: "1m", reason: "timed out"),
            Self.event(.taskRouted, at: 62),
            Self.event(.taskStarted, at: 63),
            Self.event(.taskSucceeded, at: 70, detail: "new", calibreID: 7),
            Self.event(.siteReleased, nil, at: 71),
            Self.event(.taskRouted, at: 100),
        ])
        let runs = try store.history(HistoryQuery())
        #expect(runs.count == 2)
        let (later, first) = (runs[0], runs[1])
        #expect(first.outcome == .succeeded && first.calibreID == 7)
        #expect(
            first.timeline.map(\.kind) == [
                .taskRouted, .taskStarted, .taskRetrying, .taskRouted, .taskStarted, .taskSucceeded,
            ])
        #expect(first.timeline[2].reason == "timed out")
        #expect(first.firstAt == Self.start && first.lastAt == Self.start.addingTimeInterval(70))
        #expect(later.outcome == .queued && later.timeline.count == 1)
        #expect(try store.eventCount() == 8, "the site event is kept too, in no run")
    }

    @Test("events that arrive out of order are ordered by their time; a straggler joins the run that ended")
    func outOfOrder() throws {
        let store = try SQLiteHistoryStore.inMemory()
        try store.record([
            Self.event(.taskStarted, at: 1),
            Self.event(.taskRouted, at: 0),
            Self.event(.taskSucceeded, at: 9, detail: "updated"),
            Self.event(.taskRetrying, at: 5, detail: "1m"),
            Self.event(.taskRouted, at: 20),
        ])
        let runs = try store.history(HistoryQuery())
        #expect(runs.count == 2)
        #expect(runs[1].outcome == .succeeded)
        #expect(runs[1].timeline.map(\.kind) == [.taskRouted, .taskStarted, .taskRetrying, .taskSucceeded])
        #expect(runs[1].firstAt == Self.start)
        #expect(runs[0].outcome == .queued && runs[0].firstAt == Self.start.addingTimeInterval(20))
    }

    @Test("a duplicate joins the open run without changing its outcome; alone it is a run of its own")
    func duplicates() throws {
        let store = try SQLiteHistoryStore.inMemory()
        try store.record([
            Self.event(.taskRouted, at: 0), Self.event(.taskStarted, at: 1), Self.event(.taskDuplicate, at: 2),
            Self.event(.taskDuplicate, "http://test2.com?sid=5", at: 3, site: "test2.com"),
        ])
        let one = try #require(try store.history(HistoryQuery(url: "test1")).first)
        #expect(one.outcome == .running && one.timeline.count == 3)
        let alone = try #require(try store.history(HistoryQuery(url: "test2")).first)
        #expect(alone.outcome == .duplicate)
    }

    @Test("search by part of the URL (LIKE's characters literal), site, outcome, time; newest first; limit")
    func search() throws {
        let store = try SQLiteHistoryStore.inMemory()
        var events: [FanficEvent] = []
        for index in 0..<30 {
            let site = index % 2 == 0 ? "test1.com" : "test2.com"
            let url = "http://\(site)?sid=\(index)"
            events.append(Self.event(.taskRouted, url, at: Double(index), site: site))
            if index % 3 == 0 { events.append(Self.event(.taskFailed, url, at: Double(index) + 0.5, site: site)) }
        }
        events.append(Self.event(.taskRouted, "http://test3.com/100%_done", at: 40, site: "test3.com"))
        try store.record(events)
        #expect(try store.history(HistoryQuery(limit: 1000)).count == 31)
        #expect(try store.history(HistoryQuery(limit: 5)).map(\.url).first == "http://test3.com/100%_done")
        #expect(try store.history(HistoryQuery(url: "%_")).map(\.url) == ["http://test3.com/100%_done"])
        #expect(try store.history(HistoryQuery(url: "100%_DONE")).map(\.url) == ["http://test3.com/100%_done"])
        #expect(try store.history(HistoryQuery(url: "=7", limit: 100)).count == 1, "two characters: no index")
        #expect(try store.history(HistoryQuery(url: "TEST3.COM/100")).map(\.url) == ["http://test3.com/100%_done"])
        #expect(
            try store.history(HistoryQuery(url: "SID=2", limit: 100)).map(\.url).sorted() == [
                "http://test1.com?sid=2", "http://test1.com?sid=20", "http://test1.com?sid=22",
                "http://test1.com?sid=24",
                "http://test1.com?sid=26", "http://test1.com?sid=28", "http://test2.com?sid=21",
                "http://test2.com?sid=23",
                "http://test2.com?sid=25", "http://test2.com?sid=27", "http://test2.com?sid=29",
            ])
        let failed = try store.history(HistoryQuery(site: "test2.com", outcome: .failed, limit: 100))
        #expect(
            failed.map(\.url) == [
                "http://test2.com?sid=27", "http://test2.com?sid=21", "http://test2.com?sid=15",
                "http://test2.com?sid=9", "http://test2.com?sid=3",
            ])
        let recent = try store.history(HistoryQuery(since: Self.start.addingTimeInterval(25), limit: 100))
        #expect(recent.count == 6)
        #expect(HistoryQuery(limit: 0).limit == 1 && HistoryQuery(limit: 1_000_000).limit == HistoryQuery.maxLimit)
    }

    @Test("titles: the search finds a part of the URL or the title; a later title replaces it; pruning forgets it")
    func titles() throws {
        let store = try SQLiteHistoryStore.inMemory()
        var succeeded = Self.event(.taskSucceeded, "http://test1.com?sid=1", at: 2)
        succeeded.title = "The Dragon's Tale"
        var other = Self.event(.taskSucceeded, "http://test2.com?sid=2", at: 3, site: "test2.com")
        other.title = "Tea 100%_percent"
        try store.record([Self.event(.taskRouted, "http://test1.com?sid=1", at: 1), succeeded, other])
        #expect(try store.history(HistoryQuery(text: "dragon")).map(\.url) == ["http://test1.com?sid=1"])
        #expect(try store.history(HistoryQuery(text: "DRAGON'S")).first?.title == "The Dragon's Tale")
        #expect(try store.history(HistoryQuery(text: "sid=2")).map(\.url) == ["http://test2.com?sid=2"])
        #expect(try store.history(HistoryQuery(text: "%_p")).map(\.url) == ["http://test2.com?sid=2"])
        #expect(try store.history(HistoryQuery(text: "nothing like it")).isEmpty)
        #expect(try store.history(HistoryQuery(url: "dragon")).isEmpty, "url= is the URL only")
        // The next run of the story, with the title the site has now.
        var renamed = Self.event(.taskSucceeded, "http://test1.com?sid=1", at: 20)
        renamed.title = "The Wyvern's Tale"
        try store.record([Self.event(.taskRouted, "http://test1.com?sid=1", at: 10), renamed])
        #expect(try store.history(HistoryQuery(text: "wyvern")).count == 1)
        #expect(try store.history(HistoryQuery(text: "dragon")).count == 1, "the first run keeps its title")
        try store.prune(before: Self.start.addingTimeInterval(5))
        #expect(try store.history(HistoryQuery(text: "dragon")).isEmpty)
        #expect(try store.history(HistoryQuery(text: "wyvern")).count == 1)
    }

    @Test("pruning forgets runs and events older than the cutoff, open runs too, and keeps the rest")
    func prune() throws {
        let store = try SQLiteHistoryStore.inMemory()
        try store.record([
            Self.event(.taskRouted, "http://test1.com?sid=1", at: 0),
            Self.event(.taskSucceeded, "http://test1.com?sid=1", at: 10),
            Self.event(.taskRouted, "http://test1.com?sid=2", at: 20),
            Self.event(.workerJoined, nil, at: 5),
            Self.event(.taskRouted, "http://test1.com?sid=3", at: 100),
        ])
        let pruned = try store.prune(before: Self.start.addingTimeInterval(50))
        #expect(pruned == 4)
        #expect(try store.history(HistoryQuery()).map(\.url) == ["http://test1.com?sid=3"])
        #expect(try store.eventCount() == 1)
        // The URL search index forgot them too, and still finds what is left.
        #expect(try store.history(HistoryQuery(url: "test1.com")).map(\.url) == ["http://test1.com?sid=3"])
        try store.record([Self.event(.taskRouted, "http://test1.com?sid=1", at: 200)])
        #expect(try store.history(HistoryQuery(url: "sid=1")).map(\.url) == ["http://test1.com?sid=1"])
    }

    @Test("a file store keeps its history across reopening")
    func reopen() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("history-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("sub/dashboard.sqlite").path
        try SQLiteHistoryStore(path: path).record([Self.event(.taskRouted, at: 0)])
        let reopened = try SQLiteHistoryStore(path: path)
        #expect(try reopened.history(HistoryQuery()).count == 1)
    }
}
