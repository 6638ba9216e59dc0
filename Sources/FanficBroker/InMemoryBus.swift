import AMQP
import Foundation
import Synchronization

/// One connection to an ``InMemoryBroker``: a ``MessageBus`` for unit tests. Several
/// connections to one broker behave like processes sharing a RabbitMQ (exclusive queues are
/// one connection's; a dropped connection gives its unsettled messages back).
public final class InMemoryBus: MessageBus {
    public let broker: InMemoryBroker
    let id: UInt64
    /// The user this connection logged in as: the `user_id` of what it publishes.
    public let user: String

    public init(broker: InMemoryBroker, user: String = "guest") {
        self.broker = broker
        self.user = user
        id = broker.state.withLock { state in
            let id = state.makeID()
            state.connections[id] = InMemoryBroker.Connection()
            return id
        }
    }

    /// A connection to a broker of its own that holds `topology`.
    public convenience init(topology: AMQPTopology = AMQPTopology(), user: String = "guest") {
        self.init(broker: InMemoryBroker(topology: topology), user: user)
    }

    // MARK: For tests

    /// What a queue holds, head first, without taking it.
    public func messages(in queue: String) -> [InMemoryBroker.Stored] { broker.messages(in: queue) }

    /// Dead-letters every message of a queue to its target, as its TTL would.
    public func expire(queue: String) throws { try broker.expire(queue: queue) }

    /// The next `count` publishes of this connection fail as if the connection were lost.
    public func failPublishes(_ count: Int) {
        broker.state.withLock { $0.connections[id]?.failingPublishes = count }
    }

    /// The connection drops (see ``InMemoryBroker``); ``reconnect()`` brings it back.
    public func disconnect() { broker.disconnect(id) }

    /// Connected again, under a new ``generation``.
    public func reconnect() { broker.reconnect(id) }

    // MARK: MessageBus

    private var connection: InMemoryBroker.Connection {
        broker.state.withLock { $0.connections[id] ?? InMemoryBroker.Connection(connected: false) }
    }

    public var generation: UInt64 { connection.generation }
    public var isConnected: Bool { connection.connected }

    public func waitUntilConnected(timeout: Duration) async throws {
        let deadline = ContinuousClock.now + timeout
        while !isConnected {
            guard ContinuousClock.now < deadline else {
                throw AMQPError(.notConnected, "the in-memory broker is not reachable")
            }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    private func requireConnection() throws {
        guard isConnected else { throw AMQPError(.notConnected, "the in-memory broker is not reachable") }
    }

    public func declare(_ topology: AMQPTopology, remember: Bool) async throws {
        try requireConnection()
        for exchange in topology.exchanges { try broker.check(.configure, exchange.name, by: user) }
        for queue in topology.queues {
            try broker.check(.configure, queue.name, by: user)
            if case .string(let target) = queue.arguments["x-dead-letter-exchange"] {
                try broker.check(.write, target, by: user)
                try broker.check(.read, queue.name, by: user)
            }
        }
        for binding in topology.bindings {
            try broker.check(.write, binding.queue, by: user)
            try broker.check(.read, binding.exchange, by: user)
        }
        try broker.state.withLock { try InMemoryBroker.declare(topology, by: id, in: &$0) }
    }

    @discardableResult public func deleteQueue(_ name: String) async throws -> UInt32 {
        try requireConnection()
        try broker.check(.configure, name, by: user)
        return try broker.deleteQueue(name)
    }

    public func deleteQueueIfIdle(_ name: String) async throws -> Bool {
        try requireConnection()
        try broker.check(.configure, name, by: user)
        return try broker.deleteQueueIfIdle(name)
    }

    @discardableResult public func purgeQueue(_ name: String) async throws -> UInt32 {
        try requireConnection()
        try broker.check(.read, name, by: user)
        return try broker.purgeQueue(name)
    }

    public func queueState(_ name: String) async throws -> QueueState? {
        try requireConnection()
        return try broker.queueState(name)
    }

    public func exchangeExists(_ name: String) async throws -> Bool {
        try requireConnection()
        return name.isEmpty || broker.state.withLock { $0.exchanges[name] != nil }
    }

    public func publish(
        _ body: Data, exchange: String, routingKey: String, properties: AMQPMessageProperties, mandatory: Bool,
        retryFor: Duration?
    ) async throws {
        try store(body, exchange: exchange, routingKey: routingKey, properties: properties, mandatory: mandatory)
    }

    private func store(
        _ body: Data, exchange: String, routingKey: String, properties: AMQPMessageProperties, mandatory: Bool
    ) throws {
        try requireConnection()
        try broker.check(.write, exchange, by: user)
        var properties = properties
        properties.userID = user  // as AMQPMessageBus stamps it
        try broker.publish(
            InMemoryBroker.Stored(body: body, properties: properties, routingKey: routingKey, redelivered: false),
            exchange: exchange, mandatory: mandatory, by: id)
    }

    /// Stored (or refused) before it returns, so `submitted` comes after.
    public func publish(
        _ body: Data, exchange: String, routingKey: String, properties: AMQPMessageProperties, mandatory: Bool,
        submitted: @escaping @Sendable () -> Void
    ) async throws {
        defer { submitted() }
        try store(body, exchange: exchange, routingKey: routingKey, properties: properties, mandatory: mandatory)
    }

    /// Stored (or refused), and `confirmed` told, before it returns.
    public func publish(
        _ body: Data, exchange: String, routingKey: String, properties: AMQPMessageProperties, mandatory: Bool,
        confirmed: @escaping @Sendable ((any Error)?) -> Void
    ) {
        do {
            try store(body, exchange: exchange, routingKey: routingKey, properties: properties, mandatory: mandatory)
            confirmed(nil)
        } catch {
            confirmed(error)
        }
    }

    public func get(queue: String) async throws -> BusMessage? {
        try requireConnection()
        try broker.check(.read, queue, by: user)
        return try broker.get(queue: queue, by: id)
    }

    public func consume(
        queue: String, prefetch: UInt16, resumesAfterReconnect: Bool, arguments: AMQPTable
    ) -> BusSubscription {
        do {
            try broker.check(.read, queue, by: user)
        } catch {
            return BusSubscription(AsyncThrowingStream { throw error })
        }
        return broker.consume(
            queue: queue, prefetch: prefetch, resumesAfterReconnect: resumesAfterReconnect, arguments: arguments,
            by: id)
    }
}
