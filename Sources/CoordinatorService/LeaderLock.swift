import AMQP
import FanficBroker

/// One active coordinator, any number of standbys: the active one holds the ``BrokerLock``
/// `fanfic.coordinator.active`, so a crashed or partitioned coordinator loses it as soon as the
/// broker notices (heartbeats). Single active consumer on `fanfic.ingress` alone would not do:
/// the control queue has to follow the same coordinator, and SAC does not say who is active.
struct LeaderLock: Sendable {
    /// The queue whose existence says "a coordinator is active".
    static let queueName = FanficTopology.coordinatorLock

    let connection: AMQPConnection

    /// Tries once. True when this connection now holds the lock (or already did).
    func tryAcquire() async throws -> Bool {
        try await BrokerLock(Self.queueName, connection: connection).tryAcquire()
    }
}
