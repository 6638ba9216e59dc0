import AMQP
import ArgumentParser
import CalibreLibrary
import FanficBroker
import FanficCore
import Foundation
import Logging
import Sweep
import Synchronization

/// The timeline of an update sweep of 1,000 simulated books over test1.com ... test4.com
/// (400, 300, 200 and 100 books; 60 of them updated an hour ago, which the sweep leaves alone).
///
/// 1. The plan of a daily sweep (no clock): per site, books, checks, deferred, spacing, and the
///    most checks of the site in any hour (a sliding window over the due times) against
///    `per_site_budget`.
/// 2. The same sweep released by the real scheduler into the real broker in a shortened interval,
///    the budget scaled with it (a "day" of `--interval` seconds, an "hour" of interval/24): each
///    check's arrival in `fanfic.ingress` timed, per site the most arrivals in any scaled hour
///    against the budget, and how late the broker's per-message expiration delivered them.
///
/// Prints both tables; the budget is the baseline every figure is read against.
@main
struct SweepBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sweep-bench", abstract: "The timeline of a sweep of 1,000 simulated books over 4 sites.")

    @Option(help: "Broker URL, with a virtual host of its own (the benchmark empties its queues).")
    var url: String

    @Option(help: "Seconds the shortened sweep takes on the broker (a day scaled down; 0: the plan only).")
    var interval = 240

    @Option(help: "per_site_budget: checks of one site in any hour.")
    var budget = 12

    static let sites = [("test1.com", 400), ("test2.com", 300), ("test3.com", 200), ("test4.com", 100)]

    static func books(now: Date) -> [LibraryBook] {
        var books: [LibraryBook] = []
        for (site, count) in sites {
            for index in 1...count {
                let id = books.count + 1
                // One in 16 updated an hour ago; the rest from 1 to 400 days ago, least recent first.
                let age: TimeInterval = index % 16 == 0 ? 3600 : TimeInterval(86_400 * (1 + (index * 37) % 400))
                books.append(LibraryBook(id: id, url: "http://\(site)?sid=\(index)", lastModified: now - age))
            }
        }
        return books
    }

    /// The most of `times` (seconds) in any window of `width` seconds.
    static func mostInWindow(_ times: [TimeInterval], width: TimeInterval) -> Int {
        let sorted = times.sorted()
        var most = 0
        var start = 0
        for end in sorted.indices {
            while sorted[end] - sorted[start] >= width { start += 1 }
            most = max(most, end - start + 1)
        }
        return most
    }

    func run() async throws {
        let now = Date()
        let books = Self.books(now: now)
        var daily = FanficConfiguration.Sweep()
        daily.interval = 86_400
        daily.perSiteBudget = budget
        daily.skipRecentHours = 12
        let plan = SweepPlanner.plan(books: books, settings: daily, now: now, start: now)
        print("1,000 simulated books over 4 sites, a daily sweep, per_site_budget \(budget)/h, skip_recent_hours 12")
        print("skipped: \(plan.skipped.count) (updated an hour ago); \(plan.checks.count) checks")
        print(
            row(
                ("site", -10), ("books", 6), ("checks", 7), ("deferred", 9), ("spacing", 9), ("most in 1 h", 12),
                ("budget", 7)) + "  checks in each hour of the day")
        for site in plan.sites {
            let due = plan.checks.filter { $0.site == site.site }.map { $0.dueAt.timeIntervalSince(plan.startsAt) }
            var perHour = [Int](repeating: 0, count: 24)
            for time in due { perHour[min(23, Int(time / 3600))] += 1 }
            let most = Self.mostInWindow(due, width: 3600)
            print(
                row(
                    (site.site, -10), ("\(site.books)", 6), ("\(site.planned)", 7), ("\(site.deferred)", 9),
                    (String(format: "%.0f s", site.spacingSeconds), 9), ("\(most)", 12), ("\(budget)", 7))
                    + "  " + perHour.map(String.init).joined(separator: " "))
        }
        guard interval > 0 else { return }
        try await released(books: books, now: now)
    }

    /// The shortened sweep on the broker.
    func released(books: [LibraryBook], now: Date) async throws {
        var logger = Logger(label: "sweep-bench")
        logger.logLevel = .warning
        var configuration = try AMQPConfiguration(url: url)
        configuration.connectionName = "sweep-bench"
        let connection = AMQPConnection(configuration: configuration, logger: logger)
        try await connection.waitUntilConnected(timeout: .seconds(30))
        let bus = AMQPMessageBus(connection)
        try await bus.declare(FanficTopology.declarations(retry: RetryLadder()))
        for queue in [FanficTopology.ingress, FanficTopology.sweepDelay, FanficTopology.sweepState] {
            _ = try await connection.purgeQueue(queue)
        }
        let scale = Double(interval) / 86_400
        let scaledHour = 3600 * scale
        var settings = FanficConfiguration.Sweep()
        settings.interval = interval
        // The same plan as the day's: the budget per real hour grows as the day shrinks.
        settings.perSiteBudget = Int((Double(budget) / scale).rounded())
        settings.skipRecentHours = 12
        let scheduler = SweepScheduler(bus: bus, settings: .init(sweep: settings), logger: logger) { books }
        guard try await BrokerLock(FanficTopology.sweepLock, bus: bus).tryAcquire() else {
            throw ValidationError("another sweep scheduler holds fanfic.lock.sweep on this virtual host")
        }
        let arrivals = Mutex<[(url: String, site: String, arrived: Date, due: Date?)]>([])
        let reading = Task {
            for try await message in bus.consume(queue: FanficTopology.ingress, prefetch: 100) {
                let arrived = Date()
                var due: Date?
                if case .int(let milliseconds) = message.properties.headers[SweepScheduler.dueHeader] {
                    due = Date(timeIntervalSince1970: Double(milliseconds) / 1000)
                }
                if let task = try? WireCodec.decode(message.body) {
                    arrivals.withLock { $0.append((task.url, task.site, arrived, due)) }
                }
                try await message.ack()
            }
        }
        defer { reading.cancel() }
        let releaseStarted = ContinuousClock.now
        guard case .released(_, let count) = try await scheduler.step() else {
            throw ValidationError("the scheduler released no sweep (one was under way on this virtual host)")
        }
        let releaseTook = ContinuousClock.now - releaseStarted
        print(
            "\nreleased by the real scheduler into fanfic.sweep.delay: \(count) checks in "
                + "\(releaseTook.formatted(.units(allowed: [.seconds, .milliseconds], width: .narrow))); a day of "
                + "\(interval) s, an hour of \(String(format: "%.0f", scaledHour)) s, budget \(settings.perSiteBudget)/h "
                + "(\(budget) per scaled hour)")
        let deadline = Date() + TimeInterval(interval) + settings.interval.timeInterval / 10 + 120
        while arrivals.withLock({ $0.count }) < count, Date() < deadline {
            try await Task.sleep(for: .milliseconds(200))
        }
        let all = arrivals.withLock { $0 }
        let start = all.compactMap(\.due).min() ?? now
        print(
            row(
                ("site", -10), ("arrived", 8), ("most in 1 h (scaled)", 21), ("budget", 7), ("late p50", 10),
                ("late p99", 10), ("late max", 10)))
        for (site, _) in Self.sites {
            let mine = all.filter { $0.site == site }
            let times = mine.map { $0.arrived.timeIntervalSince(start) }
            let late = mine.compactMap { entry in entry.due.map { entry.arrived.timeIntervalSince($0) * 1000 } }
                .sorted()
            func percentile(_ p: Double) -> Double {
                late.isEmpty ? .nan : late[min(late.count - 1, Int(Double(late.count - 1) * p))]
            }
            print(
                row(
                    (site, -10), ("\(mine.count)", 8), ("\(Self.mostInWindow(times, width: scaledHour))", 21),
                    ("\(budget)", 7), (String(format: "%.0f ms", percentile(0.5)), 10),
                    (String(format: "%.0f ms", percentile(0.99)), 10),
                    (String(format: "%.0f ms", late.last ?? .nan), 10)))
        }
        let distinct = Set(all.map(\.url)).count
        print("\(all.count) of \(count) checks arrived in fanfic.ingress; \(all.count - distinct) twice")
        await connection.close()
    }
}

/// Columns: a positive width pads on the left (numbers), a negative one on the right (names).
private func row(_ cells: (String, Int)...) -> String {
    cells.map { text, width in
        let pad = String(repeating: " ", count: max(0, abs(width) - text.count))
        return width < 0 ? text + pad : pad + text
    }.joined(separator: " ")
}

extension Int {
    fileprivate var timeInterval: TimeInterval { TimeInterval(self) }
}
