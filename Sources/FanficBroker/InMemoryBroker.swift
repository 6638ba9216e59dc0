import AMQP
import Foundation
import Synchronization

/// A broker in memory, for unit tests: exchanges (direct, topic, fanout, and the default
/// exchange), queues with their dead-letter targets, bindings, consumers with prefetch, single
/// active consumers, exclusive queues, unsettled messages. Connect to it with ``InMemoryBus``.
///
/// It refuses what RabbitMQ refuses, with the AMQP client's errors (404 for a missing queue or
/// exchange, 405 for another connection's exclusive queue, `.publishReturned`, ...), so the roles'
/// error handling runs unchanged. No TTLs: a test moves time by hand (``expire(queue:)``).
public final class InMemoryBroker: Sendable {
    /// A message as it sits in a queue.
    public struct Stored: Sendable {
        public var body: Data
        public var properties: AMQPMessageProperties
        public var routingKey: String
        public var redelivered: Bool
    }

    struct Queue {
        var spec: QueueSpec
        var messages: [Stored] = []
        /// The connection that owns an exclusive queue.
        var owner: UInt64?
        var singleActiveConsumer: Bool { spec.arguments["x-single-active-consumer"] == .bool(true) }
    }

    struct Consumer {
        let connection: UInt64
        let queue: String
        let prefetch: Int
        let resumesAfterReconnect: Bool
        let arguments: AMQPTable
        let continuation: AsyncThrowingStream<BusMessage, any Error>.Continuation
        var unsettled = 0
    }

    struct Unsettled {
        let queue: String
        let message: Stored
        let connection: UInt64
        let consumer: UInt64?
    }

    struct Connection {
        var connected = true
        var generation: UInt64 = 1
        var failingPublishes = 0
    }

    struct State {
        var exchanges: [String: ExchangeSpec.Kind] = [:]
        var queues: [String: Queue] = [:]
        /// Queries about queues that do not exist: on RabbitMQ, each is a channel error.
        var missingQueueQueries = 0
        /// Questions about these queues that are to fail, and how many more times.
        var failingQuestions: [String: Int] = [:]
        var bindings: [BindingSpec] = []
        var consumers: [UInt64: Consumer] = [:]
        var unsettled: [UInt64: Unsettled] = [:]
        var connections: [UInt64: Connection] = [:]
        var permissions: [String: Permissions] = [:]
        var nextID: UInt64 = 1

        mutating func makeID() -> UInt64 {
            defer { nextID += 1 }
            return nextID
        }
    }

    /// A message handed to a consumer, yielded once the lock is released.
    typealias Handover = (continuation: AsyncThrowingStream<BusMessage, any Error>.Continuation, message: BusMessage)

    let state = Mutex(State())

    public init(topology: AMQPTopology = AMQPTopology()) {
        state.withLock { state in
            do {
                try Self.declare(topology, by: nil, in: &state)
            } catch {
                preconditionFailure("a fresh in-memory broker refused its topology: \(error)")
            }
        }
    }

    /// A user's permissions, as RabbitMQ's `set_permissions` gives them: three regular
    /// expressions over resource names. A user without any may do everything.
    public struct Permissions: Sendable {
        public enum Kind: String, Sendable { case configure, write, read }
        public var configure: String
        public var write: String
        public var read: String

        public init(configure: String, write: String, read: String) {
            self.configure = configure
            self.write = write
            self.read = read
        }

        func allows(_ kind: Kind, _ resource: String) -> Bool {
            let pattern =
                switch kind {
                case .configure: configure
                case .write: write
                case .read: read
                }
            guard !pattern.isEmpty else { return false }
            return resource.range(of: pattern, options: .regularExpression) != nil
        }
    }

    /// Gives `user` these permissions from now on (RabbitMQ's `set_permissions`).
    public func setPermissions(_ permissions: Permissions, for user: String) {
        state.withLock { $0.permissions[user] = permissions }
    }

    /// Throws RabbitMQ's 403 when `user` may not do `kind` to `resource` (the default exchange
    /// is `amq.default`).
    func check(_ kind: Permissions.Kind, _ resource: String, by user: String) throws {
        let name = resource.isEmpty ? "amq.default" : resource
        guard let permissions = state.withLock({ $0.permissions[user] }), !permissions.allows(kind, name) else {
            return
        }
        throw AMQPError(
            .channelClosed, "ACCESS_REFUSED - access to '\(name)' refused for user '\(user)' (\(kind.rawValue))",
            replyCode: 403)
    }

    /// What a queue holds, head first, without taking it.
    public func messages(in queue: String) -> [Stored] {
        state.withLock { $0.queues[queue]?.messages ?? [] }
    }

