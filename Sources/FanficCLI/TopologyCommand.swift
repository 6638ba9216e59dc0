import AMQP
import AppSupport
import ArgumentParser
import FanficBroker
import FanficCore
import Logging

struct TopologyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "topology",
        abstract: "Declare the broker topology (idempotent) and print each queue with its message count.")

    @OptionGroup var options: CommonOptions

    @Option(help: "Seconds to wait for the broker.")
    var timeout: Int = 30

    func run() async throws {
        Bootstrap.logging(options)
        let configuration = try Bootstrap.configuration(options)
        let broker = try Bootstrap.broker(configuration, role: "cli")
        let connection = AMQPConnection(configuration: broker, logger: Logger(label: "fanfic.cli"))
        defer { Task { await connection.close() } }
        do {
            try await connection.waitUntilConnected(timeout: .seconds(timeout))
        } catch {
            let reason = connection.lastError.map { "\($0)" } ?? "no answer"
            throw ValidationError("cannot reach the broker at \(broker.redactedURL) within \(timeout) s: \(reason)")
        }
        let topology = FanficTopology.declarations(retry: configuration.retry.ladder)
        try await connection.declare(topology, remember: false)
        print("QUEUE\tMESSAGES\tCONSUMERS")
        for queue in topology.queues {
            if let state = try await connection.queueState(queue.name) {
                print("\(queue.name)\t\(state.messageCount)\t\(state.consumerCount)")
            }
        }
        await connection.close()
    }
}
