import AMQP
import FanficBroker
import FanficCore
import Foundation
import Logging
import Notifications
import StoryPipeline
import Synchronization
import Testing
import WorkerRuntime

/// The worker's outcome handling on the in-memory bus: no broker, no tools.
@Suite("Recording a story's outcome")
struct OutcomeSettlerTests {
    static let ladder = RetryLadder(delays: [60, 300], hailMaryDelay: 3600)

    final class EventLog: Sendable {
        let events = Mutex<[FanficEvent]>([])
        let finished = Mutex(0)
    }

    struct Setup {
        let bus = InMemoryBus(topology: FanficTopology.declarations(retry: OutcomeSettlerTests.ladder))
        let notifier = RecordingNotifier()
        let eventLog = EventLog()
        /// The events emitted so far, in order.
        var events: [FanficEvent] { eventLog.events.withLock { $0 } }
        /// How many times the settler reported a task finished.
        var finished: Int { eventLog.finished.withLock { $0 } }
        var settler: OutcomeSettler {
            var settler = OutcomeSettler(
                bus: bus, ladder: OutcomeSettlerTests.ladder,
                emit: { [eventLog] event in eventLog.events.withLock { $0.append(event) } }, notifier: notifier)
            settler.runAgainPause = .zero
            return settler
        }
        static let queue = FanficTopology.workerQueue(id: "w1")

        /// Takes the task from the worker's queue, as the session does, and settles it.
        /// `failingPublishes`: the settler's first publishes fail, as with the broker gone.
        func settle(_ outcome: StoryOutcome, _ task: TaskMessage, failingPublishes: Int = 0) async throws
            -> TaskSettlement
        {
            try await bus.declare(FanficTopology.worker(id: "w1"))
            try await bus.publish(
                WireCodec.encode(task), exchange: "", routingKey: Self.queue, properties: .persistentJSON(),
                mandatory: true)
            let message = try #require(try await bus.get(queue: Self.queue))
            bus.failPublishes(failingPublishes)
            return await settler.settle(
                outcome, of: task, message: message, workerID: "w1", milliseconds: 1234, logger: Logger(label: "test")
            ) { [eventLog] in
                eventLog.finished.withLock { $0 += 1 }
            }
        }

        func tasks(in queue: String) throws -> [TaskMessage] {
            try bus.messages(in: queue).map { try WireCodec.decode($0.body) }
        }

        func reasons(in queue: String) -> [String] {
            bus.messages(in: queue).compactMap {
                if case .string(let reason) = $0.properties.headers[FanficTopology.failureReasonHeader] {
                    reason
                } else {
                    nil
                }
            }
        }
    }

    let task = TaskMessage(url: "http://test2.com/?sid=4", site: "test2.com", submittedBy: "test")

    @Test("a stored story: its event names the book and the story's own URL; the user hears of new ones")
    func stored() async throws {
        let setup = Setup()
        let settled = try await setup.settle(
            .stored(book: 7, detail: "new", notify: true, storyURL: "http://test2.com?sid=4"), task)
        #expect(settled == .done)
        #expect(setup.bus.messages(in: Setup.queue).isEmpty && setup.finished == 1, "acked, then reported finished")
        let event = try #require(setup.events.first)
        #expect(event.kind == .taskSucceeded && event.calibreID == 7 && event.detail == "new")
        #expect(event.storyURL == "http://test2.com?sid=4" && event.url == task.url)
        #expect(event.durationMilliseconds == 1234 && event.worker == "w1")
        #expect(setup.notifier.sent == ["New story: http://test2.com?sid=4 (book 7)"])

        _ = try await setup.settle(.stored(book: 7, detail: "up to date", notify: false, storyURL: nil), task)
        #expect(setup.notifier.sent.count == 1, "nothing to say about an unchanged story")
        #expect(setup.bus.messages(in: FanficTopology.failed).isEmpty)
    }

    @Test("a retryable failure climbs the ladder tier by tier, then the Hail Mary, then fanfic.failed")
    func ladder() async throws {
        let setup = Setup()
        var task = task
        var tiers: [String] = []
        for _ in 0..<3 {
            #expect(try await setup.settle(.retryable("site down"), task) == .done)
            let queue = ["fanfic.retry.60s", "fanfic.retry.300s", "fanfic.retry.hail-mary-3600s"].first {
                !setup.bus.messages(in: $0).isEmpty
            }
            let waiting = try #require(queue)
            let next = try #require(try setup.tasks(in: waiting).first)
            try setup.bus.expire(queue: waiting)
            tiers.append(waiting)
            let back = try #require(try await setup.bus.get(queue: FanficTopology.ingress))
            try await back.ack()
            #expect(next.attempt == task.attempt + 1)
            task = next
        }
        #expect(tiers == ["fanfic.retry.60s", "fanfic.retry.300s", "fanfic.retry.hail-mary-3600s"])
        #expect(task.hailMary && task.retryTier == nil)
        #expect(try await setup.settle(.retryable("site down"), task) == .done)
        #expect(setup.reasons(in: FanficTopology.failed) == ["retries exhausted: site down"])
        let kinds = setup.events.map(\.kind)
        #expect(kinds == [.taskRetrying, .taskRetrying, .taskRetrying, .taskFailed])
        #expect(setup.notifier.sent == ["Story failed after every retry: \(task.url): site down"])
    }

    @Test("a permanent failure is parked at once with its reason, and the user is told")
    func permanent() async throws {
        let setup = Setup()
        #expect(try await setup.settle(.permanent("the story does not exist"), task) == .done)
        #expect(setup.reasons(in: FanficTopology.failed) == ["the story does not exist"])
        #expect(try setup.tasks(in: FanficTopology.failed).first?.attempt == 0)
        #expect(setup.events.map(\.kind) == [.taskFailed])
        #expect(setup.notifier.sent.count == 1)
    }

    @Test("when the outcome cannot be recorded, the task runs again and nobody is told anything")
    func unrecorded() async throws {
        let setup = Setup()
        let settled = try await setup.settle(.permanent("the story does not exist"), task, failingPublishes: 1)
        #expect(settled == .runAgain)
        #expect(setup.bus.messages(in: FanficTopology.failed).isEmpty)
        #expect(setup.events.isEmpty)
        #expect(setup.notifier.sent.isEmpty)
        let back = try #require(setup.bus.messages(in: Setup.queue).first, "given back to its queue")
        #expect(back.redelivered && setup.finished == 0)
    }
}
