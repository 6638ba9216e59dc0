import CalibreLibrary
import Download
import FanficBroker
import FanficCore
import Foundation
import Logging
import WorkerRuntime

/// DESIGN.md's worker pipeline for one task: jail, exact Calibre lookup, FanFicFare (download
/// or update, once more with force when it skipped), the book written back by the metadata
/// mode. It answers a ``StoryOutcome``; the worker session's settler records it.
///
/// Every step is idempotent, because a crash before the ack runs the task again: the lookup
/// makes a re-run an update, never a second book.
public struct StoryPipeline: TaskRunner {
    public struct Settings: Sendable {
        public var calibre: FanficConfiguration.Calibre
        /// Where jails are made.
        public var scratch: URL
        /// At most this many stories from one list page; 0: list pages fail (`fanficfare.expand_lists`).
        public var expandLists: Int

        public init(configuration: FanficConfiguration) {
            self.init(calibre: configuration.calibre, expandLists: configuration.fanficfare.expandLists)
        }

        public init(
            calibre: FanficConfiguration.Calibre, scratch: URL = FileManager.default.temporaryDirectory,
            expandLists: Int = 100
        ) {
            self.calibre = calibre
            self.scratch = scratch
            self.expandLists = expandLists
        }
    }

    let settings: Settings
    let library: any StoryLibrary
    let downloader: any StoryDownloader
    /// Writes to a Content Server take turns across every worker (see ``BrokerLock/calibreServer``).
    let writeTurn: BrokerLock?

    public init(
        settings: Settings, library: any StoryLibrary, downloader: any StoryDownloader, writeTurn: BrokerLock?
    ) {
        self.settings = settings
        self.library = library
        self.downloader = downloader
        self.writeTurn = writeTurn
    }

    /// The pipeline of the configured library and FanFicFare.
    public init(configuration: FanficConfiguration, bus: any MessageBus) {
        let calibre = configuration.calibre
        let location = CalibreLocation(calibre.library)
        let credentials =
            calibre.username.isEmpty ? nil : CalibreCredentials(username: calibre.username, password: calibre.password)
        var writeTurn: BrokerLock?
        if case .server = location { writeTurn = BrokerLock(BrokerLock.calibreServer, bus: bus) }
        self.init(
            settings: Settings(configuration: configuration),
            library: CalibreStoryLibrary(location: location, credentials: credentials),
            downloader: FanFicFare(configuration: configuration), writeTurn: writeTurn)
    }

