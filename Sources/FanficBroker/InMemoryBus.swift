import AMQP
import Foundation
import Synchronization

/// ``MessageBus`` in memory: exchanges (direct, topic, fanout, and the default exchange), queues
/// with their dead-letter targets, bindings, unsettled messages. No TTLs, no consumers: a test
/// moves time by hand (``expire(queue:)``). Lets a role's logic be tested in milliseconds.
public final class InMemoryBus: MessageBus {
    /// What the in-memory broker refuses, like RabbitMQ would.
    public struct Refusal: Error, Sendable, CustomStringConvertible {
        public let description: String
    }

    /// A message as it sits in a queue.
    public struct Stored: Sendable {
        public var body: Data
        public var properties: AMQPMessageProperties
        public var routingKey: String
        public var redelivered: Bool
    }

    struct State {
        var exchanges: [String: ExchangeSpec.Kind] = [:]
        var queues: [String: QueueSpec] = [:]
        var bindings: [BindingSpec] = []
        var messages: [String: [Stored]] = [:]
        /// Publishes that fail as if the broker were gone, for tests of what follows.
        var failingPublishes = 0
    }

    private let state = Mutex(State())

    public init(topology: AMQPTopology = AMQPTopology()) {
        declare(topology)
    }

    /// Declares exchanges, queues and bindings (idempotently, like every role does at start).
    public func declare(_ topology: AMQPTopology) {
        state.withLock { state in
            for exchange in topology.exchanges { state.exchanges[exchange.name] = exchange.kind }
            for queue in topology.queues where state.queues[queue.name] == nil {
                state.queues[queue.name] = queue
                state.messages[queue.name] = []
            }
            for binding in topology.bindings where !state.bindings.contains(binding) {
                state.bindings.append(binding)
            }
        }
    }

    /// The next `count` publishes fail with an error, as when the connection is lost.
    public func failPublishes(_ count: Int) {
        state.withLock { $0.failingPublishes = count }
    }

    /// What a queue holds, head first, without taking it.
    public func messages(in queue: String) -> [Stored] {
        state.withLock { $0.messages[queue] ?? [] }
    }

    /// Dead-letters every message of a queue to its target, as its TTL would.
    public func expire(queue: String) throws {
        try state.withLock { state in
            let expired = state.messages[queue] ?? []
            state.messages[queue] = []
            for message in expired { try Self.deadLetter(message, from: queue, in: &state) }
        }
    }

    // MARK: MessageBus

    public func publish(
        _ body: Data, exchange: String, routingKey: String, properties: AMQPMessageProperties, mandatory: Bool,
        retryFor: Duration?
    ) async throws {
        try state.withLock { state in
            if state.failingPublishes > 0 {
                state.failingPublishes -= 1
                throw Refusal(description: "the connection to the in-memory broker is lost")
            }
            let message = Stored(body: body, properties: properties, routingKey: routingKey, redelivered: false)
            let routed = try Self.route(message, exchange: exchange, in: &state)
            if routed == 0 && mandatory {
                throw Refusal(description: "no queue takes \(routingKey) on exchange '\(exchange)'")
            }
        }
    }

    public func get(queue: String) async throws -> BusMessage? {
        let taken: Stored? = try state.withLock { state in
            guard var messages = state.messages[queue] else {
                throw Refusal(description: "no queue '\(queue)'")
            }
            guard !messages.isEmpty else { return nil }
            let head = messages.removeFirst()
            state.messages[queue] = messages
            return head
        }
        guard let taken else { return nil }
        let settled = Atomic<Bool>(false)
        return BusMessage(
            body: taken.body, properties: taken.properties, routingKey: taken.routingKey,
            redelivered: taken.redelivered
        ) { [self] settlement in
            guard !settled.exchange(true, ordering: .relaxed) else {
                throw Refusal(description: "a message settled twice")
            }
            try state.withLock { state in
                switch settlement {
                case .ack:
                    break
                case .reject(requeue: true):
                    var again = taken
                    again.redelivered = true
                    state.messages[queue, default: []].insert(again, at: 0)
                case .reject(requeue: false):
                    try Self.deadLetter(taken, from: queue, in: &state)
                }
            }
        }
    }

    public func queueState(_ name: String) async throws -> QueueState? {
        state.withLock { state in
            state.messages[name].map { QueueState(name: name, messageCount: UInt32($0.count), consumerCount: 0) }
        }
    }

    // MARK: Routing

    /// Puts the message in every queue the exchange routes it to; returns how many.
    private static func route(_ message: Stored, exchange: String, in state: inout State) throws -> Int {
        let targets: [String]
        if exchange.isEmpty {
            targets = state.queues[message.routingKey] == nil ? [] : [message.routingKey]
        } else {
            guard let kind = state.exchanges[exchange] else {
                throw Refusal(description: "no exchange '\(exchange)'")
            }
            targets = state.bindings.filter { binding in
                guard binding.exchange == exchange else { return false }
                switch kind {
                case .fanout: return true
                case .topic: return topicMatches(binding.routingKey, message.routingKey)
                default: return binding.routingKey == message.routingKey
                }
            }.map(\.queue)
        }
        for queue in Set(targets) { state.messages[queue, default: []].append(message) }
        return Set(targets).count
    }

    private static func deadLetter(_ message: Stored, from queue: String, in state: inout State) throws {
        guard let arguments = state.queues[queue]?.arguments,
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
