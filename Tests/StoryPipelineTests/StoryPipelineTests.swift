import CalibreLibrary
import Download
import FanficCore
import Foundation
import Logging
import StoryPipeline
import Testing
import WorkerRuntime

/// The worker's pipeline on an in-memory library and a scripted FanFicFare: which run it asks
/// for, what it writes, and the outcome it answers.
@Suite("The story pipeline's decisions")
struct StoryPipelineUnitTests {
    let library = InMemoryLibrary()
    let url = "http://test1.com?sid=1"

    func pipeline(_ downloader: ScriptedDownloader, _ adjust: (inout FanficConfiguration.Calibre) -> Void = { _ in })
        -> StoryPipeline
    {
        var calibre = FanficConfiguration().calibre
        adjust(&calibre)
        return StoryPipeline(
            settings: StoryPipeline.Settings(calibre: calibre), library: library, downloader: downloader,
            writeTurn: nil)
    }

    func run(_ pipeline: StoryPipeline, _ url: String, behavior: TaskMessage.Behavior? = nil) async -> StoryOutcome {
        var task = TaskMessage(url: url, site: "test1.com", submittedBy: "test")
        if let behavior { task.behavior = behavior }
        return await pipeline.run(task, workerID: "w1", logger: Logger(label: "test"))
    }

    @Test("a story not in the library is downloaded and added once, under the URL its EPUB names")
    func newStory() async throws {
        let downloader = ScriptedDownloader([.init(outcome: .downloaded, storyURL: url)])
        let outcome = await run(pipeline(downloader), url)
        #expect(outcome == .stored(book: 1, detail: "new", notify: true, storyURL: url))
        #expect(downloader.modes == [.download])
        #expect(library.books.mapValues(\.url) == [1: url])
    }

    @Test("each stage's time is recorded: lookup, FanFicFare and the calibredb writes of an update")
    func stageTimes() async throws {
        try library.hold(5, url: url)
        let downloader = ScriptedDownloader([.init(outcome: .updated(fromChapters: 3, toChapters: 4), storyURL: url)])
        let times = StageTimes()
        let outcome = await StageTimes.$current.withValue(times) {
            await run(pipeline(downloader) { $0.metadataMode = .addFormat }, url)
        }
        #expect(outcome == .stored(book: 5, detail: "updated", notify: true, storyURL: url))
        // No write turn (a library folder): nothing is waited for.
        #expect(Set(times.milliseconds.keys) == ["lookup", "fanficfare", "calibredb"])
    }

    @Test("a story in the library is updated in place from its own EPUB")
    func update() async throws {
        try library.hold(5, url: url)
        let downloader = ScriptedDownloader([.init(outcome: .updated(fromChapters: 3, toChapters: 4), storyURL: url)])
        let outcome = await run(pipeline(downloader) { $0.metadataMode = .addFormat }, url)
        #expect(outcome == .stored(book: 5, detail: "updated", notify: true, storyURL: url))
        #expect(downloader.modes == [.update(epub: FanFicFare.outputName, method: .update, force: false)])
        #expect(library.books.count == 1)
    }

    @Test("nothing new: up to date, the library untouched, nobody told")
    func upToDate() async throws {
        try library.hold(5, url: url)
        let before = try #require(library.books[5]?.epub)
        let downloader = ScriptedDownloader([.init(outcome: .upToDate(chapters: 4), storyURL: url)])
        let outcome = await run(pipeline(downloader), url)
        #expect(outcome == .stored(book: 5, detail: "up to date", notify: false, storyURL: url))
        #expect(library.books[5]?.epub == before)
    }

    @Test("a skipped update runs once more with force; update_no_force keeps the book as it is")
    func skippedUpdate() async throws {
        try library.hold(5, url: url)
        let forced = ScriptedDownloader([
            .init(outcome: .fileNewerThanStory, storyURL: nil),
            .init(outcome: .updated(fromChapters: 3, toChapters: 4), storyURL: url),
        ])
        let outcome = await run(pipeline(forced) { $0.metadataMode = .addFormat }, url)
        #expect(outcome == .stored(book: 5, detail: "updated", notify: true, storyURL: url))
        #expect(
            forced.modes.map { mode -> Bool? in if case .update(_, _, let force) = mode { force } else { nil } }
                == [false, true])

