import FanficBroker
import FanficCore
import Foundation
import Synchronization
import Testing

@testable import DashboardServer
@testable import FanficBroker

@Suite("Dashboard actions: through the broker, each settled once, nothing else touched")
struct DashboardActionsTests {
    static let ladder = RetryLadder(delays: [60, 300], hailMaryDelay: 3600)
    static let start = Date(timeIntervalSince1970: 1_800_000_000)

    final class Events: Sendable {
        let list = Mutex<[FanficEvent]>([])
        func emit(_ event: FanficEvent) { list.withLock { $0.append(event) } }
        var all: [FanficEvent] { list.withLock { $0 } }
    }

    static func setUp() -> (InMemoryBroker, InMemoryBus, DashboardActions, Events) {
        let broker = InMemoryBroker(topology: FanficTopology.declarations(retry: ladder))
        let bus = InMemoryBus(broker: broker)
        let events = Events()
        let actions = DashboardActions(
            bus: bus, ladder: ladder, source: "dashboard@test", now: { start.addingTimeInterval(10) }
        ) { events.emit($0) }
        return (broker, bus, actions, events)
    }

    static func task(_ sid: Int, site: String = "test1.com", attempt: Int = 1) -> TaskMessage {
        TaskMessage(url: "http://\(site)?sid=\(sid)", site: site, attempt: attempt, retryTier: 0, submittedBy: "test")
    }

    static func tasks(in queue: String, of broker: InMemoryBroker) -> [TaskMessage] {
        broker.messages(in: queue).compactMap { try? WireCodec.decode($0.body) }
    }

    @Test("retry now sends the chosen task to ingress as it is; the others wait out what is left of their delay")
    func retryNow() async throws {
        let (broker, bus, actions, events) = Self.setUp()
        let publisher = TaskPublisher(bus: bus)
        let tier = Self.ladder.tiers[0]
        let queue = FanficTopology.retryQueue(tier)
        try await publisher.scheduleRetry(Self.task(1), tier: tier, now: Self.start)
        try await publisher.scheduleRetry(Self.task(2, attempt: 2), tier: tier, now: Self.start)
        try await publisher.scheduleRetry(Self.task(3), tier: tier, now: Self.start.addingTimeInterval(-30))

        #expect(try await actions.retryNow(url: "http://test1.com?sid=2") == 1)
        let ingress = Self.tasks(in: FanficTopology.ingress, of: broker)
        #expect(ingress.map(\.url) == ["http://test1.com?sid=2"])
        #expect(ingress.first?.attempt == 2, "the ladder goes on where it was")
        #expect(Self.tasks(in: queue, of: broker).map(\.url) == ["http://test1.com?sid=1", "http://test1.com?sid=3"])
        // What is left of each wait (60 s; 10 s and 40 s waited) is the copy's own expiration.
        let expirations = broker.messages(in: queue).map { Int($0.properties.expiration ?? "") ?? -1 }
        #expect(expirations == [50_000, 20_000])
        #expect(broker.unsettled(in: queue) == 0)
        #expect(events.all.isEmpty)
        #expect(try await actions.retryNow(url: "http://test1.com?sid=9") == 0)
    }

    @Test("cancel removes the waiting task and says so on fanfic.events")
    func cancel() async throws {
        let (broker, bus, actions, events) = Self.setUp()
        let publisher = TaskPublisher(bus: bus)
        for (index, tier) in Self.ladder.tiers.enumerated() {
            try await publisher.scheduleRetry(Self.task(index), tier: tier)
        }
        #expect(try await actions.cancelRetry(url: "http://test1.com?sid=1") == 1)
        let left = Self.ladder.tiers.flatMap { Self.tasks(in: FanficTopology.retryQueue($0), of: broker) }
        #expect(left.map(\.url).sorted() == ["http://test1.com?sid=0", "http://test1.com?sid=2"])
        #expect(Self.tasks(in: FanficTopology.ingress, of: broker).isEmpty)
        #expect(events.all.map(\.kind) == [.taskCancelled])
        #expect(events.all.first?.url == "http://test1.com?sid=1")
        #expect(events.all.first?.reason?.contains("cancelled") == true)
    }

    @Test("submit queues each story once, canonical; refusals and duplicates are answered, not queued")
    func submit() async throws {
        let (broker, _, actions, _) = Self.setUp()
        let answers = try await actions.submit(
            ["http://test1.com?sid=5", "  http://test1.com?sid=5&chapter=2 ", "not a url", "#comment", ""],
            force: true)
        #expect(answers.map(\.status) == ["queued", "duplicate", "refused"])
        let queued = Self.tasks(in: FanficTopology.ingress, of: broker)
        #expect(queued.map(\.url) == ["http://test1.com?sid=5"])
        #expect(queued.first?.behavior == .force)
        #expect(queued.first?.submittedBy == "dashboard")
    }

    @Test("failed: requeue chosen or all with a fresh ladder; purge chosen or all, told as events")
    func failed() async throws {
        let (broker, bus, actions, events) = Self.setUp()
        let publisher = TaskPublisher(bus: bus)
        for sid in 1...3 { try await publisher.park(WireCodec.encode(Self.task(sid, attempt: 4)), reason: "gone") }
        try await publisher.park(Data("not a task".utf8), reason: "undecodable")

        #expect(try await actions.requeueFailed(urls: ["http://test1.com?sid=2"]) == 1)
        #expect(Self.tasks(in: FanficTopology.ingress, of: broker).map(\.attempt) == [0])
        #expect(try await actions.purgeFailed(urls: ["http://test1.com?sid=3"]) == 1)
        #expect(events.all.map(\.url) == ["http://test1.com?sid=3"])
        #expect(broker.messages(in: FanficTopology.failed).count == 2)
        #expect(try await actions.purgeFailed(urls: nil) == 1, "the one task left; the non-task goes too")
        #expect(broker.messages(in: FanficTopology.failed).isEmpty)
        #expect(try await actions.requeueFailed(urls: nil) == 0)
    }
}
