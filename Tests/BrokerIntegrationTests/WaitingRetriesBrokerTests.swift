import AMQP
import FanficBroker
import FanficCore
import Foundation
import Synchronization
import TestSupport
import Testing

/// Retry now and cancel on a real broker (Debian's RabbitMQ and RabbitMQ 4): the retry tiers are
/// quorum queues with a TTL; the copies put back carry what is left of their wait as their own
/// expiration, which the broker honours.
@Suite("Waiting retries on the broker: retry now, cancel, the rest keep their wait")
struct WaitingRetriesBrokerTests {
    @Test("retry now goes to ingress at once; a cancelled one is gone; a kept one expires when its wait is over")
    func retryNowAndCancel() async throws {
        try await TestBroker.withConnection(name: "retries-test") { connection, _ in
            let bus = AMQPMessageBus(connection)
            // One tier of 10 minutes: without the kept copy's own expiration, nothing would reach
            // ingress within this test.
            let ladder = RetryLadder(delays: [600], hailMary: false)
            try await bus.declare(FanficTopology.declarations(retry: ladder))
            let tier = ladder.tiers[0]
            let queue = FanficTopology.retryQueue(tier)
            let publisher = TaskPublisher(bus: bus)
            func task(_ sid: Int) -> TaskMessage {
                TaskMessage(url: "http://test1.com?sid=\(sid)", site: "test1.com", attempt: 1, submittedBy: "test")
            }
            let now = Date()
            try await publisher.scheduleRetry(task(1), tier: tier, now: now)
            try await publisher.scheduleRetry(task(2), tier: tier, now: now)
            // Began to wait 598 s ago: 2 s left.
            try await publisher.scheduleRetry(task(3), tier: tier, now: now.addingTimeInterval(-598))
            try await waitUntil("three retries wait") { try await bus.queueState(queue)?.messageCount == 3 }

            let retries = WaitingRetries(bus: bus, ladder: ladder)
            let released = try await retries.act(.releaseNow) { $0.url == "http://test1.com?sid=1" }
            #expect(released.map(\.url) == ["http://test1.com?sid=1"])
            let cancelled = try await retries.act(.cancel) { $0.url == "http://test1.com?sid=2" }
            #expect(cancelled.map(\.url) == ["http://test1.com?sid=2"])

            // Ingress gets sid=1 now, and sid=3 once its 2 s are over; sid=2 never. (Ingress has a
            // single active consumer: it is read by subscribing, as the coordinator does.)
            let arrived = Mutex<[String]>([])
            let reading = Task {
                for try await message in bus.consume(queue: FanficTopology.ingress, prefetch: 10) {
                    let url = (try? WireCodec.decode(message.body).url) ?? "?"
                    arrived.withLock { $0.append(url) }
                    try await message.ack()
                }
            }
            defer { reading.cancel() }
            try await waitUntil("sid=1 and sid=3 reach ingress", timeout: .seconds(30)) {
                arrived.withLock { $0.count } >= 2
            }
            #expect(arrived.withLock { $0 } == ["http://test1.com?sid=1", "http://test1.com?sid=3"])
            #expect(try await bus.queueState(queue)?.messageCount == 0, "sid=2 was cancelled, not kept")
        }
    }
}
