import AMQP
import Foundation

extension MessageBus {
    /// One pass over the messages `queue` holds now (its count when the pass begins; what arrives
    /// meanwhile waits for the next pass). `take` sees each message: true, it took it (it did
    /// what the message asked, e.g. published it elsewhere, confirmed) and the pass acks it;
    /// false, `putBack` publishes a confirmed copy to the queue's tail and then the original is
    /// acked. Given back with a requeue instead, a quorum queue would count a delivery each time,
    /// and RabbitMQ 4 drops a message past its delivery limit. A message neither taken nor copied
    /// stays unacked and returns when the connection closes: a failure leaves a copy, never a loss.
    ///
    /// `atLeastOneGet`: read even an empty queue, so that a user who may not read it is refused
    /// there rather than told that it holds nothing.
    public func pass(
        over queue: String, atLeastOneGet: Bool = false, take: (BusMessage) async throws -> Bool,
        putBack: (BusMessage) async throws -> Void
    ) async throws {
        let count = Int(try await queueState(queue)?.messageCount ?? 0)
        for _ in 0..<(atLeastOneGet ? max(count, 1) : count) {
            guard let message = try await get(queue: queue) else { return }
            if try await !take(message) { try await putBack(message) }
            try await message.ack()
        }
    }
}
