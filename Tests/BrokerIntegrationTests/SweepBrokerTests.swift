import AMQP
import CalibreLibrary
import FanficBroker
import FanficCore
import Foundation
import Synchronization
import TestSupport
import Testing

@testable import Sweep

/// A sweep on a real broker (Debian's RabbitMQ and RabbitMQ 4): released ahead of time into
/// fanfic.sweep.delay, each check reaching fanfic.ingress when its own expiration is over.
@Suite("Sweeps on the broker: the delay queue releases each check once, in due order")
struct SweepBrokerTests {
    @Test("six checks over two sites in a 20 s sweep reach ingress, each once, as the sweep's update tasks")
    func releaseThroughTheBroker() async throws {
        try await TestBroker.withConnection(name: "sweep-test") { connection, _ in
            let bus = AMQPMessageBus(connection)
            try await bus.declare(FanficTopology.declarations(retry: RetryLadder()))
            var settings = FanficConfiguration.Sweep()
            settings.interval = 20
            settings.perSiteBudget = 3600
            settings.skipRecentHours = 0
            let books = (1...6).map {
                LibraryBook(
                    id: $0, url: "http://test\($0 % 2 + 1).com?sid=\($0)", lastModified: Date(timeIntervalSince1970: 0))
            }
            let scheduler = SweepScheduler(bus: bus, settings: .init(sweep: settings), logger: TestBroker.logger) {
                books
            }
            #expect(try await BrokerLock(FanficTopology.sweepLock, bus: bus).tryAcquire())
            guard case .released(_, 6) = try await scheduler.step() else {
                Issue.record("no sweep released")
                return
            }
            guard case .waiting = try await scheduler.step() else {
                Issue.record("a second sweep before the first ended")
                return
            }
            let arrived = Mutex<[TaskMessage]>([])
            let reading = Task {
                for try await message in bus.consume(queue: FanficTopology.ingress, prefetch: 10) {
                    if let task = try? WireCodec.decode(message.body) { arrived.withLock { $0.append(task) } }
                    try await message.ack()
                }
            }
            defer { reading.cancel() }
            try await waitUntil("the six checks reach ingress", timeout: .seconds(90)) {
                arrived.withLock { $0.count } >= 6
            }
            let tasks = arrived.withLock { $0 }
            #expect(tasks.map(\.url).sorted() == books.compactMap(\.url).sorted(), "each check once")
            #expect(tasks.allSatisfy { $0.submittedBy == "sweep" && $0.behavior == .normal })
            #expect(try await bus.queueState(FanficTopology.sweepDelay)?.messageCount == 0)
        }
    }

    @Test(
        "a scheduler that died while releasing: the one that takes the lock over releases the rest, each check once"
    )
    func takeoverOnTheBroker() async throws {
        try await TestBroker.withConnection(name: "sweep-takeover") { connection, _ in
            let bus = AMQPMessageBus(connection)
            try await bus.declare(FanficTopology.declarations(retry: RetryLadder()))
            var settings = FanficConfiguration.Sweep()
            settings.interval = 3600
            settings.perSiteBudget = 3600
            settings.skipRecentHours = 0
            let books = (1...10).map {
                LibraryBook(
                    id: $0, url: "http://test\($0 % 2 + 1).com?sid=\($0)", lastModified: Date(timeIntervalSince1970: 0))
            }
            let first = SweepScheduler(bus: bus, settings: .init(sweep: settings), logger: TestBroker.logger) { books }
            guard case .released(let id, 10) = try await first.step() else {
                Issue.record("no sweep released")
                return
            }
            // As if it died after putting checks 0 to 4 into the delay queue: the rest gone, its
            // record still "being released".
            var kept: [(Data, AMQPMessageProperties)] = []
            while let message = try await bus.get(queue: FanficTopology.sweepDelay) {
                if case .int(let index) = message.properties.headers[SweepScheduler.checkIndexHeader], index < 5 {
                    kept.append((message.body, message.properties))
                }
                try await message.ack()
            }
            for (body, properties) in kept {
                try await bus.publish(body, exchange: FanficTopology.sweep, routingKey: "delay", properties: properties)
            }
            var record = try #require(try await first.readRecord())
            record.publishedThrough = -1
            _ = try await bus.purgeQueue(FanficTopology.sweepState)
            try await first.writeRecord(record)

            let second = SweepScheduler(bus: bus, settings: .init(sweep: settings), logger: TestBroker.logger) { books }
            #expect(try await second.step() == .resumed(sweep: id, checks: 5))
            var indices: [Int64] = []
            while let message = try await bus.get(queue: FanficTopology.sweepDelay) {
                if case .int(let index) = message.properties.headers[SweepScheduler.checkIndexHeader] {
                    indices.append(index)
                }
                try await message.ack()
            }
            #expect(indices.sorted() == Array(0..<10), "each check once")
            #expect(try await second.readRecord()?.isComplete == true)
            #expect(try await bus.queueState(FanficTopology.sweepState)?.messageCount == 1)
        }
    }
}
