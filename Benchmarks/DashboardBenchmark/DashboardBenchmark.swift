import ArgumentParser
import DashboardHistory
import DashboardServer
import FanficBroker
import FanficCore
import Foundation
import GRDB

/// The dashboard's history at size: fills a SQLite history with N task runs (4 events each, over
/// 4 sites, spread over 30 days), then times what `GET /api/history` does for the usual
/// questions (the store query and the JSON), beside a baseline measured in the same run: the
/// same number of rows read straight from the event table by its primary key, the floor any
/// history query pays. Also times recording (events per second through the store's run rules)
/// against bare inserts of the same bodies. Prints one JSON object.
@main
struct DashboardBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dashboard-bench", abstract: "Measure the dashboard's history at size.")

    @Option(help: "Task runs in the history.")
    var runs = 100_000

    @Option(help: "Repetitions of each query (the median is reported).")
    var repeats = 21

    func run() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent(
            "dashboard-bench-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let store = try SQLiteHistoryStore(path: folder.appendingPathComponent("history.sqlite").path)
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        let sites = ["test1.com", "test2.com", "test3.com", "test4.com"]
        let kinds: [FanficEvent.Kind] = [.taskRouted, .taskStarted, .taskRetrying, .taskSucceeded]
        func events(_ index: Int) -> [FanficEvent] {
            let site = sites[index % sites.count]
            let at = start.addingTimeInterval(Double(index) * 26)  // 100,000 runs: 30 days
            let kindsOfRun = index % 10 == 0 ? [.taskRouted, .taskStarted, .taskFailed] : kinds
            return kindsOfRun.enumerated().map { step, kind in
                FanficEvent(
                    kind, source: "worker:bench", at: at.addingTimeInterval(Double(step)), worker: "bench", site: site,
                    url: "http://\(site)?sid=\(index)", reason: kind == .taskFailed ? "story not found" : nil,
                    detail: kind == .taskSucceeded ? "updated" : nil,
                    durationMilliseconds: kind == .taskSucceeded || kind == .taskFailed
                        ? 400 + index * 7919 % 20_000 : nil)
            }
        }

        // Recording, through the run rules, in batches of 1,000 events.
        let recordStart = ContinuousClock.now
        var batch: [FanficEvent] = []
        var recorded = 0
        for index in 0..<runs {
            batch += events(index)
            if batch.count >= 1000 {
                try store.record(batch)
                recorded += batch.count
                batch = []
            }
        }
        try store.record(batch)
        recorded += batch.count
        let recordSeconds = (ContinuousClock.now - recordStart).seconds

        // Baseline for writes: the same bodies inserted into a bare table, same batches.
        let bare = try DatabasePool(path: folder.appendingPathComponent("bare.sqlite").path)
        try bare.write { try $0.execute(sql: "CREATE TABLE event (id INTEGER PRIMARY KEY, body BLOB NOT NULL)") }
        let bareStart = ContinuousClock.now
        var bareBatch: [Data] = []
        for index in 0..<runs {
            bareBatch += events(index).map { WireCodec.encode($0) }
            if bareBatch.count >= 1000 || index == runs - 1 {
                try bare.write { db in
                    for body in bareBatch {
                        try db.execute(sql: "INSERT INTO event (body) VALUES (?)", arguments: [body])
                    }
                }
                bareBatch = []
            }
        }
        let bareSeconds = (ContinuousClock.now - bareStart).seconds

        func median(_ work: () throws -> Void) rethrows -> Double {
            var times: [Double] = []
            for _ in 0..<repeats {
                let began = ContinuousClock.now
                try work()
                times.append((ContinuousClock.now - began).seconds * 1000)
            }
            return times.sorted()[times.count / 2]
        }
        // The floor: 100 runs' worth of event rows (400) read by primary key, decoded, as JSON.
        let floor = try median {
            let bodies = try bare.read { db in
                try Data.fetchAll(db, sql: "SELECT body FROM event ORDER BY id DESC LIMIT 400")
            }
            let decoded = bodies.compactMap { try? WireCodec.decodeEvent($0) }
            _ = WireCodec.encodeValue(decoded)
        }
        let queries: [(String, HistoryQuery)] = [
            ("latest 100", HistoryQuery()),
            ("url contains", HistoryQuery(url: "sid=4242")),
            ("site + failed", HistoryQuery(site: "test3.com", outcome: .failed)),
            ("last day", HistoryQuery(since: start.addingTimeInterval(Double(runs) * 26 - 86_400))),
            ("1000 rows", HistoryQuery(limit: 1000)),
        ]
        var results: [[String: Any]] = []
        for (name, query) in queries {
            var count = 0
            let milliseconds = try median {
                let answer = try store.history(query)
                count = answer.count
                _ = WireCodec.encodeValue(answer)
            }
            results.append([
                "query": name, "runs_returned": count, "ms": (milliseconds * 100).rounded() / 100,
                "vs_floor": (milliseconds / floor * 100).rounded() / 100,
            ])
        }
        let countsMilliseconds = try median { _ = try store.outcomeCounts(since: start) }

        // The pages, rendered as the server renders them (store queries and HTML), with a fleet
        // of 4 workers each running one of the history's stories.
        let end = start.addingTimeInterval(Double(runs) * 26)
        let renderer = PageRenderer(store: store, now: end)
        var status = FleetStatusReport(brokerURL: "amqp://bench")
        status.active = "coordinator@bench"
        status.workers = sites.enumerated().map { index, site in
            FleetStatusReport.Worker(
                status: WorkerStatus(
                    id: "bench-\(index)", host: "bench", site: site, current: "http://\(site)?sid=\(runs - 1 - index)"),
                queued: 2)
        }
        status.backlogs = ["test1.com": 12]
        let pages: [(String, Page, [String: String])] = [
            ("Now", .now, [:]), ("History", .history, [:]), ("History: URL search", .history, ["q": "sid=4242"]),
            ("History: failed, 24 h", .history, ["outcome": "failed", "window": "24h"]),
            ("Sites, 24 h", .sites, ["window": "24h"]), ("Sites, 30 d", .sites, ["window": "30d"]),
            ("Failed", .failed, [:]),
        ]
        var pageResults: [[String: Any]] = []
        for (name, page, parameters) in pages {
            var bytes = 0
            let milliseconds = try median {
                bytes = try renderer.render(page, status: status, parameters: parameters).utf8.count
            }
            pageResults.append(["page": name, "ms": (milliseconds * 100).rounded() / 100, "bytes": bytes])
        }
        let result: [String: Any] = [
            "runs": runs, "events": try store.eventCount(),
            "record_events_per_s": Int(Double(recorded) / recordSeconds),
            "bare_insert_events_per_s": Int(Double(recorded) / bareSeconds),
            "record_vs_bare": (bareSeconds / recordSeconds * 100).rounded() / 100,
            "floor_ms": (floor * 100).rounded() / 100, "queries": results,
            "outcome_counts_ms": (countsMilliseconds * 100).rounded() / 100, "pages": pageResults,
        ]
        let json = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
        FileHandle.standardOutput.write(json + Data("\n".utf8))
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
