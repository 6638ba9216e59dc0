import AMQP
import CalibreLibrary
import FanficBroker
import FanficCore
import Foundation
import Logging
import ServiceLifecycle

/// The sweep's record in `fanfic.sweep.state`: which sweep, its checks, and how many of them are
/// in the broker (docs/sweeps.md). A scheduler that takes over goes on from it.
public struct SweepRecord: Codable, Sendable, Hashable {
    public struct Check: Codable, Sendable, Hashable {
        public let url: String
        public let site: String
        public let book: Int
        public let dueAt: Date

        enum CodingKeys: String, CodingKey {
            case url, site, book
            case dueAt = "due_at"
        }
    }

    public var version = 1
    public let id: String
    public let startsAt: Date
    public let endsAt: Date
    public let checks: [Check]
    /// Ended early by `fanfic sweep now` (its unreleased checks removed).
    public var cancelledAt: Date?
    /// -1 while the sweep is being released; the last index once every check is in the broker.
    public var publishedThrough: Int

    public var isComplete: Bool { publishedThrough >= checks.count - 1 }

    /// A later sweep, or the same one released further, or ended early.
    func isNewer(than other: SweepRecord) -> Bool {
        (startsAt, publishedThrough, cancelledAt == nil ? 0 : 1)
            > (other.startsAt, other.publishedThrough, other.cancelledAt == nil ? 0 : 1)
    }

    /// When the next sweep may start.
    public var over: Date { cancelledAt ?? endsAt }

    /// The summary `fanfic status` shows.
    func progress(writtenAt: Date) -> SweepProgress {
        let sites = Dictionary(grouping: checks, by: \.site).map { site, checks in
            SweepProgress.Site(
                site: site, checks: checks.count, firstDue: checks.map(\.dueAt).min()!,
                lastDue: checks.map(\.dueAt).max()!)
        }
        return SweepProgress(
            sweep: id, writtenAt: writtenAt, startsAt: startsAt, endsAt: over, releasing: !isComplete,
            sites: sites.sorted { $0.site < $1.site })
    }

    enum CodingKeys: String, CodingKey {
        case version, id, checks
        case startsAt = "starts_at"
        case endsAt = "ends_at"
        case publishedThrough = "published_through"
        case cancelledAt = "cancelled_at"
    }
}

/// The one active sweep scheduler of the fleet (the holder of `fanfic.lock.sweep`): when no
/// sweep is under way it plans one from the library and releases it into the broker ahead of
/// time, every check waiting in `fanfic.sweep.delay` until it is due; when it takes over from a
/// scheduler that died while releasing, it releases only what that one had not. A Service.
public final class SweepScheduler: Service {
    public struct Settings: Sendable {
        public var sweep: FanficConfiguration.Sweep
        /// How far ahead of its first check a sweep is released (the release takes seconds; a
        /// takeover within this never meets a check that was due meanwhile): five minutes, or a
        /// tenth of a shorter interval.
        public var lead: TimeInterval
        /// How often a standby looks for the lock, and the holder for the next sweep.
        public var poll: Duration = .seconds(5)

        public init(sweep: FanficConfiguration.Sweep) {
            self.sweep = sweep
            lead = min(300, max(1, TimeInterval(sweep.interval) / 10))
        }
    }

    public static let sweepIDHeader = "x-fanfic-sweep"
    public static let checkIndexHeader = "x-fanfic-sweep-check"
    /// When a check is due (Unix milliseconds): what is left of its wait when it is put back.
    public static let dueHeader = "x-fanfic-sweep-due"

    let bus: any MessageBus
    let settings: Settings
    let books: @Sendable () async throws -> [LibraryBook]
    let logger: Logger
    let now: @Sendable () -> Date

    public init(
        bus: any MessageBus, settings: Settings, logger: Logger, now: @escaping @Sendable () -> Date = { Date() },
        books: @escaping @Sendable () async throws -> [LibraryBook]
    ) {
        self.bus = bus
        self.settings = settings
        self.logger = logger
        self.now = now
        self.books = books
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown { await self.scheduleUntilCancelled() }
    }

