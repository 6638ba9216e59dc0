import AMQP
import FanficBroker
import FanficCore
import Foundation
import TestSupport
import Testing

/// `fanfic failed list|requeue|purge` against the real broker.
extension BrokerTests {
    @Suite("fanfic failed")
    struct FailedCommandTests {
        static func failed(_ arguments: [String], roles: RoleProcesses) throws -> ChildProcess.Result {
            try ChildProcess.run(
                [BuiltProducts.path("fanfic"), "failed"] + arguments + ["--config", roles.configPath])
        }

        @Test("list shows each parked task with its reason and keeps them; requeue sends one back fresh; purge empties")
        func listRequeuePurge() async throws {
            let roles = try RoleProcesses()
            let client = try roles.connection()
            defer { Task { await client.close() } }
            try await client.waitUntilConnected(timeout: .seconds(30))
            try await client.declare(FanficTopology.declarations(retry: FanficConfiguration().retry.ladder))
            let publisher = TaskPublisher(bus: AMQPMessageBus(client))
            var exhausted = TaskMessage(url: "http://test1.com?sid=667", site: "test1.com", submittedBy: "test")
            exhausted.attempt = 4
            exhausted.hailMary = true
            try await publisher.park(WireCodec.encode(exhausted), reason: "retries exhausted: chapters failed")
            try await publisher.park(
                WireCodec.encode(TaskMessage(url: "http://test1.com?sid=666", site: "test1.com", submittedBy: "test")),
                reason: "the story does not exist")
            try await publisher.park(Data("garbage".utf8), reason: "undecodable task: not JSON")

            let list = try Self.failed(["list"], roles: roles)
            #expect(list.status == 0, "\(list.stderr)")
            #expect(list.stdout.contains("sid=667") && list.stdout.contains("retries exhausted"))
            #expect(list.stdout.contains("not a task: garbage"))
            #expect(list.stdout.contains("3 failed task(s)"))
            #expect(try await client.queueState(FanficTopology.failed)?.messageCount == 3, "list takes nothing away")
            // Listing again and again adds nothing to the messages' delivery counts (RabbitMQ 4
            // would drop a parked task past 20).
            for _ in 0..<2 { #expect(try Self.failed(["list"], roles: roles).status == 0) }
            var taken: [AMQPDelivery] = []
            while let delivery = try await client.get(queue: FanficTopology.failed) { taken.append(delivery) }
            #expect(taken.count == 3)
            #expect(taken.allSatisfy { DeliveryLimitTests.deliveryCount($0.properties) == 0 })
            for delivery in taken { try await delivery.nack(requeue: true) }

            let requeue = try Self.failed(["requeue", "http://test1.com?sid=667"], roles: roles)
            #expect(requeue.status == 0, "\(requeue.stderr)")
            #expect(try await client.queueState(FanficTopology.failed)?.messageCount == 2)
            #expect(try await client.queueState(FanficTopology.ingress)?.messageCount == 1)
            var back: TaskMessage?
            for try await delivery in client.consume(queue: FanficTopology.ingress, prefetch: 1) {
                back = try WireCodec.decode(delivery.body)
                try await delivery.ack()
                break
            }
            #expect(back?.url == "http://test1.com?sid=667")
            #expect(back?.attempt == 0 && back?.hailMary == false, "a fresh ladder")

            #expect(try Self.failed(["purge"], roles: roles).status != 0, "purge wants --yes")
            let purge = try Self.failed(["purge", "--yes"], roles: roles)
            #expect(purge.stdout.contains("2 failed task(s) deleted"))
            #expect(try await client.queueState(FanficTopology.failed)?.messageCount == 0)
        }
    }
}
