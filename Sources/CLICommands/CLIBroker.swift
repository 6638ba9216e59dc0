import AMQP
import AppSupport
import ArgumentParser
import FanficBroker
import FanficCore
import Logging

/// The broker connection of a CLI command: configuration, connect, declare the topology; a
/// clear message (never a hang) when the broker can't be reached. Commands work on ``bus``.
struct CLIBroker {
    let connection: AMQPConnection
    let configuration: FanficConfiguration
    var bus: any MessageBus { AMQPMessageBus(connection) }

    func close() async { await connection.close() }

    static func connect(_ options: CommonOptions, timeout: Int = 30, declaring: Bool = true) async throws -> CLIBroker {
        Bootstrap.logging(options)
        let configuration = try Bootstrap.configuration(options)
        return try await connect(configuration, timeout: timeout, declaring: declaring)
    }

    /// The same, for a command that has loaded its configuration already. `declaring: false`
    /// connects only (for a command that declares the topology itself).
    static func connect(_ configuration: FanficConfiguration, timeout: Int = 30, declaring: Bool = true) async throws
        -> CLIBroker
    {
        let broker = try Bootstrap.broker(configuration, role: "cli")
        let connection = AMQPConnection(configuration: broker, logger: Logger(label: "fanfic.cli"))
        do {
            try await connection.waitUntilConnected(timeout: .seconds(timeout))
            if declaring {
                try await TopologySetup.declareOrAwait(
                    FanficTopology.declarations(retry: configuration.retry.ladder), on: AMQPMessageBus(connection),
                    logger: Logger(label: "fanfic.cli"), waitAtMost: .seconds(timeout))
            }
        } catch {
            await connection.close()
            let reason = connection.lastError.map { "\($0)" } ?? "\(error)"
            throw ValidationError("cannot reach the broker at \(broker.redactedURL) within \(timeout) s: \(reason)")
        }
        return CLIBroker(connection: connection, configuration: configuration)
    }
}
