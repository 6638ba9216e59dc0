import CRabbitMQ

/// One method of a topology declaration, written without waiting for its answer: the connection
/// sends a run of them at once and then reads their answers in order (see
/// `ConnectionLoop.declareTogether(_:)`), one round trip for the lot instead of one each.
enum TopologyMethod: Sendable {
    case exchange(ExchangeSpec)
    case queue(QueueSpec)
    case binding(BindingSpec)

    /// The methods that declare `topology`, exchanges and queues before the bindings that name them.
    static func declaring(_ topology: AMQPTopology) -> [TopologyMethod] {
        topology.exchanges.map(TopologyMethod.exchange) + topology.queues.map(TopologyMethod.queue)
            + topology.bindings.map(TopologyMethod.binding)
    }

    /// What it does, for errors.
    var what: String {
        switch self {
        case .exchange(let spec): "declare exchange '\(spec.name)'"
        case .queue(let spec): "declare queue '\(spec.name)'"
        case .binding(let spec): "bind '\(spec.queue)' to '\(spec.exchange)'"
        }
    }

    /// The method the broker answers it with.
    var replyID: amqp_method_number_t {
        switch self {
        case .exchange: fanfic_amqp_exchange_declare_ok_method
        case .queue: fanfic_amqp_queue_declare_ok_method
        case .binding: fanfic_amqp_queue_bind_ok_method
        }
    }

    /// Writes the method on `channel` (into the socket, or its cork); an `amqp_status_enum` value.
    func send(on connection: amqp_connection_state_t, channel: UInt16) -> Int32 {
        let arena = CArena()
        return withExtendedLifetime(arena) {
            switch self {
            case .exchange(let spec):
                var method = amqp_exchange_declare_t(
                    ticket: 0, exchange: arena.bytes(spec.name), type: arena.bytes(spec.kind.rawValue), passive: 0,
                    durable: spec.durable ? 1 : 0, auto_delete: spec.autoDelete ? 1 : 0, internal: 0, nowait: 0,
                    arguments: arena.table(spec.arguments))
                return amqp_send_method(connection, channel, fanfic_amqp_exchange_declare_method, &method)
            case .queue(let spec):
                var method = amqp_queue_declare_t(
                    ticket: 0, queue: arena.bytes(spec.name), passive: 0, durable: spec.durable ? 1 : 0,
                    exclusive: spec.exclusive ? 1 : 0, auto_delete: spec.autoDelete ? 1 : 0, nowait: 0,
                    arguments: arena.table(spec.arguments))
                return amqp_send_method(connection, channel, fanfic_amqp_queue_declare_method, &method)
            case .binding(let spec):
                var method = amqp_queue_bind_t(
                    ticket: 0, queue: arena.bytes(spec.queue), exchange: arena.bytes(spec.exchange),
                    routing_key: arena.bytes(spec.routingKey), nowait: 0, arguments: arena.table(spec.arguments))
                return amqp_send_method(connection, channel, fanfic_amqp_queue_bind_method, &method)
            }
        }
    }
}

/// A declaration waiting on the connection thread; declarations queued side by side go out
/// together.
struct Declaration: Sendable {
    let topology: AMQPTopology
    /// Declared again after every reconnect.
    let remember: Bool
    /// Hears how it ended (on the connection thread): nil once the broker has answered every method.
    let finish: @Sendable (AMQPError?) -> Void
}
