import FanficBroker
import FanficCore
import Foundation
import Logging
import MailIngest
import Notifications
import Synchronization
import Testing

/// The ingester's settings on an in-memory mailbox and bus: no IMAP server, no broker.
@Suite("The ingester's settings")
struct IngesterSettingsTests {
    struct Setup {
        let mailbox = InMemoryMailbox()
        let bus = InMemoryBus(topology: FanficTopology.declarations(retry: RetryLadder(delays: [60])))
        let recorder = RecordingNotifier()
        var email = FanficConfiguration().email
        var expandLists = true

        init(_ configure: (inout FanficConfiguration.Email) -> Void = { _ in }) {
            email.server = "imap.example.org"
            email.username = "stories@example.org"
            configure(&email)
        }

        func poll() async -> [Ingester.PollReport] {
            await Ingester(
                settings: Ingester.Settings(email: email, expandLists: expandLists), mailbox: mailbox, bus: bus,
                notifier: recorder,
                logger: Logger(label: "test")
            ).pollOnce()
        }

        /// The tasks published to fanfic.ingress: canonical URL and who submitted them.
        var queued: [(url: String, by: String)] {
            bus.messages(in: FanficTopology.ingress).compactMap {
                (try? WireCodec.decode($0.body)).map { ($0.url, $0.submittedBy) }
            }
        }
    }

    static func mail(from sender: String = "reader@example.com", _ body: String) -> String {
        "From: Reader <\(sender)>\r\nSubject: stories\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\(body)\r\n"
    }

    @Test("every story link becomes one canonical task; the message is marked seen only afterwards")
    func stories() async {
        let setup = Setup()
        setup.mailbox.deliver(
            Self.mail("http://test1.com?sid=1\r\nhttp://www.test1.com/?sid=1#x\r\nhttp://test2.com?sid=2"))
        let reports = await setup.poll()
        #expect(reports.map(\.tasksQueued) == [2])
        // A message's tasks are published at once: their order in the queue is not a promise.
        #expect(setup.queued.count == 2)
        #expect(Set(setup.queued.map(\.url)) == ["http://test1.com?sid=1", "http://test2.com?sid=2"])
        #expect(setup.queued.allSatisfy { $0.by == "email:reader@example.com" })
        #expect(setup.mailbox.messages(in: "INBOX").allSatisfy { $0.seen })
        #expect(await setup.poll().map(\.messages) == [0], "nothing on the next poll")
    }

    @Test("email.allowed_senders: a message from anyone else is left unseen and queues nothing")
    func allowedSenders() async {
        let setup = Setup { $0.allowedSenders = ["friend@example.com"] }
        setup.mailbox.deliver(Self.mail(from: "stranger@example.com", "http://test1.com?sid=1"))
        setup.mailbox.deliver(Self.mail(from: "Friend@Example.com", "http://test1.com?sid=2"))
        _ = await setup.poll()
        #expect(setup.queued.map(\.url) == ["http://test1.com?sid=2"])
        #expect(setup.mailbox.messages(in: "INBOX").map(\.seen) == [false, true])
        #expect(setup.mailbox.messages(in: "INBOX").map(\.skipped) == [true, false], "the stranger's: not read again")
        #expect(await setup.poll().map(\.messages) == [0])
        #expect(setup.mailbox.fetchCount == 2)
    }

