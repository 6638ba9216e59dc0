import AMQP
import FanficBroker
import FanficCore
import Foundation
import Logging
import Notifications
import Synchronization
import TestSupport
import Testing

@testable import WorkerRuntime

/// The worker's side of the coordination protocol on the in-memory bus; the test plays the
/// coordinator (reads `fanfic.control`, answers on the reply queue) and the runner.
@Suite("The worker session on the in-memory bus")
struct WorkerSessionTests {
    static let ladder = RetryLadder(delays: [60], hailMaryDelay: 3600)

    /// Answers each task with the next outcome (the last one repeats), and counts the runs.
    final class ScriptedRunner: TaskRunner {
        private let state: Mutex<(outcomes: [StoryOutcome], ran: [String])>
        init(_ outcomes: [StoryOutcome]) { state = Mutex((outcomes, [])) }
        var ran: [String] { state.withLock { $0.ran } }

        func run(_ task: TaskMessage, workerID: String, logger: Logger) async -> StoryOutcome {
            // As the pipeline does: its stages' times go into the task's event.
            StageTimes.current?.add(.fanficfare, .milliseconds(1500))
            return state.withLock { state in
                state.ran.append(task.url)
                return state.outcomes.count > 1 ? state.outcomes.removeFirst() : state.outcomes[0]
            }
        }
    }

    final class Events: Sendable {
        let kinds = Mutex<[FanficEvent.Kind]>([])
        let all = Mutex<[FanficEvent]>([])
        func emit(_ event: FanficEvent) {
            kinds.withLock { $0.append(event.kind) }
            all.withLock { $0.append(event) }
        }
    }

    let broker = InMemoryBroker(topology: FanficTopology.declarations(retry: WorkerSessionTests.ladder))
    let client: InMemoryBus
    let events = Events()
    let queue = FanficTopology.workerQueue(id: "w1")

    init() { client = InMemoryBus(broker: broker) }

    /// A session on its own connection; `settlerBus` lets a test make the settler's publishes fail.
    func start(
        _ runner: ScriptedRunner, settlerBus: InMemoryBus? = nil, user: String = "guest",
        adjust: (inout WorkerSession.Settings) -> Void = { _ in }
    ) -> Task<Void, Never> {
        let bus = InMemoryBus(broker: broker, user: user)
        var settings = WorkerSession.Settings(id: "w1", configuration: FanficConfiguration())
        settings.heartbeat = .milliseconds(20)
        settings.sitePause = .zero
        adjust(&settings)
        var settler = OutcomeSettler(
            bus: settlerBus ?? bus, ladder: Self.ladder, emit: { [events] in events.emit($0) },
            notifier: RecordingNotifier())
        settler.runAgainPause = .zero
        var logger = Logger(label: "test.worker")
        logger.logLevel = .critical
        let session = WorkerSession(
            bus: bus, settings: settings, runner: runner, settler: settler, emit: { [events] in events.emit($0) },
            logger: logger)
        return Task { try? await session.run() }
    }

    /// Everything the worker said to the coordinator so far (taken off `fanfic.control`).
    final class ControlLog: Sendable {
        let messages = Mutex<[ControlMessage]>([])
        var all: [ControlMessage] { messages.withLock { $0 } }
    }

    func read(_ log: ControlLog) async throws {
        while let message = try await client.get(queue: FanficTopology.control) {
            try await message.ack()
            let control = try WireCodec.decodeControl(message.body)
            log.messages.withLock { $0.append(control) }
        }
    }

    /// Admits the worker once it has declared its reply queue.
    func admit() async throws {
        try await waitUntil("the reply queue exists") { broker.hasQueue(FanficTopology.replyQueue(worker: "w1")) }
        try await client.publish(
            WireCodec.encode(ControlMessage.admit(worker: "w1")), exchange: "",
            routingKey: FanficTopology.replyQueue(worker: "w1"), properties: .persistentJSON(), mandatory: true)
    }

    func put(_ body: Data) async throws {
        try await client.declare(FanficTopology.worker(id: "w1"))
        try await client.publish(body, exchange: "", routingKey: queue, properties: .persistentJSON(), mandatory: true)
    }

