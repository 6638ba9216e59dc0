import AMQP
import FanficCore
import Foundation
import Logging
import Testing

@testable import FanficBroker

@Suite("Topology ownership: declared by the coordinator, awaited by the others, migrated by the admin")
struct TopologyMigrationTests {
    static let ladder = RetryLadder(delays: [60, 300], hailMaryDelay: 3600)
    static let logger = Logger(label: "test.topology")
    static var topology: AMQPTopology { FanficTopology.declarations(retry: ladder) }

    /// The ingress queue as the previous version declared it: dead-lettered through the default exchange.
    static let oldIngress = QueueSpec.quorum(FanficTopology.ingress).singleActiveConsumer()
        .deliveryLimit(20).deadLetter(exchange: "", routingKey: FanficTopology.failed)

    func bodies(_ bus: InMemoryBus, _ queue: String) -> [String] {
        bus.messages(in: queue).map { String(decoding: $0.body, as: UTF8.self) }
    }

    @Test("a queue declared with other arguments is re-created with its messages, in order; a second run does nothing")
    func migratesKeepingMessages() async throws {
        let admin = InMemoryBus(topology: AMQPTopology(queues: [Self.oldIngress]), user: "admin")
        for text in ["a", "b", "c"] {
            try await admin.publish(
                Data(text.utf8), exchange: "", routingKey: FanficTopology.ingress, properties: .persistentJSON())
        }
        await #expect(throws: AMQPError.self) { try await admin.declare(Self.topology, remember: false) }

        let migration = TopologyMigration(bus: admin, logger: Self.logger)
        let migrated = try await migration.migrate(Self.topology)
        #expect(migrated.map(\.queue) == [FanficTopology.ingress])
        #expect(migrated.first?.messages == 3)
        #expect(bodies(admin, FanficTopology.ingress) == ["a", "b", "c"])
        #expect(!admin.broker.hasQueue(TopologyMigration.holdingQueue(of: FanficTopology.ingress)))
        // The new arguments hold: a rejected task now goes to fanfic.failed through its exchange.
        let taken = try #require(try await admin.get(queue: FanficTopology.ingress))
        try await taken.reject(requeue: false)
        #expect(bodies(admin, FanficTopology.failed) == ["a"])

        #expect(try await migration.migrate(Self.topology).isEmpty)
    }

    @Test("a queue with consumers is not migrated: its messages stay where they are")
    func refusesWhileConsumed() async throws {
        let admin = InMemoryBus(topology: AMQPTopology(queues: [Self.oldIngress]), user: "admin")
        try await admin.publish(
            Data("kept".utf8), exchange: "", routingKey: FanficTopology.ingress, properties: .persistentJSON())
        let coordinator = InMemoryBus(broker: admin.broker, user: "fanfic-coordinator")
        let subscription = coordinator.consume(queue: FanficTopology.ingress, prefetch: 1)
        var iterator = subscription.makeAsyncIterator()
        let held = try await iterator.next()
        await #expect(throws: TopologyMigration.Refusal.self) {
            try await TopologyMigration(bus: admin, logger: Self.logger).migrate(Self.topology)
        }
        #expect(held != nil)
        #expect(admin.broker.unsettled(in: FanficTopology.ingress) == 1, "still held by its consumer, in its queue")
        #expect(admin.broker.hasQueue(FanficTopology.ingress))
        #expect(!admin.broker.hasQueue(TopologyMigration.holdingQueue(of: FanficTopology.ingress)))
    }

    @Test("an interrupted migration is finished by the next run")
    func finishesAnInterruptedRun() async throws {
        let admin = InMemoryBus(topology: Self.topology, user: "admin")
        let holding = TopologyMigration.holdingQueue(of: FanficTopology.ingress)
        try await admin.declare(AMQPTopology(queues: [QueueSpec.quorum(holding)]), remember: false)
        try await admin.publish(Data("held".utf8), exchange: "", routingKey: holding, properties: .persistentJSON())
        let migrated = try await TopologyMigration(bus: admin, logger: Self.logger).migrate(Self.topology)
        #expect(migrated.map(\.queue) == [FanficTopology.ingress])
        #expect(bodies(admin, FanficTopology.ingress) == ["held"])
        #expect(!admin.broker.hasQueue(holding))
    }

    @Test("a role whose user may not declare the topology waits for it, and names what is missing")
    func leastPrivilegeWaitsForTheCoordinator() async throws {
        let broker = InMemoryBroker()
        broker.setPermissions(
            .init(
                configure: "^fanfic\\.lock\\..+$", write: "^fanfic\\.(control|retry|failed|events)$",
                read: "^fanfic\\.(worker|reply)\\..+$"),
            for: "fanfic-worker")
        let worker = InMemoryBus(broker: broker, user: "fanfic-worker")
        do {
            try await TopologySetup.declareOrAwait(Self.topology, on: worker, logger: Self.logger, waitAtMost: .zero)
            Issue.record("a worker declared the topology, or found one that is not there")
        } catch {
            #expect("\(error)".contains("start the coordinator first"), "\(error)")
        }
        #expect(!broker.hasQueue(FanficTopology.ingress))
        // And it may not delete what the coordinator declares.
        let coordinator = InMemoryBus(broker: broker, user: "fanfic-coordinator")
        #expect(
            try await TopologySetup.declareOrAwait(Self.topology, on: coordinator, logger: Self.logger) == .declared)
        #expect(try await TopologySetup.declareOrAwait(Self.topology, on: worker, logger: Self.logger) == .found)
        await #expect(throws: AMQPError.self) { try await worker.deleteQueue(FanficTopology.ingress) }
        await #expect(throws: AMQPError.self) {
            try await worker.publish(
                Data(), exchange: "", routingKey: FanficTopology.control, properties: .persistentJSON())
        }
        try await worker.publish(
            Data("{}".utf8), exchange: FanficTopology.control, routingKey: "", properties: .persistentJSON())
        #expect(broker.messages(in: FanficTopology.control).count == 1)
    }
}
