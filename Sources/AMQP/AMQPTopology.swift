/// Exchanges, queues and bindings to declare, as plain values.
///
/// A connection re-declares the topology it was given after every reconnect, before any
/// consumer resumes, so a broker that lost its definitions gets them back.
public struct AMQPTopology: Sendable, Hashable {
    public var exchanges: [ExchangeSpec]
    public var queues: [QueueSpec]
    public var bindings: [BindingSpec]

    public init(exchanges: [ExchangeSpec] = [], queues: [QueueSpec] = [], bindings: [BindingSpec] = []) {
        self.exchanges = exchanges
        self.queues = queues
        self.bindings = bindings
    }

    /// This topology plus `other`; a later spec of the same name replaces an earlier one.
    public func merging(_ other: AMQPTopology) -> AMQPTopology {
        func merge<T>(_ mine: [T], _ theirs: [T], key: (T) -> String) -> [T] {
            let replaced = Set(theirs.map(key))
            return mine.filter { !replaced.contains(key($0)) } + theirs
        }
        return AMQPTopology(
            exchanges: merge(exchanges, other.exchanges) { $0.name },
            queues: merge(queues, other.queues) { $0.name },
            bindings: merge(bindings, other.bindings) { "\($0.exchange)\u{0}\($0.queue)\u{0}\($0.routingKey)" }
        )
    }
}

/// An exchange declaration.
public struct ExchangeSpec: Sendable, Hashable {
    public enum Kind: String, Sendable, Hashable {
        case direct, topic, fanout, headers
    }

    public var name: String
    public var kind: Kind
    public var durable: Bool
    public var autoDelete: Bool
    public var arguments: AMQPTable

    public init(name: String, kind: Kind, durable: Bool = true, autoDelete: Bool = false, arguments: AMQPTable = [:]) {
        self.name = name
        self.kind = kind
        self.durable = durable
        self.autoDelete = autoDelete
        self.arguments = arguments
    }
}

/// A queue declaration with its `x-` arguments.
public struct QueueSpec: Sendable, Hashable {
    public var name: String
    public var durable: Bool
    public var exclusive: Bool
    public var autoDelete: Bool
    public var arguments: AMQPTable

    public init(
        name: String,
        durable: Bool = true,
        exclusive: Bool = false,
        autoDelete: Bool = false,
        arguments: AMQPTable = [:]
    ) {
        self.name = name
        self.durable = durable
        self.exclusive = exclusive
        self.autoDelete = autoDelete
        self.arguments = arguments
    }

    /// A durable quorum queue (replicated, survives a node loss in a cluster).
    public static func quorum(_ name: String, arguments: AMQPTable = [:]) -> QueueSpec {
        QueueSpec(name: name, arguments: arguments.merging(["x-queue-type": "quorum"]) { $1 })
    }

    // MARK: Argument helpers

    /// Messages older than this are dead-lettered (or dropped without a target).
    public func messageTTL(milliseconds: Int64) -> QueueSpec { with("x-message-ttl", .int(milliseconds)) }

    /// Where expired or rejected messages go.
    public func deadLetter(exchange: String, routingKey: String? = nil) -> QueueSpec {
        var spec = with("x-dead-letter-exchange", .string(exchange))
        if let routingKey { spec = spec.with("x-dead-letter-routing-key", .string(routingKey)) }
        return spec
    }

    /// Only one consumer receives at a time; the others wait as standbys.
    public func singleActiveConsumer() -> QueueSpec { with("x-single-active-consumer", true) }

    /// Quorum queues: dead-letter a message redelivered more than this many times.
    public func deliveryLimit(_ limit: Int64) -> QueueSpec { with("x-delivery-limit", .int(limit)) }

    /// Quorum queues: a dead-lettered message is kept until its target confirms it (instead of
    /// being dropped if the target is unavailable, e.g. while a node boots). Needs
    /// `reject-publish` overflow, which RabbitMQ requires for this strategy.
    public func atLeastOnceDeadLettering() -> QueueSpec {
        with("x-dead-letter-strategy", "at-least-once").with("x-overflow", "reject-publish")
    }

    /// At most this many messages; past it the oldest are dropped (`drop-head`), so a queue
    /// nobody reads for a long time stays bounded.
    public func maxLength(dropOldestPast limit: Int64) -> QueueSpec {
        with("x-max-length", .int(limit)).with("x-overflow", "drop-head")
    }

    private func with(_ key: String, _ value: AMQPFieldValue) -> QueueSpec {
        var copy = self
        copy.arguments[key] = value
        return copy
    }
}

/// A queue-to-exchange binding.
public struct BindingSpec: Sendable, Hashable {
    public var queue: String
    public var exchange: String
    public var routingKey: String
    public var arguments: AMQPTable

    public init(queue: String, exchange: String, routingKey: String, arguments: AMQPTable = [:]) {
        self.queue = queue
        self.exchange = exchange
        self.routingKey = routingKey
        self.arguments = arguments
    }
}

/// What a passive or active queue declaration reports.
public struct QueueState: Sendable, Hashable {
    public var name: String
    public var messageCount: UInt32
    public var consumerCount: UInt32

    public init(name: String, messageCount: UInt32, consumerCount: UInt32) {
        self.name = name
        self.messageCount = messageCount
        self.consumerCount = consumerCount
    }
}