        let unforced = ScriptedDownloader([.init(outcome: .fileNewerThanStory, storyURL: nil)])
        let kept = await run(pipeline(unforced) { $0.updateMethod = .updateNoForce }, url)
        guard case .stored(5, let detail, false, nil, _) = kept else {
            Issue.record("unexpected \(kept)")
            return
        }
        #expect(detail.hasPrefix("not updated"))
        #expect(unforced.modes.count == 1)
    }

    @Test("a task spelled differently finds the book the story's own URL names: no second book")
    func ownURL() async throws {
        try library.hold(5, url: url)
        let spelling = "http://test1.com/?sid=1&chapter=3"
        let downloader = ScriptedDownloader([.init(outcome: .downloaded, storyURL: url)])
        let outcome = await run(pipeline(downloader) { $0.metadataMode = .addFormat }, spelling)
        #expect(outcome == .stored(book: 5, detail: "updated", notify: true, storyURL: url))
        #expect(library.books.count == 1)
    }

    @Test("failures: permanent ones are permanent, the rest retryable, with FanFicFare's reason")
    func failures() async throws {
        let missing = ScriptedDownloader([.init(outcome: .storyDoesNotExist, storyURL: nil)])
        #expect(await run(pipeline(missing), url) == .permanent("the story does not exist"))
        let flaky = ScriptedDownloader([.init(outcome: .failed("HTTP Error 502"), storyURL: nil)])
        #expect(await run(pipeline(flaky), url) == .retryable("HTTP Error 502"))
        let silent = ScriptedDownloader([.init(outcome: .downloaded, storyURL: nil)])
        guard case .retryable(let reason) = await run(pipeline(silent), url) else {
            Issue.record("a success without an EPUB must be retried")
            return
        }
        #expect(reason.contains("wrote no EPUB"))
        #expect(library.books.isEmpty)
    }

    @Test("a site that blocks everyone pauses the site; the story has not failed")
    func siteBlocked() async throws {
        let block = SiteBlock(kind: .throttled, status: 429, retryAfterSeconds: 120, line: "HTTP Error in FFF '429'")
        let downloader = ScriptedDownloader([.init(outcome: .siteBlocked(block), storyURL: nil)])
        #expect(await run(pipeline(downloader), url) == .siteBlocked(block.summary, retryAfterSeconds: 120))
        #expect(library.books.isEmpty)
    }

    @Test(
        "fewer chapters on the site than in the book: kept by default, kept aside then updated, or updated",
        arguments: FanficConfiguration.Calibre.FewerChapters.allCases)
    func fewerChapters(mode: FanficConfiguration.Calibre.FewerChapters) async throws {
        // FanFicFare flags it (the book has 5, the site 3), and a forced update brings 3.
        try library.hold(5, url: url, chapters: 5)
        let before = try #require(library.books[5]?.epub)
        let downloader = ScriptedDownloader([
            .init(outcome: .moreChaptersThanSource(epub: 5, source: 3), storyURL: nil),
            .init(outcome: .updated(fromChapters: 5, toChapters: 3), storyURL: url, chapters: 3),
        ])
        let outcome = await run(pipeline(downloader) { $0.onFewerChapters = mode }, url)
        guard case .stored(let book, let detail, true, _, _) = outcome else {
            Issue.record("unexpected \(outcome)")
            return
        }
        let books = library.books
        #expect(books.count == 1)
        let kept = try #require(books[book])
        switch mode {
        case .keep:
            #expect(book == 5 && kept.epub == before && kept.original == nil)
            #expect(detail.hasPrefix("kept as it is: the site has 3 chapters, the book 5"))
            #expect(downloader.modes.count == 1, "no forced run")
        case .backupThenUpdate:
            #expect(kept.epub != before && kept.original == before, "the 5-chapter EPUB kept as ORIGINAL_EPUB")
            #expect(detail.contains("5 chapters") && detail.contains("ORIGINAL_EPUB"))
        case .update:
            #expect(kept.epub != before && kept.original == nil)
            #expect(detail == "updated")
        }
    }

    @Test("a forced update that would replace a longer copy is held back by the same rule")
    func forcedShorter() async throws {
        try library.hold(5, url: url, chapters: 4)
        let before = try #require(library.books[5]?.epub)
        let downloader = ScriptedDownloader([.init(outcome: .downloaded, storyURL: url, chapters: 2)])
        let outcome = await run(pipeline(downloader) { $0.metadataMode = .addFormat }, url, behavior: .force)
        guard case .stored(5, let detail, true, _, _) = outcome else {
            Issue.record("unexpected \(outcome)")
            return
        }
        #expect(detail.hasPrefix("kept as it is: the site has 2 chapters, the book 4"))
        #expect(library.books[5]?.epub == before)
    }
}

@Suite("A worker's checks before it takes work")
struct PreflightTests {
    @Test("a missing tool or an unusable library is named, with the key and the fix")
    func problems() throws {
        var configuration = FanficConfiguration()
        configuration.fanficfare.command = "/nowhere/fanficfare"
        configuration.calibre.metadataMode = .preserveMetadata
        configuration.notifications.appriseURLs = ["json://127.0.0.1:1/"]
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("not-a-library-\(UUID().uuidString)")
        try Data("x".utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        configuration.calibre.library = file.path
        let problems = Preflight.problems(configuration) { $0 == "calibredb" ? "/usr/bin/calibredb" : nil }
        #expect(problems.count == 4, "\(problems)")
        #expect(
            problems.contains { $0.hasPrefix("fanficfare.command: '/nowhere/fanficfare' is not an executable file") })
        #expect(problems.contains { $0.contains("ebook-meta") } && problems.contains { $0.contains("apprise") })
        #expect(problems.contains { $0.contains("is a file, not a library folder") })

        var fine = FanficConfiguration()
        fine.calibre.library = FileManager.default.temporaryDirectory.path
        #expect(Preflight.problems(fine) { "/usr/bin/\($0)" }.isEmpty)
    }
}
