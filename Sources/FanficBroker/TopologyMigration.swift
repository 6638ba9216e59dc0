import AMQP
import FanficCore
import Foundation
import Logging

/// Re-creates the queues whose arguments changed since the version that declared them, keeping
/// their messages. RabbitMQ refuses to declare an existing queue with other arguments
/// (PRECONDITION_FAILED, 406), and a queue's arguments cannot be changed in place: its messages
/// go to a holding queue, the queue is deleted and declared anew, and they come back, each move
/// a confirmed publish before the ack (a crash repeats a message, never loses one; running it
/// again finishes an interrupted migration).
///
/// The admin's tool (`fanfic topology --migrate`): it moves messages through the default
/// exchange, which no role may use, and it refuses a queue that has consumers.
public struct TopologyMigration: Sendable {
    public let bus: any MessageBus
    public let logger: Logger

    public init(bus: any MessageBus, logger: Logger) {
        self.bus = bus
        self.logger = logger
    }

    /// A queue that could not be migrated, and why.
    public struct Refusal: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// The holding queue of a queue being migrated.
    public static func holdingQueue(of name: String) -> String { "fanfic.migrating.\(name)" }

    /// Whether an error is RabbitMQ's refusal to redeclare a queue with other arguments.
    public static func isInequivalent(_ error: any Error) -> Bool {
        (error as? AMQPError)?.replyCode == 406
    }

    /// Migrates each queue of `topology` that needs it, then declares the whole topology.
    /// Returns the migrated queues with how many messages each held.
    public func migrate(_ topology: AMQPTopology) async throws -> [(queue: String, messages: Int)] {
        var migrated: [(String, Int)] = []
        for spec in topology.queues where !spec.exclusive {
            if let moved = try await migrate(spec) { migrated.append((spec.name, moved)) }
        }
        try await bus.declare(topology, remember: false)
        return migrated
    }

    /// Declares one queue, re-creating it when its arguments changed; nil when nothing had to be done.
    public func migrate(_ spec: QueueSpec) async throws -> Int? {
        let holding = Self.holdingQueue(of: spec.name)
        do {
            try await bus.declare(AMQPTopology(queues: [spec]), remember: false)
            // Declared as it should be; a holding queue left by an interrupted run goes back.
            guard try await bus.queueState(holding) != nil else { return nil }
            let back = try await move(from: holding, to: spec.name)
            try await bus.deleteQueue(holding)
            logger.info(
                "finished an interrupted migration", metadata: ["queue": "\(spec.name)", "messages": "\(back)"])
            return back
        } catch let error where Self.isInequivalent(error) {
            logger.info(
                "queue declared with other arguments", metadata: ["queue": "\(spec.name)", "amqp.error": "\(error)"])
        }
        if let state = try await bus.queueState(spec.name), state.consumerCount > 0 {
            throw Refusal(
                description:
                    "\(spec.name) has \(state.consumerCount) consumer(s): stop the coordinator, workers and ingester, then migrate"
            )
        }
        try await bus.declare(AMQPTopology(queues: [QueueSpec.quorum(holding)]), remember: false)
        let moved = try await move(from: spec.name, to: holding)
        try await bus.deleteQueue(spec.name)
        try await bus.declare(AMQPTopology(queues: [spec]), remember: false)
        let back = try await move(from: holding, to: spec.name)
        try await bus.deleteQueue(holding)
        logger.notice(
            "queue re-created with this version's arguments",
            metadata: ["queue": "\(spec.name)", "messages": "\(moved)"])
        return max(moved, back)
    }

    /// The worker ids in the `fanfic.workers` registry (whose queues may need migrating), read
    /// and given back; ids that are not valid worker ids are skipped.
    public func registeredWorkers() async throws -> [String] {
        var taken: [BusMessage] = []
        do {
            while let message = try await bus.get(queue: FanficTopology.workers) { taken.append(message) }
        } catch {
            for message in taken { try? await message.reject(requeue: true) }
            throw error
        }
        let ids = taken.compactMap { message -> String? in
            let id = String(decoding: message.body.prefix(256), as: UTF8.self)
            return FanficConfiguration.workerIDProblem(id) == nil ? id : nil
        }
        for message in taken { try? await message.reject(requeue: true) }
        return Array(Set(ids)).sorted()
    }

    /// Moves every message of `source` to the tail of `target`, properties kept; returns how many.
    private func move(from source: String, to target: String) async throws -> Int {
        var moved = 0
        while let message = try await bus.get(queue: source) {
            do {
                try await bus.publish(
                    message.body, exchange: "", routingKey: target, properties: message.properties, mandatory: true,
                    retryFor: .seconds(30))
            } catch {
                try? await message.reject(requeue: true)
                throw error
            }
            try await message.ack()
            moved += 1
        }
        return moved
    }
}
