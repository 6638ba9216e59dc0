import AMQP
import FanficBroker
import FanficCore
import Logging
import ServiceLifecycle

/// A role's broker connection as a Service: connects (retrying until the broker is there),
/// declares the topology, runs the role's work, and closes the connection at shutdown.
///
/// The role executables are thin over this until their own services land (coordinator,
/// worker and ingester issues); even then, this is where their connection lives.
public struct BrokerSession: Service {
    public let connection: AMQPConnection
    public let configuration: FanficConfiguration
    let logger: Logger
    let work: @Sendable (AMQPConnection) async throws -> Void

    /// - Parameter work: the role's loop; the default waits for graceful shutdown.
    public init(
        configuration: FanficConfiguration, broker: AMQPConfiguration, logger: Logger,
        work: @escaping @Sendable (AMQPConnection) async throws -> Void = { _ in try await gracefulShutdown() }
    ) {
        self.configuration = configuration
        self.logger = logger
        self.work = work
        self.connection = AMQPConnection(configuration: broker, logger: logger)
    }

    public func run() async throws {
        do {
            try await connectAndDeclare()
            try await work(connection)
        } catch is CancellationError {
        } catch {
            await connection.close()
            throw error
        }
        await connection.close()
    }

    /// Waits for the broker as long as it takes (compose may start us first), then declares.
    /// Short waits, so that a shutdown signal is honoured within a couple of seconds.
    func connectAndDeclare() async throws {
        let broker = connection.configuration.redactedURL
        var waited = 0
        while true {
            do {
                try await connection.waitUntilConnected(timeout: .seconds(2))
                break
            } catch let error as AMQPError where error.code == .notConnected {
                if Task.isShuttingDownGracefully || Task.isCancelled { throw CancellationError() }
                waited += 2
                if waited % 30 == 0 {
                    logger.warning(
                        "still waiting for the broker",
                        metadata: [
                            "amqp.url": "\(broker)", "waited_s": "\(waited)",
                            "amqp.error": "\(connection.lastError.map { "\($0)" } ?? "timeout")",
                        ])
                }
            }
        }
        try await connection.declare(FanficTopology.declarations(retry: configuration.retry.ladder))
        logger.info("broker topology declared", metadata: ["amqp.url": "\(broker)"])
    }
}
