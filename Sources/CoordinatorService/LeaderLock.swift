import AMQP

/// One active coordinator, any number of standbys: the active one holds an exclusive queue.
///
/// The broker lets one connection at a time declare an exclusive queue of a given name (others
/// get 405 RESOURCE_LOCKED) and deletes it when that connection goes away, so holding the queue
/// is holding the lock, and a crashed or partitioned coordinator loses it as soon as the broker
/// notices (heartbeats). Single active consumer on `fanfic.ingress` alone would not do: the
/// control queue has to follow the same coordinator, and SAC does not say who is active.
struct LeaderLock: Sendable {
    /// The queue whose existence says "a coordinator is active"; `fanfic status` reads it.
    static let queueName = "fanfic.coordinator.active"

    let connection: AMQPConnection

    /// Tries once. True when this connection now holds the lock (or already did).
    func tryAcquire() async throws -> Bool {
        do {
            // Not remembered for reconnects: after a reconnect the lock must be won again.
            _ = try await connection.declareQueue(
                QueueSpec(name: Self.queueName, durable: false, exclusive: true, autoDelete: false))
            return true
        } catch let error as AMQPError where error.code == .channelClosed && error.replyCode == 405 {
            return false
        }
    }
}
