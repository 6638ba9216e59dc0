import AMQP
import CalibreLibrary
import FanficBroker
import FanficCore
import Foundation
import Logging
import Synchronization
import Testing

@testable import Sweep

@Suite("The sweep scheduler: released ahead of time into the broker, resumed after a failover without a check twice")
struct SweepSchedulerTests {
    static let start = Date(timeIntervalSince1970: 1_800_000_000)

    final class Clock: Sendable {
        let value = Mutex(SweepSchedulerTests.start)
        var now: Date { value.withLock { $0 } }
        func advance(_ seconds: TimeInterval) { value.withLock { $0 = $0.addingTimeInterval(seconds) } }
    }

    static func books(_ count: Int) -> [LibraryBook] {
        (0..<count).map { index in
            LibraryBook(
                id: index + 1, url: "http://test\(index % 2 + 1).com?sid=\(index + 1)",
                lastModified: start.addingTimeInterval(-86_400 * 3 - Double(index)))
        }
    }

    static func scheduler(
        _ bus: InMemoryBus, clock: Clock, books: [LibraryBook] = books(10)
    ) -> SweepScheduler {
        var sweep = FanficConfiguration.Sweep()
        sweep.interval = 3600
        sweep.perSiteBudget = 100
        return SweepScheduler(
            bus: bus, settings: .init(sweep: sweep), logger: Logger(label: "test.sweep"), now: { clock.now }
        ) { books }
    }

    static func waiting(_ broker: InMemoryBroker) -> [(url: String, index: Int, expiration: Int, by: String)] {
        broker.messages(in: FanficTopology.sweepDelay).compactMap { message in
            guard let task = try? WireCodec.decode(message.body),
                case .int(let index) = message.properties.headers[SweepScheduler.checkIndexHeader]
            else { return nil }
            return (task.url, Int(index), Int(message.properties.expiration ?? "") ?? -1, task.submittedBy)
        }
    }

    @Test("a sweep: the record, then every check in due order with its wait as its expiration; then it waits")
    func release() async throws {
        let broker = InMemoryBroker(topology: FanficTopology.declarations(retry: RetryLadder()))
        let clock = Clock()
        let scheduler = Self.scheduler(InMemoryBus(broker: broker), clock: clock)
        guard case .released(let id, 10) = try await scheduler.step() else {
            Issue.record("no sweep released")
            return
        }
        let checks = Self.waiting(broker)
        #expect(checks.map(\.index) == Array(0..<10))
        #expect(checks.allSatisfy { $0.by == "sweep" })
        // Five minutes of lead, then one check every 3600/5 s per site, the sites staggered.
        #expect(checks.map(\.expiration).first == 300_000)
        #expect(checks.map(\.expiration) == checks.map(\.expiration).sorted())
        #expect(checks.allSatisfy { $0.expiration >= 300_000 && $0.expiration < 300_000 + 3_600_000 })
        let record = try #require(try await scheduler.readRecord())
        #expect(record.id == id && record.isComplete && record.checks.count == 10)
        #expect(broker.messages(in: FanficTopology.sweepState).count == 1)

        #expect(try await scheduler.step() == .waiting(until: record.endsAt))
        #expect(Self.waiting(broker).count == 10, "nothing released twice")
        // Due: the broker hands them to ingress as update tasks of the sweep.
        try broker.expire(queue: FanficTopology.sweepDelay)
        let ingress = broker.messages(in: FanficTopology.ingress).compactMap { try? WireCodec.decode($0.body) }
        #expect(ingress.count == 10 && ingress.allSatisfy { $0.submittedBy == "sweep" && $0.calibreID == nil })
        // After its end, the next sweep.
        clock.advance(3600 + 300)
        guard case .released(let next, 10) = try await scheduler.step() else {
            Issue.record("no next sweep")
            return
        }
        #expect(next != id)
    }

    @Test("a scheduler that died while releasing: its successor releases the rest, not one check twice")
    func takeover() async throws {
        let broker = InMemoryBroker(topology: FanficTopology.declarations(retry: RetryLadder()))
        let clock = Clock()
        let first = Self.scheduler(InMemoryBus(broker: broker), clock: clock)
        _ = try await first.step()
        // Make it as if it died after publishing check 4: its record still says "being released".
        let record = try #require(try await first.readRecord())
        let kept = broker.messages(in: FanficTopology.sweepDelay).prefix(5).map(\.body)
        _ = try await InMemoryBus(broker: broker).purgeQueue(FanficTopology.sweepDelay)
        for (index, body) in kept.enumerated() {
            var properties = AMQPMessageProperties.persistentJSON()
            properties.headers[SweepScheduler.sweepIDHeader] = .string(record.id)
            properties.headers[SweepScheduler.checkIndexHeader] = .int(Int64(index))
            properties.headers[SweepScheduler.dueHeader] = .int(Timestamp.milliseconds(record.checks[index].dueAt))
            properties.expiration = "1000"
            try await InMemoryBus(broker: broker).publish(
                body, exchange: FanficTopology.sweep, routingKey: "delay", properties: properties)
        }
        var incomplete = record
        incomplete.publishedThrough = -1
        _ = try await InMemoryBus(broker: broker).purgeQueue(FanficTopology.sweepState)
        try await first.writeRecord(incomplete)

        clock.advance(60)
        let second = Self.scheduler(InMemoryBus(broker: broker), clock: clock)
        #expect(try await second.step() == .resumed(sweep: record.id, checks: 5))
        let checks = Self.waiting(broker)
        #expect(checks.map(\.index).sorted() == Array(0..<10), "each check once")
        // Put back with what is left of its wait, from its due time, not the forged 1 s.
        let check0 = try #require(checks.first { $0.index == 0 })
        #expect(check0.expiration == Int(record.checks[0].dueAt.timeIntervalSince(clock.now) * 1000))
        #expect(try await second.readRecord()?.isComplete == true)
        #expect(broker.messages(in: FanficTopology.sweepState).count == 1)
    }

