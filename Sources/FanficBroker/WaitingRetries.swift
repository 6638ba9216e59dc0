import AMQP
import FanficCore
import Foundation

/// The tasks waiting in the retry tiers (`fanfic.retry.<tier>`), and the two things a person may
/// do to one: send it to `fanfic.ingress` now, or cancel it.
///
/// A queue cannot give up one message from its middle: each action goes through a tier's
/// messages once, settles the chosen ones, and puts every other back at the tail as a confirmed
/// copy with what is left of its wait as the copy's own expiration (from the timestamp
/// ``TaskPublisher/scheduleRetry(_:tier:headers:now:)`` sets; a message without one waits its tier's
/// whole delay again). A retry that arrives while an action runs may end up ahead of the copies,
/// and since a queue expires messages at its head only, they then wait until it expires: a retry
/// can come a tier's delay late, never early, and none is lost.
public struct WaitingRetries: Sendable {
    /// One waiting task.
    public struct Entry: Encodable, Sendable, Hashable {
        public let url: String
        public let site: String
        public let attempt: Int
        public let hailMary: Bool
        /// `fanfic.retry.<tier>`.
        public let queue: String
        /// When it goes back to ingress, when its message says when it began to wait.
        public let dueAt: Date?

        enum CodingKeys: String, CodingKey {
            case url, site, attempt, queue
            case hailMary = "hail_mary"
            case dueAt = "due_at"
        }
    }

    /// What to do with a chosen task.
    public enum Action: Sendable {
        /// To `fanfic.ingress` as it is (its attempt count goes on).
        case releaseNow
        /// Gone (acked).
        case cancel
    }

    public let bus: any MessageBus
    public let ladder: RetryLadder
    let now: @Sendable () -> Date

    public init(bus: any MessageBus, ladder: RetryLadder, now: @escaping @Sendable () -> Date = { Date() }) {
        self.bus = bus
        self.ladder = ladder
        self.now = now
    }

    /// Does `action` to every waiting task that `chosen` picks; returns them. A chosen task is
    /// acked only once ingress has its copy (``Action/releaseNow``).
    public func act(
        _ action: Action, where chosen: @Sendable (TaskMessage) -> Bool
    ) async throws -> [TaskMessage] {
        let publisher = TaskPublisher(bus: bus)
        var settled: [TaskMessage] = []
        for tier in ladder.tiers {
            try await bus.pass(over: FanficTopology.retryQueue(tier)) { message in
                guard let task = try? WireCodec.decode(message.body), chosen(task) else { return false }
                if case .releaseNow = action { try await publisher.submit(task) }
                settled.append(task)
                return true
            } putBack: { message in
                // With what is left of its wait: a put-back copy starts its expiration afresh.
                var properties = message.properties
                properties.expiration = String(Self.remainingMilliseconds(of: message, in: tier, now: now()))
                try await bus.publish(
                    message.body, exchange: FanficTopology.retry, routingKey: tier.name, properties: properties,
                    mandatory: true, retryFor: .seconds(30))
            }
        }
        return settled
    }

    /// What is left of a message's wait in its tier: its whole delay when it says not when it
    /// began, never less than zero nor more than the tier's delay.
    static func remainingMilliseconds(of message: BusMessage, in tier: RetryLadder.Tier, now: Date) -> Int64 {
        let delay = Int64(tier.delaySeconds) * 1000
        guard let began = message.properties.timestamp else { return delay }
        let waited = Int64((now.timeIntervalSince1970 - TimeInterval(began)) * 1000)
        return min(delay, max(0, delay - waited))
    }
}
