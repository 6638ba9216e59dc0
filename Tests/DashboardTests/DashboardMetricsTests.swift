import DashboardHistory
import FanficBroker
import FanficCore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import Testing

@testable import DashboardServer
@testable import FanficBroker

@Suite("Dashboard metrics: Prometheus text from events and status, labels bounded")
struct DashboardMetricsTests {
    static func event(_ kind: FanficEvent.Kind, site: String = "test1.com", reason: String? = nil, ms: Int? = nil)
        -> FanficEvent
    {
        var event = FanficEvent(kind, source: "w", site: site, url: "http://\(site)?sid=1", reason: reason)
        event.durationMilliseconds = ms
        return event
    }

    @Test("task counts, durations, retries by reason, site pauses and queue depths")
    func text() {
        let metrics = DashboardMetrics()
        for event in [
            Self.event(.taskRouted), Self.event(.taskSucceeded, ms: 1500), Self.event(.taskSucceeded, ms: 40_000),
            Self.event(.taskFailed, site: "test2.com", reason: "gone", ms: 700),
            Self.event(.taskRetrying, reason: "timed out: after 300 s"), Self.event(.taskRetrying, reason: "timed out"),
            Self.event(.sitePaused, reason: "429"), Self.event(.mailPolled), Self.event(.mailPolled, reason: "refused"),
        ] {
            metrics.observe(event)
        }
        var status = FleetStatusReport(brokerURL: "amqp://x")
        status.active = "c"
        status.ingress = 4
        status.failed = 2
        status.backlogs = ["a": 3, "b": 4]
        status.retry = [.init(queue: "fanfic.retry.60s", delaySeconds: 60, depth: 5)]
        let text = metrics.scrape(status: status, recorder: (recorded: 9, refused: 1))
        for line in [
            #"fanfic_tasks_total{outcome="succeeded",site="test1.com"} 2"#,
            #"fanfic_tasks_total{outcome="failed",site="test2.com"} 1"#,
            #"fanfic_task_duration_seconds_bucket{outcome="succeeded",le="2.0"} 1"#,
            #"fanfic_task_duration_seconds_count{outcome="succeeded"} 2"#,
            #"fanfic_task_retries_total{reason="timed out"} 2"#,
            #"fanfic_site_pauses_total{site="test1.com"} 1"#,
            #"fanfic_mail_polls_total{result="ok"} 1"#,
            #"fanfic_mail_polls_total{result="failed"} 1"#,
            #"fanfic_task_events_total{type="task.routed"} 1"#,
            #"fanfic_queue_messages{queue="fanfic.ingress"} 4"#,
            #"fanfic_queue_messages{queue="fanfic.backlog.*"} 7"#,
            #"fanfic_queue_messages{queue="fanfic.retry.60s"} 5"#,
            "fanfic_coordinator_active 1", "fanfic_dashboard_events_refused 1",
        ] {
            #expect(text.contains(line), "\(line)\n\(text)")
        }
    }

    @Test("a label from the wire takes at most maxLabelValues values; the rest read other")
    func boundedLabels() {
        let metrics = DashboardMetrics()
        for index in 0..<(DashboardMetrics.maxLabelValues + 50) {
            metrics.observe(Self.event(.sitePaused, site: "site\(index).example"))
        }
        let text = metrics.scrape(status: FleetStatusReport(brokerURL: "amqp://x"), recorder: nil)
        let series = text.split(separator: "\n").filter { $0.hasPrefix("fanfic_site_pauses_total{") }
        #expect(series.count == DashboardMetrics.maxLabelValues + 1)
        #expect(text.contains(#"fanfic_site_pauses_total{site="other"} 50"#))
    }

    @Test("GET /metrics: a token or a session; 401 without")
    func route() async throws {
        let routes = DashboardRoutes(
            store: try SQLiteHistoryStore.inMemory(),
            access: DashboardAccess(password: "pw", tokens: [DashboardRoutesTests.token]), metrics: DashboardMetrics(),
            logger: Logger(label: "test")
        ) { FleetStatusReport(brokerURL: "amqp://x") }
        try await Application(router: routes.router()).test(.router) { client in
            try await client.execute(uri: "/metrics", method: .get) { #expect($0.status == .unauthorized) }
            try await client.execute(
                uri: "/metrics", method: .get, headers: DashboardRoutesTests.bearer(DashboardRoutesTests.token)
            ) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType]?.hasPrefix("text/plain; version=0.0.4") == true)
                #expect(String(buffer: response.body).contains("fanfic_coordinator_active 0"))
            }
        }
    }
}
