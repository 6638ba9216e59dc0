import CalibreLibrary
import FanficCore
import Foundation
import Testing

@testable import Sweep

@Suite("Sweep plans: the right books, spread over the interval, within each site's budget")
struct SweepPlannerTests {
    static let now = Date(timeIntervalSince1970: 1_800_000_000)

    static func settings(interval: Int = 86_400, budget: Int = 20, skipHours: Int = 12) -> FanficConfiguration.Sweep {
        var settings = FanficConfiguration.Sweep()
        settings.interval = interval
        settings.perSiteBudget = budget
        settings.skipRecentHours = skipHours
        return settings
    }

    static func book(_ id: Int, _ url: String?, hoursAgo: Double = 48) -> LibraryBook {
        LibraryBook(id: id, url: url, lastModified: now.addingTimeInterval(-hoursAgo * 3600))
    }

    @Test("not a story, an unknown site, a second book of a story, a recent update: skipped with the reason")
    func choice() {
        let plan = SweepPlanner.plan(
            books: [
                Self.book(1, "http://test1.com?sid=1"), Self.book(2, nil), Self.book(3, "https://example.invalid/s/1"),
                Self.book(4, "http://test1.com?sid=1&chapter=3"), Self.book(5, "http://test2.com?sid=5", hoursAgo: 2),
                Self.book(6, "http://test2.com?sid=6", hoursAgo: 13),
            ], settings: Self.settings(), now: Self.now, start: Self.now)
        #expect(plan.checks.map(\.book).sorted() == [1, 6])
        #expect(plan.skipped.map(\.book) == [2, 3, 4, 5])
        #expect(plan.skipped[2].reason == "the same story as book 1")
        #expect(plan.skipped[3].reason.hasPrefix("updated 2 h ago"))
        #expect(plan.checks.allSatisfy { $0.url.hasPrefix("http://test") })
    }

    @Test("1,000 books over 4 sites in a short interval: evenly spread, never past the budget in any hour")
    func budget() {
        // 1,000 books, 250 a site; an interval of 2 hours at 60 checks a site an hour: one a
        // minute and 1 % (the margin for late deliveries), 118 each.
        let books = (0..<1000).map { index in
            Self.book(index, "http://test\(index % 4 + 1).com?sid=\(index)", hoursAgo: Double(24 + index))
        }
        let plan = SweepPlanner.plan(
            books: books, settings: Self.settings(interval: 7200, budget: 60), now: Self.now, start: Self.now)
        #expect(plan.checks.count == 472)
        #expect(plan.sites.map(\.planned) == [118, 118, 118, 118])
        #expect(plan.sites.map(\.deferred) == [132, 132, 132, 132])
        for site in plan.sites.map(\.site) {
            let times = plan.checks.filter { $0.site == site }.map { $0.dueAt.timeIntervalSince(Self.now) }
            #expect(times.allSatisfy { (0..<7200).contains($0) })
            // Any hour holds at most the budget, even when a check arrives a second late and a later
            // one on time: checks due within an hour and a second of each other are never more.
            for start in times {
                #expect(times.filter { $0 >= start && $0 < start + 3601 }.count <= 60, "\(site) at \(start)")
            }
            let gaps = zip(times.dropFirst(), times).map { $0 - $1 }
            #expect(gaps.allSatisfy { abs($0 - 7200.0 / 118) < 0.001 }, "evenly: a little over one a minute")
            // The least recently updated go first: every planned book is older than every deferred one.
            let planned = plan.checks.filter { $0.site == site }.map(\.lastModified)
            let deferred = books.filter {
                $0.url!.hasPrefix("http://\(site)") && !plan.checks.map(\.book).contains($0.id)
            }.map(\.lastModified)
            #expect(planned.max()! < deferred.min()!)
        }
        // Sites are staggered: the first moment holds one check, not four.
        #expect(plan.checks.filter { $0.dueAt == Self.now }.count == 1)
    }

    @Test("few books: spread over the whole interval, not bunched at its start")
    func spread() {
        let plan = SweepPlanner.plan(
            books: (1...4).map { Self.book($0, "http://test1.com?sid=\($0)") }, settings: Self.settings(),
            now: Self.now, start: Self.now)
        #expect(plan.checks.map { $0.dueAt.timeIntervalSince(Self.now) } == [0, 21_600, 43_200, 64_800])
        #expect(plan.endsAt == Self.now.addingTimeInterval(86_400))
    }

    @Test("calibredb list's JSON: ids, url identifiers, last_modified; a book without a date is an error")
    func listJSON() throws {
        let json = """
            [{"id": 2, "identifiers": {"url": "http://test1.com?sid=2", "isbn": "x"},
              "last_modified": "2026-12-04T20:38:30+00:00", "title": "Two"},
             {"id": 1, "identifiers": {}, "last_modified": "2026-01-01T00:00:00+00:00"}]
            """
        let books = try LibraryCatalog.books(fromListJSON: Data(json.utf8))
        #expect(books.map(\.id) == [1, 2])
        #expect(books[0].url == nil && books[1].url == "http://test1.com?sid=2" && books[1].title == "Two")
        #expect(books[1].lastModified == Date(timeIntervalSince1970: 1_796_416_710))
        #expect(throws: CalibreError.self) {
            try LibraryCatalog.books(fromListJSON: Data(#"[{"id": 3, "identifiers": {}}]"#.utf8))
        }
    }
}
