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
        await #expect(throws: AMQPError.self) {
            try await publish(bus, "lost", exchange: FanficTopology.retry, key: "7s")
        }
        try await publish(bus, "event", exchange: FanficTopology.events, key: "task.succeeded", mandatory: false)

        #expect(InMemoryBroker.topicMatches("task.#", "task.succeeded"))
        #expect(InMemoryBroker.topicMatches("#", "site.paused"))
        #expect(InMemoryBroker.topicMatches("*.failed", "task.failed"))
        #expect(!InMemoryBroker.topicMatches("task.*", "site.paused"))
        #expect(!InMemoryBroker.topicMatches("task.*", "task.a.b"))
    }

    @Test("get, ack, requeue at the head, dead-letter on reject and on expiry; a second settle is refused")
    func settling() async throws {
        let bus = bus()
        try await publish(bus, "one", exchange: FanficTopology.ingress, key: FanficTopology.taskRoutingKey)
        try await publish(bus, "two", exchange: FanficTopology.ingress, key: FanficTopology.taskRoutingKey)

        let first = try #require(try await bus.get(queue: FanficTopology.ingress))
        try await first.reject(requeue: true)
        await #expect(throws: AMQPError.self) { try await first.ack() }
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
        await #expect(throws: AMQPError.self) {
            try await publish(bus, "x", exchange: "", key: FanficTopology.failed)
        }
        try await publish(bus, "x", exchange: "", key: FanficTopology.failed)
        #expect(bus.messages(in: FanficTopology.failed).count == 1)
    }

    @Test("a subscription gets at most prefetch unsettled messages; a single active consumer takes all")
    func consuming() async throws {
        let bus = bus()
        for text in ["a", "b", "c"] {
            try await publish(bus, text, exchange: FanficTopology.ingress, key: FanficTopology.taskRoutingKey)
        }
        var first = bus.consume(queue: FanficTopology.ingress, prefetch: 2).makeAsyncIterator()
        let second = bus.consume(queue: FanficTopology.ingress, prefetch: 2).makeAsyncIterator()
        let a = try #require(try await first.next())
        let b = try #require(try await first.next())
        #expect(bus.messages(in: FanficTopology.ingress).count == 1, "the third waits for room under prefetch")
        try await a.ack()
        let c = try #require(try await first.next())
        #expect(
            [a, b, c].map { String(decoding: $0.body, as: UTF8.self) } == ["a", "b", "c"],
            "ingress has a single active consumer: the second subscription gets nothing")
        try await b.ack()
        try await c.ack()
        _ = second
    }

    @Test("decoded subscriptions yield a bad message as a failure and go on")
    func decoding() async throws {
        let bus = bus()
        for text in ["1", "x", "3"] {
            try await publish(bus, text, exchange: FanficTopology.ingress, key: FanficTopology.taskRoutingKey)
        }
        struct NotANumber: Error {}
        var results: [String] = []
        for try await result in bus.consume(queue: FanficTopology.ingress, prefetch: 10).decoded({ data in
            guard let number = Int(String(decoding: data, as: UTF8.self)) else { throw NotANumber() }
            return number
        }) {
            switch result {
            case .success(let number):
                results.append("\(number.value)")
                try await number.message.ack()
            case .failure(let bad):
                results.append("bad")
                try await bad.message.ack()
            }
            if results.count == 3 { break }
        }
        #expect(results == ["1", "bad", "3"])
    }

    @Test("an exclusive queue is one connection's lock; a dropped connection frees it and gives its messages back")
    func connections() async throws {
        let broker = InMemoryBroker(topology: FanficTopology.declarations(retry: Self.ladder))
        let one = InMemoryBus(broker: broker)
        let two = InMemoryBus(broker: broker)
        let lock = BrokerLock(FanficTopology.coordinatorLock, bus: one)
        #expect(try await lock.tryAcquire())
        #expect(try await !BrokerLock(FanficTopology.coordinatorLock, bus: two).tryAcquire())

        try await publish(one, "held", exchange: FanficTopology.ingress, key: FanficTopology.taskRoutingKey)
        _ = try #require(try await one.get(queue: FanficTopology.ingress))
        let generation = one.generation
        one.disconnect()
        #expect(!one.isConnected)
        await #expect(throws: AMQPError.self) { try await one.queueState(FanficTopology.ingress) }
        #expect(try await BrokerLock(FanficTopology.coordinatorLock, bus: two).tryAcquire())
        let back = try #require(try await two.get(queue: FanficTopology.ingress))
        #expect(back.redelivered)
        one.reconnect()
        #expect(one.isConnected && one.generation > generation)
    }
}