    /// The arguments of a queue's consumers, oldest first.
    public func consumerArguments(of queue: String) -> [AMQPTable] {
        state.withLock { state in
            state.consumers.sorted { $0.key < $1.key }.filter { $0.value.queue == queue }.map(\.value.arguments)
        }
    }

    /// How many messages of a queue are taken and not yet settled.
    public func unsettled(in queue: String) -> Int {
        state.withLock { $0.unsettled.values.filter { $0.queue == queue }.count }
    }

    /// Whether a queue exists.
    public func hasQueue(_ name: String) -> Bool { state.withLock { $0.queues[name] != nil } }

    /// How many queries asked about a queue that did not exist (on RabbitMQ, each one closes the
    /// asker's channel and puts an error line in the broker's log).
    public var missingQueueQueries: Int { state.withLock { $0.missingQueueQueries } }

    /// The next `times` questions about `queue` (passive declarations) fail, as one that times
    /// out on a busy broker does; the queue itself is unchanged.
    public func failQuestions(about queue: String, times: Int = 1) {
        state.withLock { $0.failingQuestions[queue] = times }
    }

    /// How many of the failures ``failQuestions(about:times:)`` asked for are still to come.
    public func questionFailuresLeft(about queue: String) -> Int {
        state.withLock { $0.failingQuestions[queue] ?? 0 }
    }

    /// Dead-letters every message of a queue to its target, as its TTL would.
    public func expire(queue: String) throws {
        let handovers = try state.withLock { state in
            let expired = state.queues[queue]?.messages ?? []
            state.queues[queue]?.messages = []
            for message in expired { try Self.deadLetter(message, from: queue, in: &state) }
            return self.dispatch(in: &state)
        }
        Self.hand(handovers)
    }

    // MARK: Operations of a connection

    static func declare(_ topology: AMQPTopology, by connection: UInt64?, in state: inout State) throws {
        for exchange in topology.exchanges { state.exchanges[exchange.name] = exchange.kind }
        for queue in topology.queues {
            if let existing = state.queues[queue.name] {
                if let owner = existing.owner, owner != connection {
                    throw AMQPError(
                        .channelClosed, "RESOURCE_LOCKED - cannot obtain exclusive access to queue '\(queue.name)'",
                        replyCode: 405)
                }
                if existing.spec.arguments != queue.arguments || existing.spec.durable != queue.durable {
                    throw AMQPError(
                        .channelClosed,
                        "PRECONDITION_FAILED - inequivalent arguments for queue '\(queue.name)': declared with other arguments",
                        replyCode: 406)
                }
                continue
            }
            state.queues[queue.name] = Queue(spec: queue, owner: queue.exclusive ? connection : nil)
        }
        for binding in topology.bindings {
            guard state.queues[binding.queue] != nil else {
                throw AMQPError(.channelClosed, "NOT_FOUND - no queue '\(binding.queue)'", replyCode: 404)
            }
            if !binding.exchange.isEmpty, state.exchanges[binding.exchange] == nil {
                throw AMQPError(.channelClosed, "NOT_FOUND - no exchange '\(binding.exchange)'", replyCode: 404)
            }
            if !state.bindings.contains(binding) { state.bindings.append(binding) }
        }
    }

    func publish(_ message: Stored, exchange: String, mandatory: Bool, by connection: UInt64) throws {
        let handovers = try state.withLock { state in
            if state.connections[connection]?.failingPublishes ?? 0 > 0 {
                state.connections[connection]?.failingPublishes -= 1
                throw AMQPError(.connectionLost, "the connection to the in-memory broker is lost")
            }
            let routed = try Self.route(message, exchange: exchange, in: &state)
            if routed == 0 && mandatory {
                throw AMQPError(.publishReturned, "NO_ROUTE - no queue takes \(message.routingKey) on '\(exchange)'")
            }
            return dispatch(in: &state)
        }
        Self.hand(handovers)
    }

    func get(queue: String, by connection: UInt64) throws -> BusMessage? {
        try state.withLock { state in
            guard var stored = state.queues[queue] else {
                throw AMQPError(.channelClosed, "NOT_FOUND - no queue '\(queue)'", replyCode: 404)
            }
            guard !stored.messages.isEmpty else { return nil }
            let head = stored.messages.removeFirst()
            state.queues[queue] = stored
            return self.handOut(head, from: queue, to: connection, consumer: nil, in: &state)
        }
    }

