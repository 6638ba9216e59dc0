import AMQP
import FanficCore
import Foundation

/// Publishes tasks where DESIGN.md says they go, persistent and confirmed.
public struct TaskPublisher: Sendable {
    public let bus: any MessageBus
    /// How long a publish keeps retrying through reconnects before it gives up.
    public var retryFor: Duration
    /// A parked message's reason is cut to this many characters (`limits.max_reason_length`).
    public var maxReasonLength: Int

    public init(bus: any MessageBus, retryFor: Duration = .seconds(30), maxReasonLength: Int = 2000) {
        self.bus = bus
        self.retryFor = retryFor
        self.maxReasonLength = maxReasonLength
    }

    /// A reason as long as it may be: cut, and marked as cut.
    public static func bounded(_ reason: String, to length: Int) -> String {
        reason.count <= length ? reason : String(reason.prefix(max(0, length - 1))) + "…"
    }

    /// Sends a new task into `fanfic.ingress`; returns once the broker has it on disk.
    public func submit(_ task: TaskMessage) async throws {
        try await publish(task, exchange: FanficTopology.ingress, routingKey: FanficTopology.taskRoutingKey)
    }

    /// Sends a failed task to wait in a retry tier; it comes back to `fanfic.ingress` after the delay.
    /// The message's timestamp says when it began to wait, so that the dashboard can tell how
    /// long it still has (``WaitingRetries``).
    public func scheduleRetry(
        _ task: TaskMessage, tier: RetryLadder.Tier, headers: [String: AMQPFieldValue] = [:], now: Date = Date()
    ) async throws {
        try await publish(
            task, exchange: FanficTopology.retry, routingKey: tier.name, headers: headers,
            timestamp: UInt64(max(0, now.timeIntervalSince1970)))
    }

    /// Parks a task in `fanfic.failed` with the reason it could not be done.
    public func park(_ body: Data, reason: String, properties: AMQPMessageProperties = .persistentJSON()) async throws {
        var properties = properties
        properties.deliveryMode = 2
        properties.headers[FanficTopology.failureReasonHeader] = .string(Self.bounded(reason, to: maxReasonLength))
        try await bus.publish(
            body, exchange: FanficTopology.failed, routingKey: "", properties: properties, mandatory: true,
            retryFor: retryFor)
    }

    /// Parks a message taken from a queue (one that is not a task, or not one to run), then acks
    /// it. If the park is not confirmed the message goes back to its queue: the broker redelivers
    /// it, and past the queue's delivery limit dead-letters it. Nothing is dropped either way.
    public func park(_ message: BusMessage, reason: String) async {
        do {
            try await park(message.body, reason: reason, properties: message.properties)
            try await message.ack()
        } catch {
            try? await message.reject(requeue: true)
        }
    }

    private func publish(
        _ task: TaskMessage, exchange: String, routingKey: String, headers: [String: AMQPFieldValue] = [:],
        timestamp: UInt64? = nil
    ) async throws {
        var properties = AMQPMessageProperties.persistentJSON(messageID: task.id)
        properties.headers.merge(headers) { $1 }
        properties.timestamp = timestamp
        // Mandatory: a task that no queue would take is an error here, not a silent loss.
        try await bus.publish(
            WireCodec.encode(task), exchange: exchange, routingKey: routingKey, properties: properties,
            mandatory: true, retryFor: retryFor)
    }
}