    @Test(
        "hello with what its queue holds until admitted; then each task is run, acked, reported finished, then heartbeats"
    )
    func protocolOrder() async throws {
        let task = TaskMessage(url: "http://test1.com?sid=1", site: "test1.com", submittedBy: "test")
        try await put(WireCodec.encode(task))
        let runner = ScriptedRunner([.stored(book: 1, detail: "new", notify: true, storyURL: task.url)])
        let session = start(runner)
        defer { session.cancel() }
        let log = ControlLog()
        try await waitUntil("a hello") {
            try await read(log)
            return !log.all.isEmpty
        }
        let hello = try #require(log.all.first)
        #expect(hello.kind == .hello && hello.replyTo == FanficTopology.replyQueue(worker: "w1"))
        #expect(hello.site == "test1.com" && hello.unfinished == 1, "the queue's leftovers are in the hello")
        #expect(runner.ran.isEmpty, "nothing runs before admission")

        try await admit()
        try await waitUntil("the task is reported finished") {
            try await read(log)
            return log.all.contains { $0.kind == .finished }
        }
        #expect(runner.ran == [task.url])
        #expect(broker.messages(in: queue).isEmpty, "acked")
        #expect(
            broker.consumerArguments(of: queue).first?["x-consumer-timeout"]
                == .int(Int64((FanficConfiguration().fanficfare.timeout + 600) * 1000)),
            "a long story is not redelivered under the worker after RabbitMQ's default 30 minutes")
        let finished = try #require(log.all.first { $0.kind == .finished })
        #expect(finished.finishedIdentity == task.identity)
        #expect(events.kinds.withLock { $0 } == [.taskStarted, .taskSucceeded])
        let succeeded = events.all.withLock { $0.last }
        #expect(succeeded?.stagesMilliseconds == ["fanficfare": 1500], "the run's stage times are in its event")
        try await waitUntil("a heartbeat after the finished report") {
            try await read(log)
            return log.all.drop { $0.kind != .finished }.contains { $0.kind == .heartbeat && $0.unfinished == 0 }
        }
    }

    @Test("a worker whose user may not declare its queues says hello anyway, and runs its tasks once admitted")
    func leastPrivilege() async throws {
        // The compose definitions' worker user: no queue of its own to declare.
        broker.setPermissions(
            .init(
                configure: "^fanfic\\.lock\\..+$", write: "^fanfic\\.(control|retry|failed|events)$",
                read: "^fanfic\\.(worker|reply)\\..+$"),
            for: "fanfic-worker")
        let task = TaskMessage(url: "http://test1.com?sid=1", site: "test1.com", submittedBy: "test")
        let runner = ScriptedRunner([.stored(book: 1, detail: "new", notify: true, storyURL: task.url)])
        let session = start(runner, user: "fanfic-worker")
        defer { session.cancel() }
        let log = ControlLog()
        try await waitUntil("a hello") {
            try await read(log)
            return log.all.contains { $0.kind == .hello }
        }
        #expect(!broker.hasQueue(queue) && !broker.hasQueue(FanficTopology.replyQueue(worker: "w1")))

        // The coordinator's part: it declares the worker's queues, routes a task, admits it.
        try await client.declare(FanficTopology.workerQueues(id: "w1"))
        try await put(WireCodec.encode(task))
        try await admit()
        try await waitUntil("the task is reported finished") {
            try await read(log)
            return log.all.contains { $0.kind == .finished }
        }
        #expect(runner.ran == [task.url])
    }

    @Test("a message in its queue that is not a task is parked with the reason; the next task runs")
    func garbage() async throws {
        try await put(Data("{not a task".utf8))
        let task = TaskMessage(url: "http://test1.com?sid=2", site: "test1.com", submittedBy: "test")
        try await put(WireCodec.encode(task))
        let runner = ScriptedRunner([.stored(book: 1, detail: "new", notify: false, storyURL: nil)])
        let session = start(runner)
        defer { session.cancel() }
        try await admit()
        try await waitUntil("the task ran") { runner.ran == [task.url] }
        let parked = try #require(broker.messages(in: FanficTopology.failed).first)
        guard case .string(let reason) = parked.properties.headers[FanficTopology.failureReasonHeader] else {
            Issue.record("no reason header")
            return
        }
        #expect(reason.hasPrefix("undecodable task: "))
    }

    @Test("an outcome that cannot be recorded gives the task back: it runs again and is reported finished once")
    func unrecorded() async throws {
        let task = TaskMessage(url: "http://test1.com?sid=3", site: "test1.com", submittedBy: "test")
        try await put(WireCodec.encode(task))
        let settlerBus = InMemoryBus(broker: broker)
        settlerBus.failPublishes(1)
        let runner = ScriptedRunner([.permanent("the story does not exist")])
        let session = start(runner, settlerBus: settlerBus)
        defer { session.cancel() }
        try await admit()
        let log = ControlLog()
        try await waitUntil("the task is parked and reported finished") {
            try await read(log)
            return log.all.contains { $0.kind == .finished } && broker.messages(in: FanficTopology.failed).count == 1
        }
        #expect(runner.ran == [task.url, task.url])
        #expect(log.all.filter { $0.kind == .finished }.count == 1)
    }

    @Test("a task whose URL is not of the site it came as is handed back through a retry tier, never run")
    func misplaced() async throws {
        let stray = TaskMessage(url: "http://test2.com?sid=5", site: "test1.com", submittedBy: "test")
        var properties = AMQPMessageProperties.persistentJSON()
        properties.headers[FanficTopology.siteHeader] = .string("test1.com")
        try await client.declare(FanficTopology.worker(id: "w1"))
        try await client.publish(
            WireCodec.encode(stray), exchange: "", routingKey: queue, properties: properties, mandatory: true)
        let runner = ScriptedRunner([.stored(book: 1, detail: "new", notify: false, storyURL: nil)])
        let session = start(runner)
        defer { session.cancel() }
        try await admit()
        let log = ControlLog()
        try await waitUntil("it is reported finished") {
            try await read(log)
            return log.all.contains { $0.kind == .finished }
        }
        #expect(runner.ran.isEmpty)
        #expect(broker.messages(in: queue).isEmpty, "acked")
        let back = try broker.messages(in: "fanfic.retry.60s").map { try WireCodec.decode($0.body) }
        #expect(
            back.map(\.url) == [stray.url] && back.first?.attempt == 0,
            "back through the shortest tier, no attempt spent")
    }

    @Test(
        "a block: reported before the task's finished, the task waits without spending a retry, the site's next task is not run"
    )
    func blocked() async throws {
        let first = TaskMessage(url: "http://test1.com?sid=1", site: "test1.com", submittedBy: "test")
        let second = TaskMessage(url: "http://test1.com?sid=2", site: "test1.com", submittedBy: "test")
        try await put(WireCodec.encode(first))
        try await put(WireCodec.encode(second))
        let runner = ScriptedRunner([.siteBlocked("the site is throttling us (HTTP 429)", retryAfterSeconds: 30)])
        let session = start(runner)
        defer { session.cancel() }
        try await admit()
        let log = ControlLog()
        try await waitUntil("both are reported finished") {
            try await read(log)
            return log.all.filter { $0.kind == .finished }.count == 2
        }
        #expect(runner.ran == [first.url], "the site's other task waits unrun")
        let kinds = log.all.map(\.kind).filter { $0 == .blocked || $0 == .finished }
        #expect(kinds == [.blocked, .finished, .finished], "the block comes before the task's finished")
        let report = try #require(log.all.first { $0.kind == .blocked })
        #expect(report.site == "test1.com" && report.retryAfter == 30 && report.reason?.contains("429") == true)
        let waiting = broker.messages(in: "fanfic.retry.60s")
        #expect(try waiting.map { try WireCodec.decode($0.body).url } == [first.url, second.url])
        #expect(try waiting.allSatisfy { try WireCodec.decode($0.body).attempt == 0 }, "no retry step spent")
        #expect(waiting.allSatisfy { $0.properties.headers[FanficTopology.deferralsHeader] == .int(1) })
        #expect(events.kinds.withLock { $0 }.filter { $0 == .taskDeferred }.count == 2)
    }

    @Test("a task that waited for its site too many times counts the block as its own failure")
    func deferredTooOften() async throws {
        let task = TaskMessage(url: "http://test1.com?sid=1", site: "test1.com", submittedBy: "test")
        var properties = AMQPMessageProperties.persistentJSON()
        properties.headers[FanficTopology.deferralsHeader] = .int(12)
        try await client.declare(FanficTopology.worker(id: "w1"))
        try await client.publish(
            WireCodec.encode(task), exchange: "", routingKey: queue, properties: properties, mandatory: true)
        let runner = ScriptedRunner([
            .siteBlocked("the site answers with a challenge page (HTTP 403)", retryAfterSeconds: nil)
        ])
        let session = start(runner)
        defer { session.cancel() }
        try await admit()
        try await waitUntil("it waits in the retry tier") { !broker.messages(in: "fanfic.retry.60s").isEmpty }
        let retried = try WireCodec.decode(broker.messages(in: "fanfic.retry.60s")[0].body)
        #expect(retried.attempt == 1, "a retry step spent")
    }

    @Test("a task of a site in its quiet hours is not run: it goes back to wait, no attempt spent")
    func quietHours() async throws {
        let quiet = TaskMessage(url: "http://test1.com?sid=1", site: "test1.com", submittedBy: "test")
        let open = TaskMessage(url: "http://test2.com?sid=1", site: "test2.com", submittedBy: "test")
        try await put(WireCodec.encode(quiet))
        try await put(WireCodec.encode(open))
        let runner = ScriptedRunner([.stored(book: 1, detail: "new", notify: false, storyURL: nil)])
        // Quiet all day long for test1.com: whatever the clock says when the test runs.
        let session = start(runner) {
            $0.quietHours.siteRanges = ["test1.com": [QuietHours("00:00-12:00")!, QuietHours("12:00-00:00")!]]
        }
        defer { session.cancel() }
        try await admit()
        let log = ControlLog()
        try await waitUntil("both are reported finished") {
            try await read(log)
            return log.all.filter { $0.kind == .finished }.count == 2
        }
        #expect(runner.ran == [open.url])
        let back = try broker.messages(in: "fanfic.retry.60s").map { try WireCodec.decode($0.body) }
        #expect(back.map(\.url) == [quiet.url] && back.first?.attempt == 0)
    }
}