    func consume(
        queue: String, prefetch: UInt16, resumesAfterReconnect: Bool, arguments: AMQPTable, by connection: UInt64
    ) -> BusSubscription {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: BusMessage.self)
        let handovers: [Handover] = state.withLock { state in
            guard state.queues[queue] != nil else {
                continuation.finish(
                    throwing: AMQPError(.channelClosed, "NOT_FOUND - no queue '\(queue)'", replyCode: 404))
                return []
            }
            let id = state.makeID()
            state.consumers[id] = Consumer(
                connection: connection, queue: queue, prefetch: Int(max(prefetch, 1)),
                resumesAfterReconnect: resumesAfterReconnect, arguments: arguments, continuation: continuation)
            continuation.onTermination = { [weak self] _ in self?.cancel(consumer: id) }
            return self.dispatch(in: &state)
        }
        Self.hand(handovers)
        return BusSubscription(stream)
    }

    private func cancel(consumer id: UInt64) {
        let handovers = state.withLock { state in
            state.consumers[id] = nil
            return self.dispatch(in: &state)
        }
        Self.hand(handovers)
    }

    /// Records a message as unsettled by `connection` and wraps it for the taker.
    private func handOut(
        _ message: Stored, from queue: String, to connection: UInt64, consumer: UInt64?, in state: inout State
    ) -> BusMessage {
        let tag = state.makeID()
        state.unsettled[tag] = Unsettled(queue: queue, message: message, connection: connection, consumer: consumer)
        return BusMessage(
            body: message.body, properties: message.properties, routingKey: message.routingKey,
            redelivered: message.redelivered
        ) { [weak self] settlement in
            try self?.settle(tag, settlement)
        }
    }

    private func settle(_ tag: UInt64, _ settlement: BusMessage.Settlement) throws {
        let handovers = try state.withLock { state in
            guard let taken = state.unsettled.removeValue(forKey: tag) else {
                throw AMQPError(.staleDelivery, "the message was already settled, or its connection is gone")
            }
            if let consumer = taken.consumer { state.consumers[consumer]?.unsettled -= 1 }
            switch settlement {
            case .ack:
                break
            case .reject(requeue: true):
                var again = taken.message
                again.redelivered = true
                state.queues[taken.queue]?.messages.insert(again, at: 0)
            case .reject(requeue: false):
                try Self.deadLetter(taken.message, from: taken.queue, in: &state)
            }
            return self.dispatch(in: &state)
        }
        Self.hand(handovers)
    }

    func deleteQueue(_ name: String) throws -> UInt32 {
        let (count, ended) = state.withLock {
            state -> (UInt32, [AsyncThrowingStream<BusMessage, any Error>.Continuation]) in
            guard let queue = state.queues.removeValue(forKey: name) else { return (0, []) }
            state.bindings.removeAll { $0.queue == name }
            let consumers = state.consumers.filter { $0.value.queue == name }
            for id in consumers.keys { state.consumers[id] = nil }
            return (UInt32(queue.messages.count), consumers.values.map(\.continuation))
        }
        for continuation in ended {
            continuation.finish(throwing: AMQPError(.consumerCancelled, "the queue '\(name)' was deleted"))
        }
        return count
    }

    /// `queue.delete` with if-unused and if-empty: nothing happens to a queue in use.
    func deleteQueueIfIdle(_ name: String) throws -> Bool {
        let busy = state.withLock { state -> Bool in
            guard let queue = state.queues[name] else { return false }
            let consumed = state.consumers.values.contains { $0.queue == name }
            let unsettled = state.unsettled.values.contains { $0.queue == name }
            return consumed || unsettled || !queue.messages.isEmpty
        }
        if busy { return false }
        _ = try deleteQueue(name)
        return true
    }

    func purgeQueue(_ name: String) throws -> UInt32 {
        try state.withLock { state in
            guard let queue = state.queues[name] else {
                throw AMQPError(.channelClosed, "NOT_FOUND - no queue '\(name)'", replyCode: 404)
            }
            state.queues[name]?.messages = []
            return UInt32(queue.messages.count)
        }
    }

    func queueState(_ name: String) throws -> QueueState? {
        try state.withLock { state in
            if let left = state.failingQuestions[name], left > 0 {
                state.failingQuestions[name] = left - 1
                throw AMQPError(.connectionLost, "no answer about '\(name)' (a failure the test asked for)")
            }
            guard let queue = state.queues[name] else {
                state.missingQueueQueries += 1
                return nil
            }
            let consumers = state.consumers.values.filter {
                $0.queue == name && state.connections[$0.connection]?.connected == true
            }
            return QueueState(
                name: name, messageCount: UInt32(queue.messages.count), consumerCount: UInt32(consumers.count))
        }
    }

    /// The connection drops, as when the network or the broker goes: its unsettled messages go
    /// back to their queues, its exclusive queues are deleted, its subscriptions pause (or end
    /// with `.connectionLost` when they do not resume).
    func disconnect(_ connection: UInt64) {
        let (handovers, ended) = state.withLock {
            state -> ([Handover], [AsyncThrowingStream<BusMessage, any Error>.Continuation]) in
            state.connections[connection]?.connected = false
            for (tag, taken) in state.unsettled where taken.connection == connection {
                state.unsettled[tag] = nil
                var again = taken.message
                again.redelivered = true
                state.queues[taken.queue]?.messages.insert(again, at: 0)
            }
            var ended: [AsyncThrowingStream<BusMessage, any Error>.Continuation] = []
            for (id, consumer) in state.consumers where consumer.connection == connection {
                state.consumers[id]?.unsettled = 0
                if !consumer.resumesAfterReconnect {
                    state.consumers[id] = nil
                    ended.append(consumer.continuation)
                }
            }
            for (name, queue) in state.queues where queue.owner == connection {
                state.queues[name] = nil
                state.bindings.removeAll { $0.queue == name }
            }
            return (self.dispatch(in: &state), ended)
        }
        for continuation in ended {
            continuation.finish(throwing: AMQPError(.connectionLost, "the connection to the in-memory broker is lost"))
        }
        Self.hand(handovers)
    }

    func reconnect(_ connection: UInt64) {
        let handovers = state.withLock { state in
            state.connections[connection]?.connected = true
            state.connections[connection]?.generation += 1
            return self.dispatch(in: &state)
        }
        Self.hand(handovers)
    }

    // MARK: Routing

    /// Hands queued messages to consumers with room under their prefetch; the first consumer of a
    /// single-active-consumer queue takes all, the others take turns.
    func dispatch(in state: inout State) -> [Handover] {
        var handovers: [Handover] = []
        let consumerIDs = state.consumers.keys.sorted()
        for name in state.queues.keys {
            var candidates = consumerIDs.filter {
                state.consumers[$0]?.queue == name
                    && state.connections[state.consumers[$0]!.connection]?.connected == true
            }
            if state.queues[name]!.singleActiveConsumer { candidates = Array(candidates.prefix(1)) }
            var turn = 0
            while !(state.queues[name]?.messages.isEmpty ?? true) {
                let ready = candidates.filter { state.consumers[$0]!.unsettled < state.consumers[$0]!.prefetch }
                guard !ready.isEmpty else { break }
                let id = ready[turn % ready.count]
                turn += 1
                let message = state.queues[name]!.messages.removeFirst()
                state.consumers[id]!.unsettled += 1
                let consumer = state.consumers[id]!
                handovers.append(
                    (
                        consumer.continuation,
                        handOut(message, from: name, to: consumer.connection, consumer: id, in: &state)
                    ))
            }
        }
        return handovers
    }

    static func hand(_ handovers: [Handover]) {
        for handover in handovers { handover.continuation.yield(handover.message) }
    }

    /// Puts the message in every queue the exchange routes it to; returns how many.
    static func route(_ message: Stored, exchange: String, in state: inout State) throws -> Int {
        let targets: Set<String>
        if exchange.isEmpty {
            targets = state.queues[message.routingKey] == nil ? [] : [message.routingKey]
        } else {
            guard let kind = state.exchanges[exchange] else {
                throw AMQPError(.channelClosed, "NOT_FOUND - no exchange '\(exchange)'", replyCode: 404)
            }
            targets = Set(
                state.bindings.filter { binding in
                    guard binding.exchange == exchange else { return false }
                    switch kind {
                    case .fanout: return true
                    case .topic: return topicMatches(binding.routingKey, message.routingKey)
                    default: return binding.routingKey == message.routingKey
                    }
                }.map(\.queue))
        }
        for queue in targets { state.queues[queue]?.messages.append(message) }
        return targets.count
    }

    static func deadLetter(_ message: Stored, from queue: String, in state: inout State) throws {
        guard let arguments = state.queues[queue]?.spec.arguments,
            case .string(let exchange) = arguments["x-dead-letter-exchange"]
        else { return }  // no target: dropped, as RabbitMQ does
        var message = message
        if case .string(let key) = arguments["x-dead-letter-routing-key"] { message.routingKey = key }
        _ = try route(message, exchange: exchange, in: &state)
    }

    /// AMQP topic matching: `*` is one word, `#` zero or more.
    static func topicMatches(_ pattern: String, _ key: String) -> Bool {
        func match(_ pattern: ArraySlice<Substring>, _ words: ArraySlice<Substring>) -> Bool {
            guard let first = pattern.first else { return words.isEmpty }
            if first == "#" {
                return (0...words.count).contains { match(pattern.dropFirst(), words.dropFirst($0)) }
            }
            guard let word = words.first, first == "*" || first == word else { return false }
            return match(pattern.dropFirst(), words.dropFirst())
        }
        return match(
            ArraySlice(pattern.split(separator: ".", omittingEmptySubsequences: false)),
            ArraySlice(key.split(separator: ".", omittingEmptySubsequences: false)))
    }
}
