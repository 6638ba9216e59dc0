import AMQP
import Foundation

/// The broker operations the roles use, so that their logic runs against RabbitMQ
/// (``AMQPMessageBus``) or, in unit tests, against ``InMemoryBus`` in milliseconds.
///
/// One value is one connection: its ``generation`` changes at every reconnect, exclusive queues
/// (the leader lock, the Content Server's write lock) belong to it, and every message it publishes
/// carries its user as `user_id` (which the broker checks). Errors are the AMQP client's
/// (``AMQP/AMQPError``), from either implementation, so a caller matches one set of codes.
public protocol MessageBus: Sendable {
    // MARK: The connection

    /// Changes every time the connection is (re)established: what was true of an older
    /// generation (a lock held, a subscription) may no longer be.
    var generation: UInt64 { get }
    var isConnected: Bool { get }
    /// Returns once connected; throws `.notConnected` after `timeout`.
    func waitUntilConnected(timeout: Duration) async throws

    // MARK: Topology

    /// Declares exchanges, queues and bindings. `remember`: declared again after each reconnect.
    func declare(_ topology: AMQPTopology, remember: Bool) async throws
    /// Deletes a queue; returns how many messages it held.
    @discardableResult func deleteQueue(_ name: String) async throws -> UInt32
    /// Deletes a queue only if it holds no message and has no consumer; returns whether it did
    /// (a queue that is gone counts as deleted).
    func deleteQueueIfIdle(_ name: String) async throws -> Bool
    /// Empties a queue; returns how many messages it held.
    @discardableResult func purgeQueue(_ name: String) async throws -> UInt32
    /// A queue's depth and consumers, or `nil` when it does not exist (needs no permission).
    func queueState(_ name: String) async throws -> QueueState?
    /// Whether an exchange exists (needs no permission).
    func exchangeExists(_ name: String) async throws -> Bool

    // MARK: Messages

    /// Publishes one message and returns once the broker has confirmed it. `mandatory`: a message
    /// that no queue takes is an error, not a silent loss. `retryFor`: retryable failures are
    /// tried again until that much time has passed.
    func publish(
        _ body: Data, exchange: String, routingKey: String, properties: AMQPMessageProperties, mandatory: Bool,
        retryFor: Duration?
    ) async throws

    /// ``publish(_:exchange:routingKey:properties:mandatory:retryFor:)`` without retries, calling
    /// `submitted` once the message holds its place in this bus's outgoing order (before the
    /// confirm): a publish started after that call reaches its queue after this one.
    func publish(
        _ body: Data, exchange: String, routingKey: String, properties: AMQPMessageProperties, mandatory: Bool,
        submitted: @escaping @Sendable () -> Void
    ) async throws

    /// Publishes one message without waiting for it; `confirmed` hears how it ended (nil: the
    /// broker confirmed it) and must return at once. Not retried. The message holds its place in
    /// this bus's outgoing order when the call returns.
    func publish(
        _ body: Data, exchange: String, routingKey: String, properties: AMQPMessageProperties, mandatory: Bool,
        confirmed: @escaping @Sendable ((any Error)?) -> Void)

    /// Takes one message from a queue, or `nil` when it is empty; it must be settled.
    func get(queue: String) async throws -> BusMessage?

    /// Subscribes to a queue: at most `prefetch` unsettled messages at once. The sequence ends
    /// normally when the connection is closed, with an error when the queue is refused or deleted;
    /// `resumesAfterReconnect: false` also ends it (`.connectionLost`) when the connection drops,
    /// for a consumer that must ask again before it takes more work. Use ``BusSubscription/decoded(_:)``
    /// to read typed messages without a bad one ending the loop.
    /// `arguments`: the consumer's (`x-consumer-timeout`, ...).
    func consume(queue: String, prefetch: UInt16, resumesAfterReconnect: Bool, arguments: AMQPTable) -> BusSubscription
}

extension MessageBus {
    public func declare(_ topology: AMQPTopology) async throws { try await declare(topology, remember: true) }

