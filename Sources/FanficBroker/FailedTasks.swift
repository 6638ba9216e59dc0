import AMQP
import FanficCore
import Foundation

/// `fanfic.failed` and its rules: what a parked message says, and how a failed task goes back.
public struct FailedTasks: Sendable {
    /// One parked message, read without taking it off the queue for good.
    public struct Entry: Encodable, Sendable, Hashable {
        public let url: String?
        public let site: String?
        public let attempt: Int?
        public let reason: String
        /// The first bytes of a message that is not a task.
        public let preview: String?

        public init(_ message: BusMessage) {
            var reason = "(no reason recorded)"
            if case .string(let text) = message.properties.headers[FanficTopology.failureReasonHeader] {
                reason = text
            }
            self.reason = reason
            if let task = try? WireCodec.decode(message.body) {
                (url, site, attempt, preview) = (task.url, task.site, task.attempt, nil)
            } else {
                (url, site, attempt) = (nil, nil, nil)
                preview = String(decoding: message.body.prefix(80), as: UTF8.self)
            }
        }
    }

    /// A failed task as it goes back to `fanfic.ingress`: a fresh retry ladder, the rest as it was.
    public static func requeued(_ task: TaskMessage) -> TaskMessage {
        var task = task
        task.attempt = 0
        task.retryTier = nil
        task.hailMary = false
        return task
    }

    public let bus: any MessageBus

    public init(bus: any MessageBus) { self.bus = bus }

    /// Every parked message, in queue order; the queue is left as it was (and no delivery is
    /// counted against any of them).
    public func list() async throws -> [Entry] {
        var entries: [Entry] = []
        try await sweep { message in
            entries.append(Entry(message))
            return false
        }
        return entries
    }

    /// Sends the failed tasks that `wanted` picks back to ingress (``requeued(_:)``), each acked
    /// only once the broker has its copy; returns them. Messages that are not tasks stay.
    public func requeue(where wanted: (TaskMessage) -> Bool) async throws -> [TaskMessage] {
        let publisher = TaskPublisher(bus: bus)
        var sent: [TaskMessage] = []
        try await sweep { message in
            guard let task = try? WireCodec.decode(message.body), wanted(task) else { return false }
            let fresh = Self.requeued(task)
            try await publisher.submit(fresh)
            sent.append(fresh)
            return true
        }
        return sent
    }

    /// Deletes every parked message; returns how many there were.
    public func purge() async throws -> UInt32 { try await bus.purgeQueue(FanficTopology.failed) }

    /// Deletes the parked messages that `chosen` picks (nil: every one, tasks or not); returns
    /// the tasks among them, so that their removal can be told (the dashboard's events).
    public func remove(where chosen: (@Sendable (TaskMessage) -> Bool)? = nil) async throws -> [TaskMessage] {
        var removed: [TaskMessage] = []
        try await sweep { message in
            let task = try? WireCodec.decode(message.body)
            if let chosen {
                guard let task, chosen(task) else { return false }
            }
            if let task { removed.append(task) }
            return true
        }
        return removed
    }

    /// One pass over `fanfic.failed` (``MessageBus/pass(over:atLeastOneGet:take:putBack:)``):
    /// what `take` leaves goes back to its tail.
    private func sweep(_ take: (BusMessage) async throws -> Bool) async throws {
        try await bus.pass(over: FanficTopology.failed, atLeastOneGet: true, take: take) { message in
            try await bus.publish(
                message.body, exchange: FanficTopology.failed, routingKey: "", properties: message.properties,
                mandatory: true, retryFor: .seconds(30))
        }
    }
}
