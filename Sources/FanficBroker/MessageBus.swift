import AMQP
import Foundation

/// The broker operations the roles use, so that their logic runs against RabbitMQ
/// (``AMQPMessageBus``) or, in unit tests, against ``InMemoryBus`` in milliseconds.
///
/// Only what is needed so far: confirmed publishing, fetching one message, and a queue's depth.
/// Consumers and the rest of the topology operations still use ``AMQP/AMQPConnection`` directly.
public protocol MessageBus: Sendable {
    /// Publishes one message and returns once the broker has confirmed it. `mandatory`: a message
    /// that no queue takes is an error, not a silent loss. `retryFor`: retryable failures are
    /// tried again until that much time has passed.
    func publish(
        _ body: Data, exchange: String, routingKey: String, properties: AMQPMessageProperties, mandatory: Bool,
        retryFor: Duration?
    ) async throws

    /// Takes one message from a queue, or `nil` when it is empty; it must be settled.
    func get(queue: String) async throws -> BusMessage?

    /// A queue's depth and consumers, or `nil` when it does not exist.
    func queueState(_ name: String) async throws -> QueueState?
}

/// One message taken from a queue, to be settled exactly once.
public struct BusMessage: Sendable {
    /// How a message is settled.
    public enum Settlement: Sendable, Hashable {
        /// Handled: the broker forgets it.
        case ack
        /// Back to the queue when `requeue`, else to the queue's dead-letter target.
        case reject(requeue: Bool)
    }

    public let body: Data
    public let properties: AMQPMessageProperties
    public let routingKey: String
    public let redelivered: Bool
    let settleAction: @Sendable (Settlement) async throws -> Void

    public init(
        body: Data, properties: AMQPMessageProperties, routingKey: String, redelivered: Bool,
        settle: @escaping @Sendable (Settlement) async throws -> Void
    ) {
        self.body = body
        self.properties = properties
        self.routingKey = routingKey
        self.redelivered = redelivered
        self.settleAction = settle
    }

    public func ack() async throws { try await settleAction(.ack) }
    public func reject(requeue: Bool) async throws { try await settleAction(.reject(requeue: requeue)) }
}

/// ``MessageBus`` over the AMQP client: RabbitMQ.
public struct AMQPMessageBus: MessageBus {
    public let connection: AMQPConnection

    public init(_ connection: AMQPConnection) { self.connection = connection }

    public func publish(
        _ body: Data, exchange: String, routingKey: String, properties: AMQPMessageProperties, mandatory: Bool,
        retryFor: Duration?
    ) async throws {
        try await connection.publish(
            body, exchange: exchange, routingKey: routingKey, properties: properties, mandatory: mandatory,
            retryFor: retryFor)
    }

    public func get(queue: String) async throws -> BusMessage? {
        guard let delivery = try await connection.get(queue: queue) else { return nil }
        return BusMessage(
            body: delivery.body, properties: delivery.properties, routingKey: delivery.routingKey,
            redelivered: delivery.redelivered
        ) { settlement in
            switch settlement {
            case .ack: try await delivery.ack()
            case .reject(let requeue): try await delivery.reject(requeue: requeue)
            }
        }
    }

    public func queueState(_ name: String) async throws -> QueueState? {
        try await connection.queueState(name)
    }
}
