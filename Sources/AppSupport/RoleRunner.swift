import AMQP
import FanficCore
import Logging
import ServiceLifecycle

/// Runs one role's services in a ServiceGroup that stops on SIGTERM or SIGINT.
public enum RoleRunner {
    public static func run(
        role: String, options: CommonOptions,
        work: @escaping @Sendable (AMQPConnection, FanficConfiguration, Logger) async throws -> Void
    ) async throws {
        Bootstrap.logging(options)
        let configuration = try Bootstrap.configuration(options)
        let broker = try Bootstrap.broker(configuration, role: role)
        let logger = Logger(label: "fanfic.\(role)")
        logger.info("starting", metadata: ["role": "\(role)", "amqp.url": "\(broker.redactedURL)"])
        let session = BrokerSession(configuration: configuration, broker: broker, logger: logger) { connection in
            try await work(connection, configuration, logger)
        }
        try await runUntilStopped(session, logger: logger)
        logger.info("stopped", metadata: ["role": "\(role)"])
    }

    /// Runs a service until it ends; SIGTERM or SIGINT asks it to stop gracefully.
    public static func runUntilStopped(_ service: some Service, logger: Logger) async throws {
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: service)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}
