import AMQP
import FanficBroker
import FanficCore
import Logging
import ServiceLifecycle
import Synchronization

/// A role's broker connection as a Service, the first of its ServiceGroup (so stopped last):
/// connects (retrying until the broker is there), declares the topology, opens the gate the
/// role's other services wait at (``gated(_:)``), and closes the connection at shutdown.
public final class BrokerSession: Service {
    public let connection: AMQPConnection
    public let configuration: FanficConfiguration
    /// The connection as the roles use it.
    public let bus: AMQPMessageBus
    let logger: Logger
    private let isReady = Atomic<Bool>(false)

    public init(configuration: FanficConfiguration, broker: AMQPConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        connection = AMQPConnection(configuration: broker, logger: logger)
        bus = AMQPMessageBus(connection)
    }

    public func run() async throws {
        do {
            try await connectAndDeclare()
            isReady.store(true, ordering: .releasing)
            try await gracefulShutdown()
        } catch is CancellationError {
        } catch {
            await connection.close()
            throw error
        }
        await connection.close()
    }

    /// A service that starts once the connection is up and the topology declared.
    public func gated(_ service: some Service) -> some Service { GatedService(session: self, service: service) }

    /// Returns once the topology is declared; throws when cancelled first.
    func waitUntilReady() async throws {
        while !isReady.load(ordering: .acquiring) { try await Task.sleep(for: .milliseconds(20)) }
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
        let topology = FanficTopology.declarations(retry: configuration.retry.ladder)
        let outcome: TopologySetup.Outcome
        do {
            outcome = try await cancelWhenGracefulShutdown {
                try await TopologySetup.declareOrAwait(topology, on: self.bus, logger: self.logger)
            }
        } catch let error where TopologyMigration.isInequivalent(error) {
            logger.critical(
                "a queue on the broker was declared by another version, with other arguments: stop every role, then run `fanfic topology --migrate` as the broker's admin user (its messages are kept)",
                metadata: ["amqp.error": "\(error)"])
            throw error
        }
        logger.info(
            outcome == .declared ? "broker topology declared" : "broker topology found (declared by the coordinator)",
            metadata: ["amqp.url": "\(broker)"])
    }
}

/// A role's service that waits for its ``BrokerSession`` before it runs.
struct GatedService<Wrapped: Service>: Service {
    let session: BrokerSession
    let service: Wrapped

    func run() async throws {
        do {
            try await cancelWhenGracefulShutdown { try await session.waitUntilReady() }
        } catch is CancellationError {
            return  // stopped before the broker was there
        }
        try await service.run()
    }
}
