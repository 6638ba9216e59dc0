import AMQP
import FanficCore
import Foundation
import Synchronization

/// The `fanfic status` conversation, both sides: a request to the fanout exchange `fanfic.status`
/// with a `reply_to`, and one ``FanficCore/CoordinatorStatus`` (JSON) back from every coordinator,
/// active or standby, with the request's correlation id.
public enum StatusExchange {
    /// The request's body: its type and the schema version of the asker.
    /// An answer lists every worker of the table (up to `limits.max_workers`, about 200 bytes
    /// each): read up to this much, and no more.
    static let answerLimits = WireLimits(maxMessageBytes: 16 << 20)

    public static let requestBody = Data(#"{"type":"status","version":\#(TaskMessage.currentVersion)}"#.utf8)

    /// Asks every coordinator and collects the answers for at most `wait`. Once the active one
    /// has answered, standbys get a short grace; the whole window is only waited out when no
    /// active coordinator answers. The active one comes first, then the others by name.
    public static func ask(_ bus: any MessageBus, wait: Duration) async throws -> [CoordinatorStatus] {
        let replyQueue = FanficTopology.statusReplyQueue()
        try await bus.declare(FanficTopology.statusReplies(replyQueue), remember: false)
        let answers = bus.consume(queue: replyQueue, prefetch: 50)
        var properties = AMQPMessageProperties(contentType: "application/json", deliveryMode: 1)
        properties.replyTo = replyQueue
        properties.expiration = "\(wait.wholeMilliseconds)"
        try await bus.publish(requestBody, exchange: FanficTopology.status, routingKey: "", properties: properties)

        let found = Answers()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for try await answer in answers.decoded({ try WireCodec.decodeStatus($0, limits: answerLimits) }) {
                    switch answer {
                    case .success(let status):
                        try? await status.message.ack()
                        found.add(status.value)
                    case .failure(let bad):
                        try? await bad.message.ack()  // an answer it cannot read: not a coordinator of this version
                    }
                }
            }
            let deadline = ContinuousClock.now + wait
            var activeSeenAt: ContinuousClock.Instant?
            while ContinuousClock.now < deadline {
                if activeSeenAt == nil, found.all.contains(where: { $0.role == .active }) { activeSeenAt = .now }
                if let activeSeenAt, ContinuousClock.now - activeSeenAt > .milliseconds(300) { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            group.cancelAll()
        }
        return found.all.sorted {
            ($0.role == .active ? 0 : 1, $0.name) < ($1.role == .active ? 0 : 1, $1.name)
        }
    }

    /// Answers one request with this coordinator's status, through `fanfic.status.replies`; a
    /// request whose `reply_to` is not a status reply queue is dropped (false): the coordinator
    /// answers nowhere else.
    @discardableResult
    public static func answer(_ request: BusMessage, with status: CoordinatorStatus, on bus: any MessageBus)
        async throws -> Bool
    {
        guard let replyTo = request.properties.replyTo, FanficTopology.isStatusReplyQueue(replyTo) else {
            return false
        }
        var properties = AMQPMessageProperties(contentType: "application/json", deliveryMode: 1)
        properties.correlationID = request.properties.correlationID.map { String($0.prefix(128)) }
        try await bus.publish(
            WireCodec.encode(status), exchange: FanficTopology.statusReplies, routingKey: replyTo,
            properties: properties)
        return true
    }

    private final class Answers: Sendable {
        private let list = Mutex<[CoordinatorStatus]>([])
        func add(_ status: CoordinatorStatus) { list.withLock { $0.append(status) } }
        var all: [CoordinatorStatus] { list.withLock { $0 } }
    }
}
