import AppSupport
import ArgumentParser
import DashboardHistory
import DashboardServer
import FanficBroker
import FanficCore
import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import Synchronization

public struct DashboardCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "dashboard",
        abstract: "Serves the dashboard's HTTP API and keeps the history of every event.",
        discussion: """
            Listens on dashboard.listen (host:port). Without dashboard.password it listens on \
            127.0.0.1 only, whatever host is given. Keeps every event of fanfic.events in \
            dashboard.database (SQLite) for dashboard.retention_days days, through its own queue \
            fanfic.dashboard.events, so that events published while it is down are kept.
            """
    )

    @OptionGroup var options: CommonOptions

    public init() {}

    public func run() async throws {
        try await RoleRunner.run(role: "dashboard", options: options) { bus, configuration, logger in
            let settings = configuration.dashboard
            guard let address = ListenAddress(settings.listen, loopbackOnly: settings.password.isEmpty) else {
                throw CannotStart([
                    "dashboard.listen is \(settings.listen.isEmpty ? "empty" : "'\(settings.listen)'"): set it to host:port, e.g. 127.0.0.1:8081"
                ])
            }
            if settings.password.isEmpty {
                logger.notice(
                    "no dashboard.password: no login, listening on 127.0.0.1 only",
                    metadata: ["port": "\(address.port)"])
            }
            let store: SQLiteHistoryStore
            do {
                store = try SQLiteHistoryStore(path: settings.database)
            } catch {
                throw CannotStart(["dashboard.database '\(settings.database)' cannot be opened: \(error)"])
            }
            let metrics = DashboardMetrics()
            let recorder = HistoryRecorder(
                bus: bus, store: store,
                settings: HistoryRecorder.Settings(
                    retention: TimeInterval(settings.retentionDays) * 86_400, limits: configuration.limits),
                logger: logger, observe: { metrics.observe($0) })
            let status = StatusCache(bus: bus, configuration: configuration)
            let events = EventPublisher(bus: bus, logger: logger)
            var actions = DashboardActions(
                bus: bus, ladder: configuration.retry.ladder,
                source: "dashboard@\(ProcessInfo.processInfo.hostName)", emit: { events.emit($0) })
            actions.expandLists = configuration.fanficfare.expandLists > 0
            let live = LiveFeed(store: store) { await status.current() }
            var routes = DashboardRoutes(
                store: store, access: DashboardAccess(password: settings.password, tokens: settings.apiTokens),
                actions: actions, live: live, metrics: metrics,
                recorderCounts: { (recorder.current.recorded, recorder.current.refused) }, logger: logger
            ) { await status.current() }
            routes.maxURLLength = configuration.limits.maxURLLength
            let application = Application(
                router: routes.router(),
                configuration: ApplicationConfiguration(
                    address: .hostname(address.host, port: address.port), serverName: "fanfic-dashboard"),
                onServerRunning: { channel in
                    logger.notice(
                        "dashboard listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
                },
                logger: logger)
            // Stopped in reverse order: the live feed first (it ends the pages' streams, which
            // the HTTP server would otherwise wait for), the event publisher last (after the
            // actions that emit).
            return [events, recorder, application, live]
        }
    }
}

/// `GET /api/status`'s answer, asked of the coordinators at most once a second however often
/// pages and widgets poll.
final class StatusCache: Sendable {
    let bus: any MessageBus
    let configuration: FanficConfiguration
    private let cached = Mutex<(at: ContinuousClock.Instant, report: FleetStatusReport)?>(nil)

    init(bus: any MessageBus, configuration: FanficConfiguration) {
        self.bus = bus
        self.configuration = configuration
    }

    func current() async -> FleetStatusReport {
        if let cached = cached.withLock({ $0 }), ContinuousClock.now - cached.at < .seconds(1) { return cached.report }
        let report: FleetStatusReport
        do {
            report = try await FleetStatusReport.gather(on: bus, configuration: configuration, wait: .seconds(2))
        } catch {
            report = FleetStatusReport(brokerURL: configuration.broker.url, error: "\(error)")
        }
        cached.withLock { $0 = (.now, report) }
        return report
    }
}