    /// Runs a library write, in turn with every other worker's when the library is a server.
    private func write<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        guard let writeTurn else { return try await StageTimes.measure(.calibredb, body) }
        let asked = ContinuousClock.now
        return try await writeTurn.withLock(timeout: .seconds(600)) {
            StageTimes.current?.add(.lockWait, ContinuousClock.now - asked)
            return try await StageTimes.measure(.calibredb, body)
        }
    }

    /// A book just added must carry the story's URL (the one its EPUB names): calibre-server has
    /// been seen to store a book without the EPUB's metadata (see ``BrokerLock/calibreServer``).
    /// Such a book is removed and the task retried, with the reason, rather than left as an
    /// anonymous "story". Compared with the EPUB's URL, never the task's spelling of it.
    private func checkAdded(_ id: Int, storyURL: String, in jail: URL) async throws -> StoryOutcome? {
        guard try await StageTimes.measure(.calibredb, { try await !library.books(withURL: storyURL).contains(id) })
        else { return nil }
        try? await write { try await library.remove(id, in: jail) }
        return .retryable(
            "the library stored book \(id) without the story's metadata (its URL \(storyURL) is missing); removed it. "
                + "With a Content Server, restart calibre-server if this repeats")
    }

    public func run(_ task: TaskMessage, workerID: String, logger: Logger) async -> StoryOutcome {
        do {
            return try await process(task, logger: logger)
        } catch {
            return .retryable("\(error)")
        }
    }

    // MARK: The pipeline

    func process(_ task: TaskMessage, logger: Logger) async throws -> StoryOutcome {
        let jail = settings.scratch.appendingPathComponent("fanfic-jail-\(UUID().uuidString)")
        try FileManager.default.createDirectory(
            at: jail, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        defer { try? FileManager.default.removeItem(at: jail) }
        if let page = SiteRules.bundled.listPage(task.url) {
            return try await expand(page, in: jail, logger: logger)
        }

        // The task's spelling, then the site rules' canonical form of it: only hints, checked
        // against the URL in the EPUB once FanFicFare has run.
        var lookedUp = [task.url]
        if case .success(let canonical) = SiteRules.bundled.resolve(task.url), canonical.canonicalURL != task.url {
            lookedUp.append(canonical.canonicalURL)
        }
        var books: [Int] = []
        for url in lookedUp where books.isEmpty {
            books = try await StageTimes.measure(.lookup) { try await library.books(withURL: url) }
        }
        if books.count > 1 {
            logger.warning("several books have this URL; updating the first", metadata: ["books": "\(books)"])
        }
        let story = jail.appendingPathComponent(FanFicFare.outputName)
        let method = settings.calibre.updateMethod
        var mode: FanFicFare.Mode = .download
        // The book as it was, for `calibre.on_fewer_chapters`: FanFicFare rewrites `story`.
        let previous = jail.appendingPathComponent("previous.epub")
        var bookChapters: Int?
        if let book = books.first {
            let exported = try await StageTimes.measure(.lookup) { try await library.exportEPUB(of: book, to: jail) }
            try FileManager.default.moveItem(at: exported, to: story)
            // Only what `on_fewer_chapters` needs: nothing when it is `update`.
            let fewerChapters = settings.calibre.onFewerChapters
            if fewerChapters != .update { bookChapters = StoryEPUB.chapterCount(of: story) }
            if fewerChapters == .backupThenUpdate { try FileManager.default.copyItem(at: story, to: previous) }
            if settings.calibre.metadataMode == .preserveMetadata {
                try await StageTimes.measure(.lookup) {
                    try await library.writeOPF(of: story, to: jail.appendingPathComponent("previous.opf"), in: jail)
                }
            }
            mode = .update(epub: FanFicFare.outputName, method: method, force: task.behavior == .force)
        }
        var (outcome, output) = try await StageTimes.measure(.fanficfare) {
            try await downloader.run(url: task.url, mode: mode, hailMary: task.hailMary, in: jail)
        }
        logger.debug("fanficfare finished", metadata: ["outcome": "\(outcome)", "exit": "\(output.exitStatus)"])
        var keepPrevious = false
        // An author removed chapters: updating would lose them.
        if case .moreChaptersThanSource(let epub, let source) = outcome, let book = books.first,
            let kept = onFewerChapters(site: source, book: epub, id: book, storyURL: nil, keepPrevious: &keepPrevious)
        {
            return kept
        }
        if outcome.disposition == .retryWithForce, case .update(let epub, _, false) = mode, method != .updateNoForce {
            logger.info("fanficfare skipped the update; once more with force", metadata: ["outcome": "\(outcome)"])
            mode = .update(epub: epub, method: method, force: true)
            (outcome, output) = try await StageTimes.measure(.fanficfare) {
                try await downloader.run(url: task.url, mode: mode, hailMary: task.hailMary, in: jail)
            }
        }

        switch outcome.disposition {
        case .pauseSite:
            guard case .siteBlocked(let block) = outcome else { return .retryable(Self.reason(outcome)) }
            // The short form travels (status, events, the notification); FanFicFare's line is logged.
            logger.warning("the site is blocking", metadata: ["block": "\(block.summary)", "line": "\(block.line)"])
            return .siteBlocked(block.summary, retryAfterSeconds: block.retryAfterSeconds)
        case .retryLater:
            return .retryable(Self.reason(outcome))
        case .permanentFailure:
            return .permanent(Self.reason(outcome))
        case .retryWithForce:
            // Force not allowed (update_no_force), or forced and still skipped: the book stays.
            guard let book = books.first else { return .retryable(Self.reason(outcome)) }
            return .stored(book: book, detail: "not updated (\(Self.reason(outcome)))", notify: false, storyURL: nil)
        case .success:
            break
        }
        guard FileManager.default.fileExists(atPath: story.path) else {
            return .retryable("fanficfare reported success but wrote no EPUB: \(output.tail)")
        }
        // The story's identity is the URL FanFicFare wrote into the EPUB, not the task's spelling.
        let storyURL: String
        let title: String?
        do {
            (storyURL, title) = try StoryEPUB.metadata(of: story)
        } catch {
            return .permanent("FanFicFare's EPUB for this story is unusable: \(error)")
        }
        if storyURL != task.url {
            logger.info("the story's own URL differs from the task's", metadata: ["story_url": "\(storyURL)"])
        }
        // Downloaded as new, but the library may hold it under the story's own URL.
        let book: Int
        if let found = books.first {
            book = found
        } else if !lookedUp.contains(storyURL),
            let found = try await StageTimes.measure(.lookup, { try await library.books(withURL: storyURL).first })
        {
            logger.info("the library holds this story under its own URL; updating it", metadata: ["book": "\(found)"])
            book = found
        } else {
            let id = try await write { try await library.add(story, in: jail) }
            if let failure = try await checkAdded(id, storyURL: storyURL, in: jail) { return failure }
            return .stored(book: id, detail: "new", notify: true, storyURL: storyURL, title: title)
        }
        if case .upToDate = outcome, method != .updateAlways, task.behavior != .force {
            return .stored(book: book, detail: "up to date", notify: false, storyURL: storyURL, title: title)
        }
        // A forced update (or one FanFicFare did not flag) may still bring fewer chapters.
        if let before = bookChapters, let after = StoryEPUB.chapterCount(of: story), after < before,
            let kept = onFewerChapters(
                site: after, book: before, id: book, storyURL: storyURL, keepPrevious: &keepPrevious)
        {
            return kept
        }
        var detail = "updated"
        if keepPrevious {
            // Kept before anything is replaced; again on the new id when remove_add re-adds it.
            try await write { try await library.keepOriginal(of: book, epub: previous, in: jail) }
            detail =
                "updated; the previous EPUB (\(bookChapters.map { "\($0) chapters" } ?? "longer")) is kept as ORIGINAL_EPUB"
        }
        let id = try await write { try await writeBack(story, over: book, in: jail) }
        if id != book, let failure = try await checkAdded(id, storyURL: storyURL, in: jail) { return failure }
        if keepPrevious, id != book {
            try await write { try await library.keepOriginal(of: id, epub: previous, in: jail) }
        }
        return .stored(book: id, detail: detail, notify: true, storyURL: storyURL, title: title)
    }

    /// Puts an updated EPUB into the library by the metadata mode; returns the book id now.
    func writeBack(_ story: URL, over book: Int, in jail: URL) async throws -> Int {
        switch settings.calibre.metadataMode {
        case .removeAdd:
            // Remove first: a crash in between leaves no book, and the re-run adds it again;
            // the other order could leave two.
            try await library.remove(book, in: jail)
            return try await library.add(story, in: jail)
        case .addFormat:
            try await library.replaceEPUB(of: book, with: story, in: jail)
            return book
        case .preserveMetadata:
            // The user's own tags are those calibre has beyond what the story's EPUB said.
            let calibreTags = try await library.tags(of: book, in: jail)
            try await library.replaceEPUB(of: book, with: story, in: jail)
            let opf = jail.appendingPathComponent("story.opf")
            try await library.writeOPF(of: story, to: opf, in: jail)
            let storyTags = Set(try EbookMeta.tags(inOPF: opf))
            try await library.setMetadata(of: book, from: opf, in: jail)
            let previousStoryTags = Set(try await previousEPUBTags(jail: jail))
            let userTags = calibreTags.filter { !previousStoryTags.contains($0) && !storyTags.contains($0) }
            if !userTags.isEmpty {
                try await library.setTags(of: book, to: Array(storyTags).sorted() + userTags, in: jail)
            }
            return book
        }
    }

    /// The tags of the EPUB as it was before the update (kept aside by ``process``).
    private func previousEPUBTags(jail: URL) async throws -> [String] {
        let previous = jail.appendingPathComponent("previous.opf")
        guard FileManager.default.fileExists(atPath: previous.path) else { return [] }
        return try EbookMeta.tags(inOPF: previous)
    }

    /// `calibre.on_fewer_chapters` when the site has `site` chapters and book `id` has `book`: the
    /// outcome that leaves the book as it is (`keep`), or nil to go on with the update, having
    /// asked for the EPUB to be kept aside first (`backup_then_update`).
    private func onFewerChapters(
        site: Int, book: Int, id: Int, storyURL: String?, keepPrevious: inout Bool
    ) -> StoryOutcome? {
        switch settings.calibre.onFewerChapters {
        case .keep:
            let detail =
                "kept as it is: the site has \(site) chapters, the book \(book) (calibre.on_fewer_chapters = keep)"
            return .stored(book: id, detail: detail, notify: true, storyURL: storyURL)
        case .backupThenUpdate:
            keepPrevious = true
        case .update:
            break
        }
        return nil
    }

    static func reason(_ outcome: FanFicFareOutcome) -> String {
        switch outcome {
        case .storyDoesNotExist: "the story does not exist"
        case .adultCheckRequired: "the site wants an adult check: set is_adult=true in fanficfare.options"
        case .loginRequired(let line): "the site wants a login: \(line)"
        case .invalidURL(let line): "FanFicFare refuses the URL: \(line)"
        case .unknownSite: "FanFicFare has no adapter for this site"
        case .unrecognizedEPUB: "the library's EPUB for this URL holds no chapters FanFicFare recognizes"
        case .chapterErrors(let count): "\(count) chapters failed to download"
        case .failed(let line): line
        case .siteBlocked(let block): block.description
        case .fileNewerThanStory: "the EPUB is newer than the story"
        case .moreChaptersThanSource(let epub, let source): "the EPUB has \(epub) chapters, the site \(source)"
        case .downloaded, .updated, .upToDate: "\(outcome)"
        }
    }
}
