import CoreMetrics
import FanficBroker
import FanficCore
import Foundation
import Prometheus
import Synchronization

/// `GET /metrics`: the fleet in Prometheus's text format, through swift-metrics with a registry
/// of the dashboard's own (nothing global: tests make as many as they like).
///
/// Counters come from the events the dashboard records (so they count since it started, as
/// Prometheus expects of a counter); queue depths, workers and paused sites are gauges read from
/// the status at each scrape. Label values that come from the wire (sites, reasons) are bounded
/// in number: past ``maxLabelValues`` distinct values, a label reads `other`.
public final class DashboardMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    private let factory: PrometheusMetricsFactory
    private let labelValues = Mutex<[String: Set<String>]>([:])
    private let counters = Mutex<[String: CoreMetrics.Counter]>([:])
    private let timers = Mutex<[String: CoreMetrics.Timer]>([:])

    /// Distinct values a label may take; more read `other`.
    public static let maxLabelValues = 200

    public init() {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets["fanfic_task_duration_seconds"] = [1, 2, 5, 10, 30, 60, 120, 300, 600, 1800]
            .map { Duration.seconds($0) }
        self.factory = factory
    }

    /// Counts what an event says (called for each event the history records).
    public func observe(_ event: FanficEvent) {
        switch event.kind {
        case .taskRouted, .taskStarted, .taskSucceeded, .taskFailed, .taskRetrying, .taskDeferred, .taskParked,
            .taskDuplicate, .taskCancelled:
            count("fanfic_task_events_total", ["type": event.kind.rawValue])
        default: break
        }
        switch event.kind {
        case .taskSucceeded, .taskFailed:
            let outcome = event.kind == .taskSucceeded ? "succeeded" : "failed"
            count("fanfic_tasks_total", ["outcome": outcome, "site": bounded("site", event.site)])
            if let milliseconds = event.durationMilliseconds {
                timer("fanfic_task_duration_seconds", ["outcome": outcome])
                    .recordMilliseconds(milliseconds)
            }
        case .taskRetrying:
            count("fanfic_task_retries_total", ["reason": bounded("reason", Self.reasonClass(event.reason))])
        case .sitePaused:
            count("fanfic_site_pauses_total", ["site": bounded("site", event.site)])
        case .mailPolled:
            count("fanfic_mail_polls_total", ["result": event.reason == nil ? "ok" : "failed"])
        case .workerJoined, .workerDead:
            count("fanfic_worker_events_total", ["type": event.kind.rawValue])
        default: break
        }
    }

    /// The text for one scrape: the gauges read from `status` first.
    public func scrape(status: FleetStatusReport, recorder: (recorded: Int, refused: Int)?) -> String {
        func gauge(_ label: String, _ dimensions: [String: String] = [:], _ value: Int?) {
            guard let value else { return }
            Gauge(label: label, dimensions: dimensions.sorted { $0.key < $1.key }, factory: factory).record(value)
        }
        gauge("fanfic_coordinator_active", [:], status.active == nil ? 0 : 1)
        gauge("fanfic_workers", [:], status.workers.count)
        gauge("fanfic_workers_busy", [:], status.workers.filter { $0.status.current != nil }.count)
        gauge("fanfic_paused_sites", [:], status.pausedSites.count)
        gauge("fanfic_queue_messages", ["queue": FanficTopology.ingress], status.ingress)
        gauge("fanfic_queue_messages", ["queue": FanficTopology.failed], status.failed)
        gauge("fanfic_queue_messages", ["queue": "fanfic.backlog.*"], status.backlogs.values.reduce(0, +))
        gauge("fanfic_queue_messages", ["queue": "fanfic.worker.*"], status.workers.compactMap(\.queued).reduce(0, +))
        for tier in status.retry { gauge("fanfic_queue_messages", ["queue": tier.queue], tier.depth) }
        if let recorder {
            gauge("fanfic_dashboard_events_recorded", [:], recorder.recorded)
            gauge("fanfic_dashboard_events_refused", [:], recorder.refused)
        }
        return registry.emitToString()
    }

    /// A retry's reason without its particulars (a URL, a number): what kind of failure it was,
    /// at most 60 characters.
    static func reasonClass(_ reason: String?) -> String {
        guard let reason, !reason.isEmpty else { return "unknown" }
        let head = reason.split(whereSeparator: { ":(\n".contains($0) }).first.map(String.init) ?? reason
        return String(head.trimmingCharacters(in: .whitespaces).prefix(60))
    }

    private func bounded(_ label: String, _ value: String?) -> String {
        guard let value, !value.isEmpty else { return "unknown" }
        return labelValues.withLock { seen in
            if seen[label, default: []].contains(value) { return value }
            guard seen[label, default: []].count < Self.maxLabelValues else { return "other" }
            seen[label, default: []].insert(value)
            return value
        }
    }

    private func count(_ label: String, _ dimensions: [String: String]) {
        let sorted = dimensions.sorted { $0.key < $1.key }
        let key = label + sorted.map { "|\($0.key)=\($0.value)" }.joined()
        let counter = counters.withLock { counters in
            if let known = counters[key] { return known }
            let made = CoreMetrics.Counter(label: label, dimensions: sorted, factory: factory)
            counters[key] = made
            return made
        }
        counter.increment()
    }

    private func timer(_ label: String, _ dimensions: [String: String]) -> CoreMetrics.Timer {
        let sorted = dimensions.sorted { $0.key < $1.key }
        let key = label + sorted.map { "|\($0.key)=\($0.value)" }.joined()
        return timers.withLock { timers in
            if let known = timers[key] { return known }
            let made = CoreMetrics.Timer(label: label, dimensions: sorted, factory: factory)
            timers[key] = made
            return made
        }
    }
}
