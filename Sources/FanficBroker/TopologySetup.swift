import AMQP
import Logging

/// How a role makes sure the topology it uses exists. The coordinator (or an admin, with
/// `fanfic topology`) owns it; under least privilege no other role may declare it (RabbitMQ
/// answers 403, ACCESS_REFUSED) nor, therefore, delete it. Such a role waits until the exchanges
/// and queues it needs exist, checking passively, which needs no permission.
public enum TopologySetup {
    public enum Outcome: Sendable, Equatable {
        /// This role's user declared the topology.
        case declared
        /// It may not; the topology was found (declared by the coordinator or an admin).
        case found
    }

    /// Declares `topology` (remembered, so declared again after a reconnect); when the user may
    /// not, waits until every exchange and queue of it exists.
    /// - Parameters:
    ///   - waitAtMost: give up after this long with an error that says what is missing (a CLI
    ///     command); `nil` waits for as long as it takes (a service: compose may start it first).
    ///   - every: how often to look.
    @discardableResult
    public static func declareOrAwait(
        _ topology: AMQPTopology, on bus: any MessageBus, logger: Logger, waitAtMost: Duration? = nil,
        every: Duration = .seconds(1)
    ) async throws -> Outcome {
        do {
            try await bus.declare(topology, remember: true)
            return .declared
        } catch let error as AMQPError where error.replyCode == 403 {
            logger.debug("this user may not declare the topology; looking for it", metadata: ["amqp.error": "\(error)"])
        }
        let started = ContinuousClock.now
        var lastWarning = started
        while true {
            guard let missing = try await firstMissing(of: topology, on: bus) else { return .found }
            let now = ContinuousClock.now
            if let waitAtMost, now - started >= waitAtMost {
                throw AMQPError(
                    .channelClosed,
                    "the broker has no \(missing), and this user may not declare it: start the coordinator first",
                    replyCode: 404)
            }
            if now - lastWarning >= .seconds(30) {
                lastWarning = now
                logger.warning(
                    "waiting for the coordinator to declare the topology (this user may not)",
                    metadata: ["missing": "\(missing)"])
            }
            try await Task.sleep(for: every)
        }
    }

    /// The first exchange or queue of `topology` the broker does not have, or nil.
    public static func firstMissing(of topology: AMQPTopology, on bus: any MessageBus) async throws -> String? {
        for exchange in topology.exchanges where try await !bus.exchangeExists(exchange.name) {
            return "exchange \(exchange.name)"
        }
        for queue in topology.queues where try await bus.queueState(queue.name) == nil {
            return "queue \(queue.name)"
        }
        return nil
    }
}
