import FanficCore
import Foundation
import TestSupport
import Testing

/// `fanfic sweep --dry-run` on a real library made by the real FanFicFare and calibredb: books
/// complete, in progress, updated recently, tagged to skip, and not a story.
@Suite("fanfic sweep --dry-run: the books a sweep would check, from a real library")
struct SweepCommandTests {
    @Test("exactly the books that can still change and were not updated lately; the budget spreads them")
    func realFanFicFare_dryRun() throws {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("sweep-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: scratch) }
        let library = try TestLibrary(in: scratch)
        let stories = scratch.appendingPathComponent("stories")
        try FileManager.default.createDirectory(at: stories, withIntermediateDirectories: true)
        // sid odd: in progress; even: complete (FanFicFare's test site).
        let urls = [
            "http://test1.com?sid=1", "http://test1.com?sid=2", "http://test1.com?sid=3",
            "http://test2.com?sid=5", "http://test2.com?sid=7",
        ]
        for url in urls {
            let made = try ChildProcess.run(
                ["fanficfare", "--non-interactive", "-f", "epub", "--", url], in: stories.path)
            #expect(made.status == 0, "\(made.stderr)")
        }
        let epubs = try FileManager.default.contentsOfDirectory(atPath: stories.path).filter { $0.hasSuffix(".epub") }
        #expect(epubs.count == urls.count)
        for epub in epubs.sorted() { try library.calibredb(["add", "--", stories.appendingPathComponent(epub).path]) }
        let ids = Dictionary(
            uniqueKeysWithValues: try library.books().compactMap { book in
                book.identifiers["url"].map { ($0, book.id) }
            })
        // sid=5: tagged by the reader to be left alone; sid=7: updated an hour ago; the others two
        // days ago (calibredb cannot set last_modified: the test writes metadata.db, as calibre would).
        let skipped = try #require(ids["http://test2.com?sid=5"])
        try library.calibredb(["set_metadata", "--field", "tags:NoSweep", "\(skipped)"])
        let database = library.folder.appendingPathComponent("metadata.db").path
        // As calibre stores times: "2026-12-02 20:38:30+00:00".
        func calibreTime(_ date: Date) -> String {
            Timestamp.format(date).prefix(19).replacingOccurrences(of: "T", with: " ") + "+00:00"
        }
        let twoDaysAgo = calibreTime(Date().addingTimeInterval(-48 * 3600))
        let hourAgo = calibreTime(Date().addingTimeInterval(-3600))
        let dated = try ChildProcess.run([
            "python3", "-c",
            """
            import sqlite3, sys
            db = sqlite3.connect(sys.argv[1])
            # calibre's triggers call its own functions (unchanged titles: never with effect).
            db.create_function("title_sort", 1, lambda title: title)
            db.create_function("uuid4", 0, lambda: "")
            db.execute("UPDATE books SET last_modified = ?", (sys.argv[2],))
            db.execute("UPDATE books SET last_modified = ? WHERE id = ?", (sys.argv[3], int(sys.argv[4])))
            db.commit()
            """, database, twoDaysAgo, hourAgo, "\(ids["http://test2.com?sid=7"]!)",
        ])
        #expect(dated.status == 0, "\(dated.stderr)")
        let config = scratch.appendingPathComponent("config.toml").path
        try """
        [calibre]
        library = "\(library.folder.path)"
        [sweep]
        interval = 3600
        search = 'not tags:"=Completed" and not tags:"=NoSweep"'
        per_site_budget = 1
        skip_recent_hours = 12
        """.write(toFile: config, atomically: true, encoding: .utf8)

        let answer = try ChildProcess.run([
            BuiltProducts.path("fanfic"), "sweep", "--dry-run", "--json", "--config", config,
        ])
        #expect(answer.status == 0, "\(answer.stderr)")
        let plan = try #require(try JSONSerialization.jsonObject(with: Data(answer.stdout.utf8)) as? [String: Any])
        let checks = (plan["checks"] as? [[String: Any]]) ?? []
        let sites = (plan["sites"] as? [[String: Any]]) ?? []
        let skippedBooks = (plan["skipped"] as? [[String: Any]]) ?? []
        // In progress and not recent: sid=1 and sid=3 (test1.com); the budget (1 an hour, an hour's
        // sweep) takes one, the other is deferred. sid=7 was updated an hour ago.
        #expect(checks.count == 1, "\(answer.stdout)")
        #expect(["http://test1.com?sid=1", "http://test1.com?sid=3"].contains(checks.first?["url"] as? String ?? ""))
        #expect(sites.first?["site"] as? String == "test1.com" && sites.first?["deferred"] as? Int == 1)
        #expect(skippedBooks.map { $0["url"] as? String } == ["http://test2.com?sid=7"])
        #expect((skippedBooks.first?["reason"] as? String)?.hasPrefix("updated 1 h ago") == true)

        let text = try ChildProcess.run([BuiltProducts.path("fanfic"), "sweep", "--dry-run", "--config", config])
        #expect(text.stdout.contains("test1.com: 1 of 2, one every 60 min, 1 deferred"), "\(text.stdout)")
        let refused = try ChildProcess.run([BuiltProducts.path("fanfic"), "sweep", "--config", config])
        #expect(refused.status != 0 && refused.stderr.contains("--dry-run"))
    }
}
