import FanficBroker
import FanficCore
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// Keeps every event of `fanfic.events` in a ``HistoryStore``: consumes the dashboard's own
/// durable queue (``FanficTopology/dashboardEvents``), and acknowledges an event only once it is
/// written, so a crash or restart loses nothing (the broker redelivers it). A Service.
///
/// An event is checked where it enters (``WireCodec/decodeEvent(_:limits:maxTextLength:)``):
/// one that does not decode, is too big, or is dated more than ``allowedClockSkew`` ahead is
/// refused (logged with the reason, counted, and dropped: an event is an observation, not work
/// to redo) and the loop goes on. An event whose routing key is a type this build does not know
/// (a newer build's) is ignored quietly; one whose key is known but whose body is not is refused.
public final class HistoryRecorder: Service {
    public struct Settings: Sendable {
        /// How long runs and events are kept (`dashboard.retention_days`).
        public var retention: TimeInterval
        public var limits: FanficConfiguration.Limits
        /// How often old history is pruned.
        public var pruneInterval: Duration = .seconds(3600)
        /// Deliveries unacknowledged at once.
        public var prefetch: UInt16 = 256

        public init(retention: TimeInterval, limits: FanficConfiguration.Limits) {
            self.retention = retention
            self.limits = limits
        }
    }

    /// How far ahead of this clock an event's time may be.
    public static let allowedClockSkew: TimeInterval = 300

    private let bus: any MessageBus
    private let store: any HistoryStore
    private let settings: Settings
    private let logger: Logger
    private let now: @Sendable () -> Date
    private let observe: @Sendable (FanficEvent) -> Void
    private let counts = Mutex(Counts())

    /// What the recorder has done so far.
    public struct Counts: Sendable, Hashable {
        public var recorded = 0
        public var refused = 0
        /// Events of a type this build does not know (by their routing key).
        public var ignored = 0
        public var pruned = 0
    }

    /// `observe` sees each event once it is recorded (the dashboard's metrics).
    public init(
        bus: any MessageBus, store: any HistoryStore, settings: Settings, logger: Logger,
        now: @escaping @Sendable () -> Date = { Date() }, observe: @escaping @Sendable (FanficEvent) -> Void = { _ in }
    ) {
        self.observe = observe
        self.bus = bus
        self.store = store
        self.settings = settings
        self.logger = logger
        self.now = now
    }

    public var current: Counts { counts.withLock { $0 } }

    public func run() async throws {
        try await cancelWhenGracefulShutdown { try await self.recordUntilCancelled() }
    }

    private func recordUntilCancelled() async throws {
        // At start, then as events arrive, at most once an interval.
        try prune()
        var prunedAt = ContinuousClock.now
        while !Task.isCancelled {
            do {
                try await bus.waitUntilConnected(timeout: .seconds(5))
                try await bus.declare(FanficTopology.dashboard())
                for try await message in bus.consume(queue: FanficTopology.dashboardEvents, prefetch: settings.prefetch)
                {
                    if ContinuousClock.now - prunedAt >= settings.pruneInterval {
                        try prune()
                        prunedAt = .now
                    }
                    // A type a newer build publishes (its routing key is its type): observers
                    // ignore what they do not know, quietly (DESIGN.md's rule for fanfic.events).
                    guard FanficEvent.Kind(rawValue: message.routingKey) != nil else {
                        counts.withLock { $0.ignored += 1 }
                        logger.debug(
                            "event of an unknown type ignored",
                            metadata: ["routing_key": "\(message.routingKey.prefix(100))"])
                        try? await message.ack()
                        continue
                    }
                    switch admit(message.body) {
                    case .success(let event):
                        // Written before the ack: a failure here leaves the event in the queue.
                        do {
                            try store.record([event])
                        } catch {
                            throw HistoryStoreFailure(underlying: "\(error)")
                        }
                        counts.withLock { $0.recorded += 1 }
                        observe(event)
                    case .failure(let refusal):
                        counts.withLock { $0.refused += 1 }
                        logger.warning(
                            "event refused",
                            metadata: [
                                "reason": "\(refusal)", "routing_key": "\(message.routingKey.prefix(100))",
                                "publisher": "\(message.properties.userID ?? "unknown")",
                            ])
                    }
                    try? await message.ack()
                }
                if Task.isCancelled { return }
            } catch let error as HistoryStoreFailure {
                throw error
            } catch {
                logger.debug("events: subscribing again", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }

    /// The event a message holds, or why it is refused.
    func admit(_ body: Data) -> Result<FanficEvent, MessageDecodingError> {
        let event: FanficEvent
        do {
            event = try WireCodec.decodeEvent(
                body, limits: settings.limits.wire, maxTextLength: settings.limits.maxReasonLength)
        } catch {
            return .failure(error)
        }
        if event.at.timeIntervalSince(now()) > Self.allowedClockSkew {
            return .failure(
                MessageDecodingError(
                    .invalidField,
                    "'at' is \(Timestamp.format(event.at)), more than \(Int(Self.allowedClockSkew)) s ahead of this clock"
                ))
        }
        return .success(event)
    }

    private func prune() throws {
        let cutoff = now().addingTimeInterval(-settings.retention)
        do {
            let pruned = try store.prune(before: cutoff)
            counts.withLock { $0.pruned += pruned }
            if pruned > 0 {
                logger.info(
                    "history pruned", metadata: ["events": "\(pruned)", "before": "\(Timestamp.format(cutoff))"])
            }
        } catch {
            throw HistoryStoreFailure(underlying: "\(error)")
        }
    }
}

/// The store could not be written: the recorder stops (its role fails and is restarted) rather
/// than acknowledge events it did not keep.
public struct HistoryStoreFailure: Error, CustomStringConvertible {
    public let underlying: String
    public var description: String { "the history store failed: \(underlying)" }
}
