import AMQP
import FanficCore
import Foundation
import Logging
import Testing

@testable import FanficBroker

@Suite("Events go out in order, at most a window unconfirmed")
struct EventPublisherTests {
    @Test("every event emitted before finish is published, in order, before run returns")
    func publishesAllInOrder() async throws {
        let bus = InMemoryBus(topology: FanficTopology.declarations(retry: RetryLadder(delays: [60])))
        try await bus.declare(
            AMQPTopology(
                queues: [QueueSpec(name: "seen")],
                bindings: [BindingSpec(queue: "seen", exchange: FanficTopology.events, routingKey: "#")]))
        let publisher = EventPublisher(bus: bus, logger: Logger(label: "test"), window: 2)
        for index in 0..<50 { publisher.emit(FanficEvent(.taskRouted, source: "test", detail: "\(index)")) }
        publisher.finish()
        await publisher.run()
        let details = try bus.messages(in: "seen").map { try WireCodec.decodeEvent($0.body).detail }
        #expect(details == (0..<50).map { "\($0)" })
        #expect(publisher.droppedCount == 0)
    }

    @Test("a slot given back goes to a waiting taker; waiting for all ends when all are back", .timeLimit(.minutes(1)))
    func slots() async {
        let slots = PublishSlots(2)
        await slots.take()
        await slots.take()
        let third = Task { await slots.take() }
        let idle = Task { await slots.waitUntilAllGiven() }
        slots.give()  // goes to the third taker, not back to the pool
        await third.value
        slots.give()
        slots.give()
        await idle.value
    }
}