    @Test("email.disabled_sites: the user is told, nothing is queued for that site, the message is done")
    func disabledSites() async {
        let setup = Setup { $0.disabledSites = ["test2.com"] }
        setup.mailbox.deliver(Self.mail("http://test2.com?sid=5 and http://test3.com?sid=6"))
        _ = await setup.poll()
        #expect(setup.queued.map(\.url) == ["http://test3.com?sid=6"])
        #expect(
            setup.recorder.sent == [
                "Story not downloaded: test2.com is disabled: http://test2.com?sid=5"
            ])
        #expect(setup.mailbox.messages(in: "INBOX").allSatisfy { $0.seen })
    }

    @Test("email.max_urls_per_message: only the first N stories of a message are queued")
    func maxURLs() async {
        let setup = Setup { $0.maxURLsPerMessage = 2 }
        setup.mailbox.deliver(Self.mail((1...5).map { "http://test4.com?sid=\($0)" }.joined(separator: "\r\n")))
        _ = await setup.poll()
        #expect(setup.queued.count == 2)
        #expect(Set(setup.queued.map(\.url)) == ["http://test4.com?sid=1", "http://test4.com?sid=2"])
    }

    @Test("email.processed_folder: a handled message moves there instead of being marked seen")
    func processedFolder() async {
        let setup = Setup { $0.processedFolder = "Done" }
        setup.mailbox.deliver(Self.mail("http://test1.com?sid=9"))
        _ = await setup.poll()
        #expect(setup.mailbox.messages(in: "INBOX").isEmpty)
        #expect(setup.mailbox.messages(in: "Done").count == 1)
    }

    @Test(
        "a list page alone (a series, an author) is queued as a list; beside a story it is not asked for (an update notice's author link)"
    )
    func lists() async {
        let setup = Setup()
        setup.mailbox.deliver(Self.mail("the whole series please: http://test1.com/seriesid=1"))
        setup.mailbox.deliver(
            Self.mail("New chapter of http://test2.com?sid=4 by http://test2.com/authorid=9"))
        #expect(await setup.poll().map(\.tasksQueued) == [2])
        #expect(Set(setup.queued.map(\.url)) == ["http://test1.com/seriesid=1", "http://test2.com?sid=4"])
        var off = Setup()
        off.expandLists = false
        off.mailbox.deliver(Self.mail("the whole series please: http://test1.com/seriesid=1"))
        #expect(await off.poll().map(\.tasksQueued) == [0], "fanficfare.expand_lists = 0: not a story")
    }

    @Test("a message without stories stays unseen unless email.mark_unmatched_seen")
    func unmatched() async {
        let keep = Setup()
        keep.mailbox.deliver(Self.mail("no links here"))
        _ = await keep.poll()
        #expect(keep.mailbox.messages(in: "INBOX").map(\.seen) == [false])
        #expect(await keep.poll().map(\.messages) == [0], "not fetched again on every poll")
        #expect(keep.mailbox.fetchCount == 1)
        let mark = Setup { $0.markUnmatchedSeen = true }
        mark.mailbox.deliver(Self.mail("no links here"))
        _ = await mark.poll()
        #expect(mark.mailbox.messages(in: "INBOX").map(\.seen) == [true])
    }

    @Test("broker or mailbox down: nothing is marked, the next poll tries again")
    func outages() async {
        let setup = Setup()
        setup.mailbox.deliver(Self.mail("http://test1.com?sid=1"))
        setup.bus.failPublishes(1)
        let deferred = await setup.poll()
        #expect(deferred.map(\.deferred) == [1])
        #expect(setup.mailbox.messages(in: "INBOX").map(\.seen) == [false])
        setup.mailbox.fail(with: "connection refused")
        #expect(await setup.poll().first?.failed?.contains("connection refused") == true)
        setup.mailbox.fail(with: nil)
        #expect(await setup.poll().map(\.tasksQueued) == [1])
        #expect(setup.mailbox.messages(in: "INBOX").map(\.seen) == [true])
    }

    @Test("email.max_message_bytes: a bigger message is not fetched, marked, the user told; the next is read")
    func maxMessageBytes() async {
        let setup = Setup { $0.maxMessageBytes = 4096 }
        setup.mailbox.deliver(Self.mail("http://test1.com?sid=1 " + String(repeating: "x", count: 8000)))
        setup.mailbox.deliver(Self.mail("http://test1.com?sid=2"))
        let reports = await setup.poll()
        #expect(reports.map(\.skipped) == [1] && reports.map(\.tasksQueued) == [1])
        #expect(setup.queued.map(\.url) == ["http://test1.com?sid=2"])
        #expect(setup.mailbox.fetchCount == 1, "the big one was never fetched")
        #expect(setup.mailbox.messages(in: "INBOX").map(\.skipped) == [true, false])
        #expect(setup.recorder.sent.count == 1 && setup.recorder.sent[0].contains("email.max_message_bytes"))
        #expect(await setup.poll().map(\.messages) == [0], "and not looked at again")
    }

    @Test("each poll is told on fanfic.events as mail.polled: what it read, or why it could not")
    func pollEvents() async {
        let setup = Setup()
        let events = EventSink()
        let ingester = Ingester(
            settings: Ingester.Settings(email: setup.email), mailbox: setup.mailbox, bus: setup.bus,
            notifier: setup.recorder, logger: Logger(label: "test"), emit: { events.append($0) })
        setup.mailbox.deliver(Self.mail("http://test1.com?sid=1 http://test2.com?sid=2"))
        _ = await ingester.pollOnce()
        setup.mailbox.fail(with: "connection refused")
        _ = await ingester.pollOnce()
        let polled = events.all
        #expect(polled.map(\.kind) == [.mailPolled, .mailPolled])
        #expect(polled[0].detail == "INBOX: 1 message(s), 2 task(s) queued" && polled[0].reason == nil)
        #expect(polled[1].reason?.contains("connection refused") == true)
        #expect(polled.allSatisfy { $0.source.hasPrefix("ingester@") && $0.durationMilliseconds != nil })
    }
}

final class EventSink: Sendable {
    private let events = Mutex<[FanficEvent]>([])
    func append(_ event: FanficEvent) { events.withLock { $0.append(event) } }
    var all: [FanficEvent] { events.withLock { $0 } }
}
