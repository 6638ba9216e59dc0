import Foundation

/// One message handed to a consumer (or fetched with `get`), to be settled exactly once with
/// `ack()`, `nack(requeue:)` or `reject(requeue:)`.
///
/// Settling after the connection or channel that carried it is gone throws `.staleDelivery`:
/// the broker has already put the message back and will deliver it again.
public struct AMQPDelivery: Sendable {
    public let body: Data
    public let properties: AMQPMessageProperties
    public let exchange: String
    public let routingKey: String
    /// The broker delivered this message before (to this or another consumer).
    public let redelivered: Bool
    public let deliveryTag: UInt64
    /// Messages left in the queue after this one (`basic.get` only).
    public let messageCount: UInt32?

    let token: DeliveryToken
    let connection: AMQPConnection

    /// Confirms the message is handled; the broker forgets it.
    public func ack() async throws {
        try await connection.settle(token, .ack)
    }

    /// Gives the message back: to the queue when `requeue`, else to its dead-letter target.
    public func nack(requeue: Bool) async throws {
        try await connection.settle(token, .nack(requeue: requeue))
    }

    /// Refuses the message (same effect as `nack` for one message).
    public func reject(requeue: Bool) async throws {
        try await connection.settle(token, .reject(requeue: requeue))
    }

    /// `ack()` without waiting for it: it goes out in order with this connection's other work.
    /// A failure is not reported; the broker then delivers the message again.
    public func ackWithoutWaiting() {
        connection.settleWithoutWaiting(token, .ack)
    }
}

/// Identifies the channel incarnation a delivery came on, so a settle after a reconnect or a
/// channel reopen is recognised as stale instead of acking some other message.
struct DeliveryToken: Sendable, Hashable {
    let channel: UInt16
    let channelEpoch: UInt64
    let tag: UInt64
    let consumerID: UInt64?
}

enum Settlement: Sendable {
    case ack
    case nack(requeue: Bool)
    case reject(requeue: Bool)
}
