import AMQP
import FanficCore
import Foundation

/// The whole fleet as `fanfic status --json` prints it and the dashboard's `GET /api/status`
/// serves it: the broker, the coordinators' answers on `fanfic.status`, each worker with its
/// queue, the backlogs, paused sites, and the depth of every queue that holds tasks.
public struct FleetStatusReport: Encodable, Sendable {
    public struct Broker: Encodable, Sendable {
        public var url: String
        public var reachable: Bool
        public var error: String?
    }
    public struct Worker: Encodable, Sendable {
        public var status: WorkerStatus
        /// Tasks waiting in `fanfic.worker.<id>` (not counting the one it runs).
        public var queued: Int?

        public init(status: WorkerStatus, queued: Int?) {
            self.status = status
            self.queued = queued
        }

        public func encode(to encoder: any Encoder) throws {
            try status.encode(to: encoder)
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encodeIfPresent(queued, forKey: .queued)
        }
        enum CodingKeys: String, CodingKey { case queued }
    }
    public struct Tier: Encodable, Sendable {
        public var queue: String
        public var delaySeconds: Int
        public var depth: Int?
        enum CodingKeys: String, CodingKey {
            case queue, depth
            case delaySeconds = "delay_s"
        }
    }

    public var checkedAt: Date
    public var broker: Broker
    /// The name of the active coordinator, nil when none answered.
    public var active: String?
    public var coordinators: [CoordinatorStatus] = []
    public var workers: [Worker] = []
    public var backlogs: [String: Int] = [:]
    /// Sweep checks waiting for their site to be free (`fanfic.backlog.<site>.sweep`).
    public var sweepBacklogs: [String: Int] = [:]
    /// The last sweep's summary (nil: none yet, or not readable); `sweepInterval` 0: sweeps off.
    public var sweep: SweepProgress?
    public var sweepInterval = 0
    /// Sites no worker contacts after a block (or being tried again), from the active coordinator.
    public var pausedSites: [PausedSite] = []
    public var retry: [Tier] = []
    public var ingress: Int?
    public var failed: Int?

    enum CodingKeys: String, CodingKey {
        case broker, active, coordinators, workers, backlogs, retry, ingress, failed
        case sweepBacklogs = "sweep_backlogs"
        case sweep
        case sweepInterval = "sweep_interval"
        case checkedAt = "checked_at"
        case pausedSites = "paused_sites"
    }

    /// A report of a broker that could not be reached (or not yet asked).
    public init(brokerURL: String, checkedAt: Date = Date(), error: String? = nil) {
        self.checkedAt = checkedAt
        broker = Broker(url: Redaction.url(brokerURL), reachable: false, error: error)
    }

    /// Asks the coordinators (waiting up to `wait` for their answers) and reads the depths.
    public static func gather(
        on bus: any MessageBus, configuration: FanficConfiguration, wait: Duration
    ) async throws -> FleetStatusReport {
        var report = FleetStatusReport(brokerURL: configuration.broker.url)
        report.broker.reachable = true
        report.coordinators = try await StatusExchange.ask(bus, wait: wait)
        let active = report.coordinators.first { $0.role == .active }
        report.active = active?.name
        report.pausedSites = active?.pausedSites ?? []
        for worker in active?.workers ?? [] {
            let queued = try await bus.queueState(FanficTopology.workerQueue(id: worker.id))
            report.workers.append(.init(status: worker, queued: queued.map { Int($0.messageCount) }))
        }
        for site in active?.sites ?? [] {
            if let state = try await bus.queueState(FanficTopology.backlogQueue(site: site)), state.messageCount > 0 {
                report.backlogs[site] = Int(state.messageCount)
            }
            if let state = try await bus.queueState(FanficTopology.sweepBacklogQueue(site: site)),
                state.messageCount > 0
            {
                report.sweepBacklogs[site] = Int(state.messageCount)
            }
        }
        for tier in configuration.retry.ladder.tiers {
            let queue = FanficTopology.retryQueue(tier)
            let state = try await bus.queueState(queue)
            report.retry.append(
                .init(queue: queue, delaySeconds: tier.delaySeconds, depth: state.map { Int($0.messageCount) }))
        }
        report.sweepInterval = configuration.sweep.interval
        // A user without read on it (an older compose file) sees no sweep line, not an error.
        report.sweep = try? await SweepProgress.read(on: bus)
        report.ingress = try await bus.queueState(FanficTopology.ingress).map { Int($0.messageCount) }
        report.failed = try await bus.queueState(FanficTopology.failed).map { Int($0.messageCount) }
        report.checkedAt = Date()
        return report
    }
}
