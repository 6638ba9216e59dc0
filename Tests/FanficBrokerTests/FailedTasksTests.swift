import AMQP
import FanficCore
import Foundation
import Testing

@testable import FanficBroker

@Suite("fanfic.failed: listing, requeueing, purging")
struct FailedTasksTests {
    let bus = InMemoryBus(topology: FanficTopology.declarations(retry: RetryLadder(delays: [60])))

    func park(_ body: Data, reason: String) async throws {
        try await TaskPublisher(bus: bus).park(body, reason: reason)
    }

    @Test("entries carry the reason; requeue sends the chosen tasks back with a fresh ladder and keeps the rest")
    func requeue() async throws {
        var spent = TaskMessage(url: "http://test1.com?sid=1", site: "test1.com", submittedBy: "test")
        spent.attempt = 4
        spent.hailMary = true
        let other = TaskMessage(url: "http://test2.com?sid=2", site: "test2.com", submittedBy: "test")
        try await park(WireCodec.encode(spent), reason: "retries exhausted: site down")
        try await park(WireCodec.encode(other), reason: "the story does not exist")
        try await park(Data("garbage".utf8), reason: "undecodable task: not JSON")

        let failed = FailedTasks(bus: bus)
        let entries = try await failed.list()
        #expect(
            entries.map(\.reason) == [
                "retries exhausted: site down", "the story does not exist", "undecodable task: not JSON",
            ])
        #expect(entries[2].url == nil && entries[2].preview == "garbage")
        #expect(bus.messages(in: FanficTopology.failed).count == 3, "listing takes nothing away")
        #expect(try await failed.list().map(\.reason) == entries.map(\.reason), "nor changes the order")
        #expect(
            bus.messages(in: FanficTopology.failed).allSatisfy { !$0.redelivered },
            "nor counts a delivery: RabbitMQ 4 drops a quorum queue's message past its delivery limit")

        let requeued = try await failed.requeue { $0.url == spent.url }
        #expect(requeued.map(\.url) == [spent.url])
        let back = try bus.messages(in: FanficTopology.ingress).map { try WireCodec.decode($0.body) }
        #expect(back.count == 1 && back[0].attempt == 0 && !back[0].hailMary && back[0].retryTier == nil)
        #expect(back[0].id == spent.id, "the same task, not a new one")
        #expect(try await failed.list().map(\.url) == [other.url, nil], "the rest stay, in order")

        #expect(try await failed.purge() == 2)
        #expect(try await failed.list().isEmpty)
    }
}
