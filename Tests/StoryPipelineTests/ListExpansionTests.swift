import Download
import FanficBroker
import FanficCore
import Foundation
import Logging
import StoryPipeline
import Testing
import WorkerRuntime

/// A list page on a scripted FanFicFare: what becomes of the links it prints.
@Suite("Lists: a series or author page becomes its stories, each once")
struct ListExpansionTests {
    static let page = "http://test1.com/seriesid=1"

    func expand(_ page: ListOutcome, cap: Int = 100) async -> (StoryOutcome, ScriptedDownloader) {
        let downloader = ScriptedDownloader([], pages: [Self.page: page])
        let pipeline = StoryPipeline(
            settings: StoryPipeline.Settings(calibre: FanficConfiguration().calibre, expandLists: cap),
            library: InMemoryLibrary(), downloader: downloader, writeTurn: nil)
        let task = TaskMessage(url: Self.page, site: "test1.com", submittedBy: "email:reader@example.com")
        return (await pipeline.run(task, workerID: "w1", logger: Logger(label: "test")), downloader)
    }

    static func story(_ url: String, _ site: String = "test1.com") -> SiteRules.Story {
        guard case .success(let story) = SiteRules.bundled.resolve(url), story.site == site else {
            preconditionFailure("\(url) is not a story of \(site)")
        }
        return story
    }

    @Test(
        "the page's stories in its order, canonical and each once; other spellings, other pages and unknown sites are not stories"
    )
    func stories() async throws {
        let (outcome, downloader) = await expand(
            .listed([
                "http://test1.com?sid=3", "http://test1.com/?sid=3", "http://test1.com?sid=1",
                "http://test1.com/seriesid=2", "https://example.org/story/1", "http://test2.com?sid=5",
                "http://test1.com?sid=1",
            ]))
        #expect(downloader.listed == [Self.page], "read once, by its URL")
        #expect(downloader.modes.isEmpty, "nothing downloaded by the list task itself")
        #expect(
            outcome
                == .expanded(
                    stories: [
                        Self.story("http://test1.com?sid=3"), Self.story("http://test1.com?sid=1"),
                        Self.story("http://test2.com?sid=5", "test2.com"),
                    ], found: 3))
    }

    @Test("at most fanficfare.expand_lists stories, the first ones; found says how many the page had")
    func cap() async throws {
        let links = (1...9).map { "http://test1.com?sid=\($0)" }
        let (outcome, _) = await expand(.listed(links), cap: 4)
        guard case .expanded(let stories, let found) = outcome else {
            Issue.record("not expanded: \(outcome)")
            return
        }
        #expect(stories.map(\.canonicalURL) == links.prefix(4).map { Self.story($0).canonicalURL })
        #expect(found == 9)
    }

    @Test("a page that cannot be read fails with FanFicFare's reason; a blocked site waits; an empty list is parked")
    func failures() async throws {
        #expect(
            await expand(.failed(.failed("HTTPError: 500"))).0
                == .retryable("the list could not be read: HTTPError: 500"))
        #expect(
            await expand(.failed(.storyDoesNotExist)).0
                == .permanent("the list could not be read: the story does not exist"))
        let blocked = OutcomeClassifier.classify(
            exitStatus: 1, stdout: "", stderr: "HTTP Error in FFF 'Too Many Requests'(429)")
        if case .siteBlocked = await expand(.failed(blocked)).0 {} else { Issue.record("not a site block: \(blocked)") }
        guard case .permanent(let reason) = await expand(.listed(["https://example.org/"])).0 else {
            Issue.record("an empty list is not parked")
            return
        }
        #expect(reason.contains("found no story"))
    }

    @Test("expand_lists = 0 on the worker: the list task is parked with the reason, the page not read")
    func off() async throws {
        let (outcome, downloader) = await expand(.listed(["http://test1.com?sid=1"]), cap: 0)
        #expect(outcome == .permanent("a list page, not a story: this worker's fanficfare.expand_lists is 0"))
        #expect(downloader.listed.isEmpty)
    }

    @Test("the argument vector: the page in one --list=URL argument, never an option of its own")
    func arguments() {
        let fanficfare = FanFicFare(settings: FanficConfiguration().fanficfare)
        #expect(
            fanficfare.listArguments(url: "http://test1.com/--help") == [
                "--non-interactive", "--list=http://test1.com/--help",
            ])
    }
}

extension OutcomeSettlerTests {
    @Test(
        "an expanded list: each story queued to ingress as the same person's task, then the list acked; the user told")
    func expanded() async throws {
        let setup = Setup()
        let list = TaskMessage(
            url: ListExpansionTests.page, site: "test1.com", behavior: .force, submittedBy: "email:reader@example.com")
        let stories = [
            ListExpansionTests.story("http://test1.com?sid=1"), ListExpansionTests.story("http://test1.com?sid=2"),
        ]
        #expect(try await setup.settle(.expanded(stories: stories, found: 5), list) == .done)
        let queued = try setup.tasks(in: FanficTopology.ingress)
        #expect(queued.map(\.url) == stories.map(\.canonicalURL))
        #expect(
            queued.allSatisfy { $0.site == "test1.com" && $0.submittedBy == list.submittedBy && $0.behavior == .force })
        #expect(setup.bus.messages(in: Setup.queue).isEmpty && setup.finished == 1)
        let event = try #require(setup.events.first)
        #expect(event.kind == .taskSucceeded)
        #expect(event.detail == "list: 2 stories queued, the first 2 of 5 (fanficfare.expand_lists)")
        #expect(setup.notifier.sent.count == 1)
    }
}
