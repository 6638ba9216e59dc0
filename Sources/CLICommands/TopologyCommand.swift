import AMQP
import AppSupport
import ArgumentParser
import FanficBroker
import FanficCore
import Logging

struct TopologyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "topology",
        abstract: "Declare the broker topology (idempotent) and print each queue with its message count.",
        discussion: """
            With --migrate, queues declared by another version with other arguments are re-created
            with this version's, their messages kept (RabbitMQ cannot change a queue's arguments in
            place). Run it as the broker's admin user with every role stopped: it refuses a queue
            that has consumers. Worker and backlog queues are found from the worker registry and the
            site rules.
            """)

    @OptionGroup var options: CommonOptions

    @Option(help: "Seconds to wait for the broker.")
    var timeout: Int = 30

    @Flag(help: "Re-create queues whose arguments changed, keeping their messages (admin user, roles stopped).")
    var migrate = false

    func run() async throws {
        let broker = try await CLIBroker.connect(options, timeout: timeout, declaring: !migrate)
        let topology = FanficTopology.declarations(retry: broker.configuration.retry.ladder)
        if migrate {
            try await runMigration(topology, on: broker)
        }
        print("QUEUE\tMESSAGES\tCONSUMERS")
        for queue in topology.queues {
            if let state = try await broker.bus.queueState(queue.name) {
                print("\(queue.name)\t\(state.messageCount)\t\(state.consumerCount)")
            }
        }
        await broker.close()
    }

    private func runMigration(_ topology: AMQPTopology, on broker: CLIBroker) async throws {
        let migration = TopologyMigration(bus: broker.bus, logger: Logger(label: "fanfic.cli"))
        do {
            var migrated = try await migration.migrate(topology)
            // Then the queues that exist per worker and per site.
            var perRole = AMQPTopology()
            for worker in try await migration.registeredWorkers() {
                perRole = perRole.merging(FanficTopology.workerQueues(id: worker))
            }
            for site in Set(SiteRules.bundled.rules.map(\.site)).sorted() {
                perRole = perRole.merging(FanficTopology.backlog(site: site))
                    .merging(FanficTopology.sweepBacklog(site: site))
            }
            var present: [QueueSpec] = []
            for spec in perRole.queues {
                let exists = try await broker.bus.queueState(spec.name) != nil
                let held = try await broker.bus.queueState(TopologyMigration.holdingQueue(of: spec.name)) != nil
                if exists || held { present.append(spec) }
            }
            perRole.queues = present
            perRole.bindings = perRole.bindings.filter { binding in perRole.queues.contains { $0.name == binding.queue }
            }
            migrated += try await migration.migrate(perRole)
            for (queue, messages) in migrated { print("re-created \(queue) (\(messages) message(s) kept)") }
            if migrated.isEmpty { print("nothing to migrate: every queue has this version's arguments") }
        } catch {
            await broker.close()
            throw ValidationError("migration stopped: \(error)")
        }
    }
}
