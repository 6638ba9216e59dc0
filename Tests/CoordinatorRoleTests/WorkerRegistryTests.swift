import AMQP
import FanficBroker
import FanficCore
import Foundation
import Logging
import Synchronization
import TestSupport
import Testing

@testable import CoordinatorService

/// The worker registry's memory of workers over time: dates are given, never read from the clock.
@Suite("The worker registry forgets workers gone for good")
struct WorkerRegistryTests {
    let fleet = Fleet()
    let bus: InMemoryBus
    let registry: WorkerRegistry
    let moves: QueueMoves
    let start = Date(timeIntervalSince1970: 1_800_000_000)
    let day: TimeInterval = 86_400

    init() {
        bus = InMemoryBus(broker: fleet.broker, user: "fanfic-coordinator")
        var logger = Logger(label: "test.registry")
        logger.logLevel = .critical
        registry = WorkerRegistry(bus: bus, forgetAfter: day, logger: logger)
        moves = QueueMoves(bus: bus, logger: logger)
    }

    func queueExists(_ id: String) async throws -> Bool {
        try await bus.queueState(FanficTopology.workerQueue(id: id)) != nil
    }

    func registered() -> [String: Int] {
        var entries: [String: Int] = [:]
        for message in fleet.broker.messages(in: FanficTopology.workers) {
            if let entry = WorkerRegistry.entry(message.body, now: .distantPast) { entries[entry.id] = entry.lastSeen }
        }
        return entries
    }

    @Test(
        "silent past forget_workers_after: its queue (reclaimed first) is deleted; one still consumed, or silent for less, is kept"
    )
    func forgetting() async throws {
        for id in ["gone-1", "busy-1", "recent-1", "consumed-1", "alive-1"] {
            try await bus.declare(FanficTopology.workerQueues(id: id), remember: false)
        }
        for id in ["gone-1", "busy-1", "consumed-1"] { await registry.register(id, at: start) }
        await registry.register("recent-1", at: start + day + 1)
        let left = TaskMessage(url: "http://test1.com?sid=7", site: "test1.com", submittedBy: "test")
        try await bus.publish(
            WireCodec.encode(left), exchange: FanficTopology.dispatch,
            routingKey: FanficTopology.workerQueue(id: "busy-1"),
            properties: .persistentJSON(), mandatory: true)
        let consumer = InMemoryBus(broker: fleet.broker, user: "fanfic-worker")
        let consuming = Task {
            for try await _ in consumer.consume(queue: FanficTopology.workerQueue(id: "consumed-1"), prefetch: 1) {}
        }
        defer { consuming.cancel() }
        try await waitUntil("consumed-1 has its consumer") {
            (try? await bus.queueState(FanficTopology.workerQueue(id: "consumed-1")))?.consumerCount == 1
        }

        let later = start + day + 60
        let result = await registry.sweep(known: ["alive-1"], moves: moves, now: later)

        #expect(Set(result.forgotten) == ["gone-1", "busy-1"])
        #expect(try await !queueExists("gone-1"))
        #expect(try await !queueExists("busy-1"))
        #expect(fleet.queue(FanficTopology.ingress).map(\.url) == [left.url], "busy-1's task went back to ingress")
        for id in ["recent-1", "consumed-1", "alive-1"] { #expect(try await queueExists(id), "\(id) is kept") }
        let seen = Int(later.timeIntervalSince1970)
        #expect(
            registered() == [
                "recent-1": Int((start + day + 1).timeIntervalSince1970), "consumed-1": seen, "alive-1": seen,
            ])

        // A day on, recent-1 has been silent long enough too.
        let result2 = await registry.sweep(known: [], moves: moves, now: start + 2 * day + 2)
        #expect(result2.forgotten == ["recent-1"])
        #expect(try await !queueExists("recent-1"))
        #expect(Set(registered().keys) == ["consumed-1", "alive-1"])
    }

    @Test(
        "a worker the table meets after the sweep's snapshot (admitted, not consuming yet) keeps its queue: checked before the reclaim and before each move"
    )
    func joinedDuringSweep() async throws {
        for id in ["late-1", "later-1"] {
            try await bus.declare(FanficTopology.workerQueues(id: id), remember: false)
            await registry.register(id, at: start)
        }
        for (id, sid) in [("late-1", 1), ("later-1", 2), ("later-1", 3), ("later-1", 4)] {
            let task = TaskMessage(url: "http://test1.com?sid=\(sid)", site: "test1.com", submittedBy: "test")
            try await bus.publish(
                WireCodec.encode(task), exchange: FanficTopology.dispatch,
                routingKey: FanficTopology.workerQueue(id: id), properties: .persistentJSON(), mandatory: true)
        }
        // late-1 joined before its turn came; later-1 joins once one of its tasks has been moved.
        let asked = Mutex<[String: Int]>([:])
        let result = await registry.sweep(known: [], moves: moves, now: start + 60) { id in
            let count = asked.withLock { asked in
                asked[id, default: 0] += 1
                return asked[id]!
            }
            return id == "later-1" && count <= 2
        }

        #expect(fleet.queue(FanficTopology.workerQueue(id: "late-1")).map(\.url) == ["http://test1.com?sid=1"])
        #expect(
            fleet.queue(FanficTopology.ingress).map(\.url) == ["http://test1.com?sid=2"], "one moved before the hello")
        #expect(fleet.queue(FanficTopology.workerQueue(id: "later-1")).count == 2)
        #expect(Set(result.kept) == ["late-1", "later-1"])
        #expect(Set(registered().keys) == ["late-1", "later-1"])
    }

    @Test("a bare id, as older coordinators wrote, counts as seen now; garbage is dropped")
    func olderEntries() throws {
        let now = start
        #expect(WorkerRegistry.entry(Data("w-1".utf8), now: now) == .init(id: "w-1", lastSeen: 1_800_000_000))
        #expect(
            WorkerRegistry.entry(Data(#"{"id":"w-2","last_seen":5}"#.utf8), now: now) == .init(id: "w-2", lastSeen: 5))
        #expect(WorkerRegistry.entry(Data("bad id/..".utf8), now: now) == nil)
        #expect(WorkerRegistry.entry(Data(#"{"id":"","last_seen":5}"#.utf8), now: now) == nil)
    }
}