    @Test("the record is chosen by its content: a stale copy a reader puts back behind the new one is not taken")
    func staleCopy() async throws {
        let broker = InMemoryBroker(topology: FanficTopology.declarations(retry: RetryLadder()))
        let bus = InMemoryBus(broker: broker)
        let clock = Clock()
        let scheduler = Self.scheduler(bus, clock: clock)
        _ = try await scheduler.step()
        let current = try #require(try await scheduler.readRecord())
        var stale = current
        stale.publishedThrough = -1
        try await bus.publish(
            try JSONEncoder.sweep.encode(stale), exchange: FanficTopology.sweep, routingKey: "state",
            properties: .persistentJSON())
        #expect(broker.messages(in: FanficTopology.sweepState).count == 2)
        #expect(try await scheduler.readRecord() == current)
        #expect(broker.messages(in: FanficTopology.sweepState).count == 1, "the stale copy went")
        #expect(try await scheduler.step() == .waiting(until: current.endsAt), "no second release")
    }

    @Test(
        "sweep now: the current sweep's waiting checks go and a new sweep starts in 30 s; a second request within 10 min is ignored"
    )
    func startNow() async throws {
        let broker = InMemoryBroker(topology: FanficTopology.declarations(retry: RetryLadder()))
        let bus = InMemoryBus(broker: broker)
        let clock = Clock()
        let scheduler = Self.scheduler(bus, clock: clock)
        guard case .released(let first, 10) = try await scheduler.step() else {
            Issue.record("no sweep released")
            return
        }
        clock.advance(900)
        #expect(try await scheduler.takeRequests() == false)
        try await bus.publish(
            Data("{}".utf8), exchange: FanficTopology.sweepRequests, routingKey: "", properties: .persistentJSON())
        #expect(try await scheduler.takeRequests() == true)
        #expect(try await scheduler.takeRequests() == false, "taken once")
        guard case .released(let second, 10) = try await scheduler.step(startNow: true) else {
            Issue.record("no new sweep")
            return
        }
        #expect(second != first)
        let waiting = broker.messages(in: FanficTopology.sweepDelay)
        #expect(waiting.count == 10, "only the new sweep's checks wait")
        #expect(waiting.allSatisfy { $0.properties.headers[SweepScheduler.sweepIDHeader] == .string(second) })
        #expect(Self.waiting(broker).map(\.expiration).first == 30_000)
        // Too soon after: ignored, the sweep goes on.
        clock.advance(60)
        guard case .waiting = try await scheduler.step(startNow: true) else {
            Issue.record("a second request within 10 min started another sweep")
            return
        }
        #expect(try await scheduler.readRecord()?.id == second)
    }

    @Test("progress for fanfic status: published with the record; released per site follows the clock")
    func progress() async throws {
        let broker = InMemoryBroker(topology: FanficTopology.declarations(retry: RetryLadder()))
        let bus = InMemoryBus(broker: broker)
        let clock = Clock()
        let scheduler = Self.scheduler(bus, clock: clock)
        _ = try await scheduler.step()
        let record = try #require(try await scheduler.readRecord())
        let progress = try #require(try await SweepProgress.read(on: bus))
        #expect(progress.sweep == record.id && progress.checks == 10 && !progress.releasing)
        #expect(progress.sites.map(\.site) == ["test1.com", "test2.com"])
        #expect(broker.messages(in: FanficTopology.sweepProgress).count >= 1, "read, and put back")
        #expect(try await SweepProgress.read(on: bus) == progress)
        #expect(progress.released(at: clock.now) == 0)
        for probe in [record.checks[0].dueAt, record.checks[4].dueAt, record.checks[9].dueAt] {
            let due = record.checks.filter { $0.dueAt <= probe }.count
            #expect(progress.released(at: probe) == due, "at \(probe)")
        }
        #expect(progress.released(at: record.endsAt) == 10)
    }
}