    public func publish(
        _ body: Data, exchange: String, routingKey: String, properties: AMQPMessageProperties,
        mandatory: Bool = false
    ) async throws {
        try await publish(
            body, exchange: exchange, routingKey: routingKey, properties: properties, mandatory: mandatory,
            retryFor: nil)
    }

    public func consume(queue: String, prefetch: UInt16) -> BusSubscription {
        consume(queue: queue, prefetch: prefetch, resumesAfterReconnect: true, arguments: [:])
    }

    public func consume(queue: String, prefetch: UInt16, resumesAfterReconnect: Bool) -> BusSubscription {
        consume(queue: queue, prefetch: prefetch, resumesAfterReconnect: resumesAfterReconnect, arguments: [:])
    }
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
    let ackAction: (@Sendable () -> Void)?

    /// `ackWithoutWaiting`: how to ack without waiting for the outcome, when the bus can (else a
    /// task of its own awaits `settle`).
    public init(
        body: Data, properties: AMQPMessageProperties, routingKey: String, redelivered: Bool,
        settle: @escaping @Sendable (Settlement) async throws -> Void,
        ackWithoutWaiting: (@Sendable () -> Void)? = nil
    ) {
        self.body = body
        self.properties = properties
        self.routingKey = routingKey
        self.redelivered = redelivered
        self.settleAction = settle
        self.ackAction = ackWithoutWaiting
    }

    public func ack() async throws { try await settleAction(.ack) }
    public func reject(requeue: Bool) async throws { try await settleAction(.reject(requeue: requeue)) }

    /// Acks in order with the bus's other work, without waiting to hear how it went (a failed ack
    /// leaves the message to be delivered again, which every consumer here tolerates).
    public func ackWithoutWaiting() {
        if let ackAction {
            ackAction()
        } else {
            Task { [settleAction] in try? await settleAction(.ack) }
        }
    }
}

/// The messages of one subscription, in order (see ``MessageBus/consume(queue:prefetch:resumesAfterReconnect:)``).
public struct BusSubscription: AsyncSequence, Sendable {
    public typealias Element = BusMessage
    let stream: AsyncThrowingStream<BusMessage, any Error>

    public init(_ stream: AsyncThrowingStream<BusMessage, any Error>) { self.stream = stream }

    public func makeAsyncIterator() -> AsyncThrowingStream<BusMessage, any Error>.AsyncIterator {
        stream.makeAsyncIterator()
    }

    /// The subscription's messages decoded: each element is a result, so a message that does not
    /// decode is an element to park, not an error that ends the loop.
    public func decoded<Value: Sendable>(
        _ decode: @escaping @Sendable (Data) throws -> Value
    ) -> AsyncThrowingMapSequence<BusSubscription, Result<Decoded<Value>, UndecodableMessage>> {
        map { Decoded.decode($0, decode) }
    }
}

/// A message and what it decoded to.
public struct Decoded<Value: Sendable>: Sendable {
    public let value: Value
    public let message: BusMessage

    /// `message` decoded, or why it did not decode.
    public static func decode(
        _ message: BusMessage, _ decode: (Data) throws -> Value
    ) -> Result<Decoded<Value>, UndecodableMessage> {
        do {
            return .success(Decoded(value: try decode(message.body), message: message))
        } catch {
            return .failure(UndecodableMessage(message: message, reason: "\(error)"))
        }
    }
}

/// A message that did not decode, with why: it goes to `fanfic.failed` with the reason.
public struct UndecodableMessage: Error, Sendable {
    public let message: BusMessage
    public let reason: String
}

/// ``MessageBus`` over the AMQP client: RabbitMQ.
public struct AMQPMessageBus: MessageBus {
    public let connection: AMQPConnection

    public init(_ connection: AMQPConnection) { self.connection = connection }

    public var generation: UInt64 { connection.connectionCount }
    public var isConnected: Bool { connection.isConnected }

    public func waitUntilConnected(timeout: Duration) async throws {
        try await connection.waitUntilConnected(timeout: timeout)
    }

