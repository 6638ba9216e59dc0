import AMQP
import FanficCore
import Foundation
import Testing

@testable import FanficBroker

@Suite("fanfic status answers go only to status reply queues")
struct StatusExchangeTests {
    static let status = CoordinatorStatus(
        name: "c1", host: "h", role: .active, startedAt: Date(timeIntervalSince1970: 0))

    func request(replyTo: String?, on bus: InMemoryBus) async throws -> BusMessage {
        try await bus.declare(AMQPTopology(queues: [QueueSpec(name: "requests")]), remember: false)
        var properties = AMQPMessageProperties(contentType: "application/json", deliveryMode: 1)
        properties.replyTo = replyTo
        try await bus.publish(StatusExchange.requestBody, exchange: "", routingKey: "requests", properties: properties)
        return try #require(try await bus.get(queue: "requests"))
    }

    @Test("a request naming another queue as reply_to gets no answer: not a worker's, not the control queue")
    func refusesOtherQueues() async throws {
        let bus = InMemoryBus(
            topology: FanficTopology.declarations(retry: RetryLadder(delays: [60], hailMaryDelay: 60)))
        try await bus.declare(FanficTopology.workerQueues(id: "w1"), remember: false)
        for target in [
            FanficTopology.control, FanficTopology.workerQueue(id: "w1"), FanficTopology.replyQueue(worker: "w1"),
            FanficTopology.ingress, "fanfic.status.reply.", "fanfic.status.reply.a b", "",
        ] {
            let answered = try await StatusExchange.answer(
                request(replyTo: target, on: bus), with: Self.status, on: bus)
            #expect(!answered, "answered to \(target.debugDescription)")
        }
        #expect(bus.messages(in: FanficTopology.control).isEmpty)
        #expect(bus.messages(in: FanficTopology.workerQueue(id: "w1")).isEmpty)
        #expect(bus.messages(in: FanficTopology.ingress).isEmpty)

        let replies = FanficTopology.statusReplyQueue()
        try await bus.declare(FanficTopology.statusReplies(replies), remember: false)
        #expect(try await StatusExchange.answer(request(replyTo: replies, on: bus), with: Self.status, on: bus))
        #expect(bus.messages(in: replies).count == 1)
    }
}