    private func scheduleUntilCancelled() async {
        while !Task.isCancelled {
            var pause = settings.poll
            do {
                try await bus.waitUntilConnected(timeout: .seconds(5))
                if try await BrokerLock(FanficTopology.sweepLock, bus: bus).tryAcquire(),
                    case .waiting(let until) = try await step(startNow: try await takeRequests())
                {
                    // Each look reads (and puts back) the record, which holds the whole plan:
                    // while a sweep runs its course, look once a minute rather than every poll.
                    pause = max(settings.poll, min(.seconds(60), .seconds(until.timeIntervalSince(now()))))
                }
            } catch is CancellationError {
                return
            } catch {
                logger.warning("sweep scheduler: will try again", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: pause)
        }
    }

    /// One look, holding the lock: finish a sweep left incomplete, or start the next when the
    /// last one has ended. Returns what it did (for tests and logs).
    public enum Step: Sendable, Equatable {
        case waiting(until: Date)
        case released(sweep: String, checks: Int)
        case resumed(sweep: String, checks: Int)
    }

    /// `startNow`: `fanfic sweep now` asked for a sweep: the current one ends (what it has not
    /// released is removed) and a new one starts within a minute, unless the current one started
    /// less than `Self.minimumBetweenRequests` ago (requests are anyone's with the CLI's rights,
    /// and each would release the first check of every site again).
    @discardableResult
    public func step(startNow: Bool = false) async throws -> Step {
        var lead = settings.lead
        if let record = try await readRecord() {
            let honoured = startNow && now().timeIntervalSince(record.startsAt) >= Self.minimumBetweenRequests
            if startNow && !honoured {
                logger.notice(
                    "sweep now: ignored, the current sweep started less than 10 minutes ago",
                    metadata: ["sweep": "\(record.id)"])
            }
            if honoured {
                if now() < record.over || !record.isComplete { try await cancel(record) }
                lead = min(lead, 30)
            } else {
                if !record.isComplete {
                    return .resumed(sweep: record.id, checks: try await release(record, resuming: true))
                }
                if now() < record.over { return .waiting(until: record.over) }
            }
        } else if startNow {
            lead = min(lead, 30)
        }
        let start = now().addingTimeInterval(lead)
        let plan = SweepPlanner.plan(books: try await books(), settings: settings.sweep, now: now(), start: start)
        let record = SweepRecord(
            id: UUID().uuidString.lowercased(), startsAt: plan.startsAt, endsAt: plan.endsAt,
            checks: plan.checks.map { .init(url: $0.url, site: $0.site, book: $0.book, dueAt: $0.dueAt) },
            publishedThrough: -1)
        try await writeRecord(record)
        logger.notice(
            "sweep planned",
            metadata: [
                "sweep": "\(record.id)", "checks": "\(record.checks.count)", "sites": "\(plan.sites.count)",
                "skipped": "\(plan.skipped.count)", "ends": "\(Timestamp.format(record.endsAt))",
            ])
        return .released(sweep: record.id, checks: try await release(record, resuming: false))
    }

    public static let minimumBetweenRequests: TimeInterval = 600

    /// Takes the `fanfic sweep now` requests waiting (their bodies are not read: any message asks).
    public func takeRequests() async throws -> Bool {
        let count = Int(try await bus.queueState(FanficTopology.sweepRequests)?.messageCount ?? 0)
        var asked = false
        for _ in 0..<min(count, 100) {
            guard let message = try await bus.get(queue: FanficTopology.sweepRequests) else { break }
            asked = true
            try await message.ack()
        }
        return asked
    }

    /// Ends a sweep now: removes its checks still waiting in the delay queue (others are put back
    /// with what is left of their wait) and records it as ended.
    private func cancel(_ record: SweepRecord) async throws {
        var removed = 0
        try await bus.pass(over: FanficTopology.sweepDelay) { message in
            guard case .string(let id) = message.properties.headers[Self.sweepIDHeader], id == record.id else {
                return false
            }
            removed += 1
            return true
        } putBack: {
            try await putBack($0)
        }
        var ended = record
        ended.publishedThrough = record.checks.count - 1
        ended.cancelledAt = now()
        try await writeRecord(ended)
        logger.notice(
            "sweep ended early (fanfic sweep now)", metadata: ["sweep": "\(record.id)", "removed": "\(removed)"])
    }

    /// Publishes the record's checks after `publishedThrough`, in due order, then records the
    /// sweep as complete. Resuming one a scheduler left incomplete, what it had published is
    /// read from the broker (checks are published in index order): every check up to the highest
    /// index waiting in the delay queue, and every check already due (published with minutes of
    /// lead, and released since). A check is never published twice; at worst one the dead
    /// scheduler never published is left to the next sweep.
    private func release(_ record: SweepRecord, resuming: Bool) async throws -> Int {
        var record = record
        var from = record.publishedThrough + 1
        if resuming {
            let waiting = try await checksWaiting(of: record.id)
            let dueByNow = record.checks.lastIndex { $0.dueAt <= now() } ?? -1
            from = max(from, (waiting.max() ?? -1) + 1, dueByNow + 1)
        }
        for index in from..<max(from, record.checks.count) {
            try await publish(record.checks[index], index: index, of: record.id)
        }
        record.publishedThrough = record.checks.count - 1
        try await writeRecord(record)
        return max(0, record.checks.count - from)
    }

    private func publish(_ check: SweepRecord.Check, index: Int, of sweep: String) async throws {
        // No calibre_id: the task's identity is then the one a person's submission of the story
        // has, so the coordinator runs the story once when both are queued; the worker finds the
        // book by its URL anyway.
        let task = TaskMessage(url: check.url, site: check.site, submittedBy: TaskMessage.sweepSubmitter)
        var properties = AMQPMessageProperties.persistentJSON(messageID: task.id)
        properties.headers[Self.sweepIDHeader] = .string(sweep)
        properties.headers[Self.checkIndexHeader] = .int(Int64(index))
        properties.headers[Self.dueHeader] = .int(Timestamp.milliseconds(check.dueAt))
        let wait = max(0, check.dueAt.timeIntervalSince(now()))
        properties.expiration = String(Int64(wait * 1000))
        try await bus.publish(
            WireCodec.encode(task), exchange: FanficTopology.sweep, routingKey: "delay", properties: properties,
            mandatory: true, retryFor: .seconds(30))
    }

    /// The indexes of `sweep`'s checks in the delay queue, each put back with what is left of its
    /// wait (the queue is read once, as `fanfic failed list` reads `fanfic.failed`).
    private func checksWaiting(of sweep: String) async throws -> Set<Int> {
        var found: Set<Int> = []
        try await bus.pass(over: FanficTopology.sweepDelay) { message in
            let properties = message.properties
            if case .string(let id) = properties.headers[Self.sweepIDHeader], id == sweep,
                case .int(let index) = properties.headers[Self.checkIndexHeader]
            {
                found.insert(Int(index))
            }
            return false
        } putBack: {
            try await putBack($0)
        }
        return found
    }

    /// Publishes a check read from the delay queue back to it, with what is left of its wait.
    private func putBack(_ message: BusMessage) async throws {
        var properties = message.properties
        if case .int(let due) = properties.headers[Self.dueHeader] {
            let left = Timestamp.date(milliseconds: due).timeIntervalSince(now())
            properties.expiration = String(Int64(max(0, left) * 1000))
        }
        try await bus.publish(
            message.body, exchange: FanficTopology.sweep, routingKey: "delay", properties: properties,
            mandatory: true, retryFor: .seconds(30))
    }

    // MARK: The record

    /// The sweep's record: the newest of the messages in `fanfic.sweep.state`, by its content
    /// (start, then how far it was released), never by queue order: a reader that holds a record
    /// while this one is written returns it later, behind the new one. The newest is put back
    /// once (a copy, so no redelivery counts against it) and the others go.
    func readRecord() async throws -> SweepRecord? {
        let count = Int(try await bus.queueState(FanficTopology.sweepState)?.messageCount ?? 0)
        var read: [BusMessage] = []
        var newest: (record: SweepRecord, body: Data)?
        for _ in 0..<count {
            guard let message = try await bus.get(queue: FanficTopology.sweepState) else { break }
            read.append(message)
            if let record = try? JSONDecoder.sweep.decode(SweepRecord.self, from: message.body),
                newest.map({ record.isNewer(than: $0.record) }) ?? true
            {
                newest = (record, message.body)
            }
        }
        if let newest {
            try await bus.publish(
                newest.body, exchange: FanficTopology.sweep, routingKey: "state", properties: .persistentJSON(),
                mandatory: true, retryFor: .seconds(30))
        }
        for message in read { try await message.ack() }
        return newest?.record
    }

    /// Publishes the record, then trims the queue to the newest (this one).
    func writeRecord(_ record: SweepRecord) async throws {
        try await bus.publish(
            try JSONEncoder.sweep.encode(record), exchange: FanficTopology.sweep, routingKey: "state",
            properties: .persistentJSON(), mandatory: true, retryFor: .seconds(30))
        _ = try await readRecord()
        do {
            try await record.progress(writtenAt: now()).publish(on: bus)
        } catch {
            logger.warning(
                "sweep progress not published (fanfic status shows an older one)", metadata: ["error": "\(error)"])
        }
    }
}

extension JSONEncoder {
    static var sweep: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .millisecondsSince1970
        return encoder
    }
}

extension JSONDecoder {
    static var sweep: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .millisecondsSince1970
        return decoder
    }
}
