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
        let broker = try await CLIBroker.connect(options, timeout: timeout)
        let topology = FanficTopology.declarations(retry: broker.configuration.retry.ladder)
        print("QUEUE\tMESSAGES\tCONSUMERS")
        for queue in topology.queues {
            if let state = try await broker.bus.queueState(queue.name) {
                print("\(queue.name)\t\(state.messageCount)\t\(state.consumerCount)")
            }
        }
        await broker.close()
    }
}