    public func declare(_ topology: AMQPTopology, remember: Bool) async throws {
        try await connection.declare(topology, remember: remember)
    }

    @discardableResult public func deleteQueue(_ name: String) async throws -> UInt32 {
        try await connection.deleteQueue(name)
    }

    public func deleteQueueIfIdle(_ name: String) async throws -> Bool {
        do {
            try await connection.deleteQueue(name, ifUnused: true, ifEmpty: true)
            return true
        } catch let error as AMQPError where error.replyCode == 406 {
            return false  // PRECONDITION_FAILED: it has a message or a consumer
        } catch let error as AMQPError where error.replyCode == 404 {
            return true
        }
    }

    @discardableResult public func purgeQueue(_ name: String) async throws -> UInt32 {
        try await connection.purgeQueue(name)
    }

    public func queueState(_ name: String) async throws -> QueueState? {
        try await connection.queueState(name)
    }

    public func exchangeExists(_ name: String) async throws -> Bool {
        try await connection.exchangeExists(name)
    }

    /// Every message carries this connection's user as its `user_id` (a moved message, its mover's):
    /// the broker refuses any other, so a consumer can tell who published what.
    public func publish(
        _ body: Data, exchange: String, routingKey: String, properties: AMQPMessageProperties, mandatory: Bool,
        retryFor: Duration?
    ) async throws {
        try await connection.publish(
            body, exchange: exchange, routingKey: routingKey, properties: stamped(properties), mandatory: mandatory,
            retryFor: retryFor)
    }

    private func stamped(_ properties: AMQPMessageProperties) -> AMQPMessageProperties {
        var properties = properties
        properties.userID = connection.configuration.username
        return properties
    }

    public func publish(
        _ body: Data, exchange: String, routingKey: String, properties: AMQPMessageProperties, mandatory: Bool,
        submitted: @escaping @Sendable () -> Void
    ) async throws {
        try await connection.publish(
            body, exchange: exchange, routingKey: routingKey, properties: stamped(properties), mandatory: mandatory,
            submitted: submitted)
    }

    public func publish(
        _ body: Data, exchange: String, routingKey: String, properties: AMQPMessageProperties, mandatory: Bool,
        confirmed: @escaping @Sendable ((any Error)?) -> Void
    ) {
        connection.publish(
            body, exchange: exchange, routingKey: routingKey, properties: stamped(properties), mandatory: mandatory
        ) {
            confirmed($0)
        }
    }

    public func get(queue: String) async throws -> BusMessage? {
        try await connection.get(queue: queue).map(Self.message)
    }

    public func consume(
        queue: String, prefetch: UInt16, resumesAfterReconnect: Bool, arguments: AMQPTable
    ) -> BusSubscription {
        let consumer = connection.consume(
            queue: queue, prefetch: prefetch, arguments: arguments, resumesAfterReconnect: resumesAfterReconnect)
        // Pulled one at a time by the subscriber: the consumer's own buffer and prefetch apply.
        let source = ConsumerIterator(consumer.makeAsyncIterator())
        return BusSubscription(AsyncThrowingStream { try await source.next().map(Self.message) })
    }

    static func message(_ delivery: AMQPDelivery) -> BusMessage {
        BusMessage(
            body: delivery.body, properties: delivery.properties, routingKey: delivery.routingKey,
            redelivered: delivery.redelivered
        ) { settlement in
            switch settlement {
            case .ack: try await delivery.ack()
            case .reject(let requeue): try await delivery.reject(requeue: requeue)
            }
        } ackWithoutWaiting: {
            delivery.ackWithoutWaiting()
        }
    }
}

/// The AMQP consumer's iterator, advanced by one subscriber at a time (the stream's unfolding
/// closure is never called concurrently).
private final class ConsumerIterator: @unchecked Sendable {
    private var base: AsyncThrowingStream<AMQPDelivery, any Error>.AsyncIterator

    init(_ base: AsyncThrowingStream<AMQPDelivery, any Error>.AsyncIterator) { self.base = base }

    func next() async throws -> AMQPDelivery? { try await base.next() }
}
