import AMQP
import FanficCore
import Foundation
import Testing

@testable import FanficBroker

@Suite("The in-memory bus routes and settles like the broker")
struct InMemoryBusTests {
    static let ladder = RetryLadder(delays: [60, 300], hailMaryDelay: 3600)

    func bus() -> InMemoryBus { InMemoryBus(topology: FanficTopology.declarations(retry: Self.ladder)) }

    func publish(_ bus: InMemoryBus, _ text: String, exchange: String, key: String, mandatory: Bool = true)
        async throws
    {
        try await bus.publish(
            Data(text.utf8), exchange: exchange, routingKey: key, properties: .persistentJSON(), mandatory: mandatory,
            retryFor: nil)
    }

    @Test("direct, default and topic exchanges; a mandatory message no queue takes is an error")
    func routing() async throws {
        let bus = bus()
        try await publish(bus, "task", exchange: FanficTopology.ingress, key: FanficTopology.taskRoutingKey)
        try await publish(bus, "parked", exchange: "", key: FanficTopology.failed)
        try await publish(bus, "later", exchange: FanficTopology.retry, key: "60s")
        #expect(bus.messages(in: FanficTopology.ingress).map { String(decoding: $0.body, as: UTF8.self) } == ["task"])
        #expect(bus.messages(in: FanficTopology.failed).count == 1)
        #expect(bus.messages(in: "fanfic.retry.60s").count == 1)
        await #expect(throws: InMemoryBus.Refusal.self) {
            try await publish(bus, "lost", exchange: FanficTopology.retry, key: "7s")
        }
        try await publish(bus, "event", exchange: FanficTopology.events, key: "task.succeeded", mandatory: false)

        #expect(InMemoryBus.topicMatches("task.#", "task.succeeded"))
        #expect(InMemoryBus.topicMatches("#", "site.paused"))
        #expect(InMemoryBus.topicMatches("*.failed", "task.failed"))
        #expect(!InMemoryBus.topicMatches("task.*", "site.paused"))
        #expect(!InMemoryBus.topicMatches("task.*", "task.a.b"))
    }

    @Test("get, ack, requeue at the head, dead-letter on reject and on expiry; a second settle is refused")
    func settling() async throws {
        let bus = bus()
        try await publish(bus, "one", exchange: FanficTopology.ingress, key: FanficTopology.taskRoutingKey)
        try await publish(bus, "two", exchange: FanficTopology.ingress, key: FanficTopology.taskRoutingKey)

        let first = try #require(try await bus.get(queue: FanficTopology.ingress))
        try await first.reject(requeue: true)
        await #expect(throws: InMemoryBus.Refusal.self) { try await first.ack() }
        let again = try #require(try await bus.get(queue: FanficTopology.ingress))
        #expect(String(decoding: again.body, as: UTF8.self) == "one" && again.redelivered)
        try await again.reject(requeue: false)
        #expect(bus.messages(in: FanficTopology.failed).count == 1, "ingress dead-letters to fanfic.failed")

        let second = try #require(try await bus.get(queue: FanficTopology.ingress))
        try await second.ack()
        #expect(try await bus.get(queue: FanficTopology.ingress) == nil)
        #expect(try await bus.queueState(FanficTopology.ingress)?.messageCount == 0)
        #expect(try await bus.queueState("no.such.queue") == nil)

        try await publish(bus, "later", exchange: FanficTopology.retry, key: "300s")
        try bus.expire(queue: "fanfic.retry.300s")
        #expect(bus.messages(in: FanficTopology.ingress).count == 1, "a retry tier expires back to ingress")
    }

    @Test("a lost connection fails the publish")
    func failingPublish() async throws {
        let bus = bus()
        bus.failPublishes(1)
        await #expect(throws: InMemoryBus.Refusal.self) {
            try await publish(bus, "x", exchange: "", key: FanficTopology.failed)
        }
        try await publish(bus, "x", exchange: "", key: FanficTopology.failed)
        #expect(bus.messages(in: FanficTopology.failed).count == 1)
    }
}
