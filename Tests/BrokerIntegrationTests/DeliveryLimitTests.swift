import AMQP
import FanficBroker
import FanficCore
import Foundation
import Synchronization
import TestSupport
import Testing

/// Delivery limits, queue by queue, on the broker the run uses (scripts/test.sh runs these on
/// Debian's RabbitMQ 3 and on RabbitMQ 4, which drops a message past 20 redeliveries when its
/// queue has no dead-letter target).
extension BrokerTests {
    @Suite("Delivery limits: nothing dropped, nothing counted that should not be")
    struct DeliveryLimitTests {
        final class Counter: Sendable {
            private let count = Mutex(0)
            func increment() { count.withLock { $0 += 1 } }
            var value: Int { count.withLock { $0 } }
        }

        /// A message's `x-delivery-count` (absent: 0).
        static func deliveryCount(_ properties: AMQPMessageProperties) -> Int64 {
            switch properties.headers["x-delivery-count"] {
            case .int(let value): value
            default: 0
            }
        }

        @Test("a task redelivered past fanfic.ingress's limit is parked in fanfic.failed, not dropped")
        func ingressPastItsLimitIsParked() async throws {
            try await TestBroker.withConnection { connection, _ in
                let bus = AMQPMessageBus(connection)
                try await bus.declare(FanficTopology.declarations(retry: FanficConfiguration().retry.ladder))
                try await bus.publish(
                    Data(#"{"poison":true}"#.utf8), exchange: FanficTopology.ingress,
                    routingKey: FanficTopology.taskRoutingKey, properties: .persistentJSON(), mandatory: true)
                // fanfic.ingress has a single active consumer, which basic.get may not share:
                // a consumer that gives the task back every time, as a crashing coordinator would.
                let deliveries = Counter()
                let consumer = Task {
                    for try await message in bus.consume(queue: FanficTopology.ingress, prefetch: 1) {
                        deliveries.increment()
                        try await message.reject(requeue: true)
                    }
                }
                defer { consumer.cancel() }
                try await waitUntil("the poison task is parked", timeout: .seconds(10)) {
                    try await bus.queueState(FanficTopology.failed)?.messageCount == 1
                }
                #expect(deliveries.value == Int(FanficTopology.ingressDeliveryLimit) + 1)
            }
        }

        @Test("a worker stopped gracefully mid-task finishes it and returns nothing: its next task is not counted")
        func gracefulWorkerStopCountsNothing() async throws {
            let roles = try RoleProcesses()
            defer { roles.stopAll() }
            let client = try roles.connection()
            defer { Task { await client.close() } }
            try await client.waitUntilConnected(timeout: .seconds(30))
            try roles.startCoordinator("coordinator")
            try roles.startWorker("w1", taskMilliseconds: 2000)
            let bus = AMQPMessageBus(client)
            try await TopologySetup.declareOrAwait(
                FanficTopology.declarations(retry: FanficConfiguration().retry.ladder), on: bus,
                logger: TestBroker.logger)
            let publisher = TaskPublisher(bus: bus)
            for task in RoleProcesses.tasks(sites: ["test1.com"], perSite: 3, milliseconds: 2000) {
                try await publisher.submit(task)
            }
            try await waitUntil("w1 runs its first task", timeout: .seconds(30)) { !roles.runs().isEmpty }
            #expect(roles.stop("w1") == 0, "w1 stops gracefully")
            #expect(roles.runs().filter { $0.end != nil }.count == 1, "the task in hand was finished")
            let queue = FanficTopology.workerQueue(id: "w1")
            var counts: [Int64] = []
            while let message = try await bus.get(queue: queue) {
                counts.append(Self.deliveryCount(message.properties))
                try await message.ack()
            }
            #expect(counts.count == 2, "the other two tasks wait in w1's queue")
            #expect(counts.allSatisfy { $0 == 0 }, "delivery counts after a graceful stop: \(counts)")
        }
    }
}
