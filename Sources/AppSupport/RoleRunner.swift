import AMQP
import FanficBroker
import FanficCore
import Foundation
import Logging
import ServiceLifecycle

/// Runs one role as one ServiceGroup: its ``BrokerSession`` first, then the role's own services
/// (each waiting for the broker), stopped in reverse order on SIGTERM or SIGINT. Graceful
/// shutdown is bounded by `run.stop_timeout`; past it, the services are cancelled.
public enum RoleRunner {
    /// The role's services in start order, given its bus, configuration and logger.
    public typealias Services = @Sendable (any MessageBus, FanficConfiguration, Logger) throws -> [any Service]

    public static func run(role: String, options: CommonOptions, services: Services) async throws {
        Bootstrap.logging(options)
        let configuration = try Bootstrap.configuration(options)
        let broker = try Bootstrap.broker(configuration, role: role)
        let logger = Logger(label: "fanfic.\(role)")
        logger.info("starting", metadata: ["role": "\(role)", "amqp.url": "\(broker.redactedURL)"])
        let session = BrokerSession(configuration: configuration, broker: broker, logger: logger)
        let roleServices: [any Service]
        do {
            roleServices = try services(session.bus, configuration, logger).map { session.gated($0) }
        } catch let error as CannotStart {
            for problem in error.problems { logger.critical("cannot start: \(problem)") }
            FileHandle.standardError.write(
                Data(("\(role) cannot start:\n" + error.problems.map { "  \($0)\n" }.joined()).utf8))
            throw Bootstrap.configurationExitCode
        }
        var group = ServiceGroupConfiguration(
            services: [.init(service: session)] + roleServices.map { .init(service: $0) },
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        group.maximumGracefulShutdownDuration = .seconds(configuration.run.stopTimeout)
        group.maximumCancellationDuration = .seconds(5)
        try await ServiceGroup(configuration: group).run()
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

/// A role's services cannot run here (a tool missing, a library unusable): each problem says
/// what and how to fix it. The role exits 78 before it connects, so it takes no work.
public struct CannotStart: Error, Sendable {
    public let problems: [String]
    public init(_ problems: [String]) { self.problems = problems }
}
