import FanficCore
import Foundation
import GRDB

/// The history in one SQLite file (GRDB, WAL: the pages read while the recorder writes).
///
/// Two tables: `run` (one row per task run, with its outcome, for searching and counting) and
/// `event` (each event's JSON as it arrived, with its run). Times are Unix milliseconds.
public final class SQLiteHistoryStore: HistoryStore {
    private let database: any DatabaseWriter

    /// The store in the file at `path` (created with its folder if missing).
    public convenience init(path: String) throws {
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent()
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try self.init(database: DatabasePool(path: path))
    }

    /// A store in memory, gone with it (tests, benchmarks).
    public static func inMemory() throws -> SQLiteHistoryStore {
        try SQLiteHistoryStore(database: DatabaseQueue())
    }

    init(database: any DatabaseWriter) throws {
        self.database = database
        try Self.migrator.migrate(database)
    }

    private static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE run (
                        id INTEGER PRIMARY KEY,
                        url TEXT NOT NULL,
                        site TEXT,
                        outcome TEXT NOT NULL,
                        calibre_id INTEGER,
                        first_at INTEGER NOT NULL,
                        last_at INTEGER NOT NULL,
                        open INTEGER NOT NULL
                    );
                    CREATE INDEX run_url ON run(url, id);
                    CREATE VIRTUAL TABLE run_url_search USING fts5(
                        url, content = 'run', content_rowid = 'id', tokenize = 'trigram');
                    CREATE TRIGGER run_url_search_insert AFTER INSERT ON run BEGIN
                        INSERT INTO run_url_search(rowid, url) VALUES (new.id, new.url);
                    END;
                    CREATE TRIGGER run_url_search_delete AFTER DELETE ON run BEGIN
                        INSERT INTO run_url_search(run_url_search, rowid, url) VALUES ('delete', old.id, old.url);
                    END;
                    CREATE INDEX run_last_at ON run(last_at);
                    CREATE INDEX run_site_last_at ON run(site, last_at);
                    CREATE TABLE event (
                        id INTEGER PRIMARY KEY,
                        run_id INTEGER REFERENCES run(id) ON DELETE CASCADE,
                        at INTEGER NOT NULL,
                        type TEXT NOT NULL,
                        site TEXT,
                        body BLOB NOT NULL
                    );
                    CREATE INDEX event_run ON event(run_id);
                    CREATE INDEX event_at ON event(at);
                    """)
        }
        migrator.registerMigration("v2 site figures") { db in
            // For the Sites page: a finished run's duration and how many retries it took.
            try db.execute(
                sql: """
                    ALTER TABLE run ADD COLUMN duration_ms INTEGER;
                    ALTER TABLE run ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
                    CREATE INDEX event_type_at ON event(type, at);
                    CREATE INDEX run_outcome_last_at ON run(outcome, last_at);
                    CREATE INDEX run_site_figures ON run(site, outcome, last_at, duration_ms, retries);
                    ALTER TABLE run ADD COLUMN title TEXT;
                    CREATE VIRTUAL TABLE run_title_search USING fts5(
                        title, content = 'run', content_rowid = 'id', tokenize = 'trigram');
                    CREATE TRIGGER run_title_search_insert AFTER INSERT ON run WHEN new.title IS NOT NULL BEGIN
                        INSERT INTO run_title_search(rowid, title) VALUES (new.id, new.title);
                    END;
                    CREATE TRIGGER run_title_search_update AFTER UPDATE OF title ON run BEGIN
                        INSERT INTO run_title_search(run_title_search, rowid, title)
                            SELECT 'delete', old.id, old.title WHERE old.title IS NOT NULL;
                        INSERT INTO run_title_search(rowid, title) SELECT new.id, new.title WHERE new.title IS NOT NULL;
                    END;
                    CREATE TRIGGER run_title_search_delete AFTER DELETE ON run WHEN old.title IS NOT NULL BEGIN
                        INSERT INTO run_title_search(run_title_search, rowid, title) VALUES ('delete', old.id, old.title);
                    END;
                    """)
        }
        return migrator
    }

    public func record(_ events: [FanficEvent]) throws {
        guard !events.isEmpty else { return }
        try database.write { db in
            for event in events { try Self.record(event, in: db) }
        }
    }

    private static func record(_ event: FanficEvent, in db: Database) throws {
        let at = Timestamp.milliseconds(event.at)
        var runID: Int64?
        if let url = event.url {
            let latest = try Row.fetchOne(
                db, sql: "SELECT id, outcome, open, last_at FROM run WHERE url = ? ORDER BY id DESC LIMIT 1",
                arguments: [url])
            let joins =
                latest.map { run in TaskRun.joins(event: at, open: run["open"], lastAt: run["last_at"]) } ?? false
            if let latest, joins {
                let id: Int64 = latest["id"]
                let current = TaskOutcome(rawValue: latest["outcome"])
                let lastAt: Int64 = latest["last_at"]
                // An event older than the run's latest (published concurrently, or by another
                // host) joins its timeline without changing where the task stands.
                let outcome = at >= lastAt ? TaskRun.outcome(after: event, current: current) ?? current : current
                try db.execute(
                    sql: """
                        UPDATE run SET outcome = coalesce(?, outcome), open = ?, first_at = min(first_at, ?),
                            last_at = max(last_at, ?), site = coalesce(site, ?), calibre_id = coalesce(?, calibre_id),
                            duration_ms = coalesce(?, duration_ms), retries = retries + ?
                        WHERE id = ?
                        """,
                    arguments: [
                        outcome?.rawValue, !(outcome?.isFinal ?? false), at, at, event.site, event.calibreID,
                        Self.runDuration(event), event.kind == .taskRetrying ? 1 : 0, id,
                    ])
                // Only when it says one and another: each change rewrites the title's search entry.
                if let title = event.title {
                    try db.execute(
                        sql: "UPDATE run SET title = ? WHERE id = ? AND title IS NOT ?", arguments: [title, id, title])
                }
                runID = id
            } else if let outcome = TaskRun.outcome(after: event, current: nil) {
                try db.execute(
                    sql: """
                        INSERT INTO run (url, site, outcome, calibre_id, first_at, last_at, open, duration_ms, retries, title)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                        """,
                    arguments: [
                        url, event.site, outcome.rawValue, event.calibreID, at, at, !outcome.isFinal,
                        Self.runDuration(event), event.kind == .taskRetrying ? 1 : 0, event.title,
                    ])
                runID = db.lastInsertedRowID
            }
        }
        try db.execute(
            sql: "INSERT INTO event (run_id, at, type, site, body) VALUES (?, ?, ?, ?, ?)",
            arguments: [runID, at, event.kind.rawValue, event.site, WireCodec.encode(event)])
    }

    /// A worker's time for the task, from the event that ends its attempt.
    private static func runDuration(_ event: FanficEvent) -> Int? {
        event.kind == .taskSucceeded || event.kind == .taskFailed ? event.durationMilliseconds : nil
    }

    public func history(_ query: HistoryQuery) throws -> [TaskHistory] {
        try database.read { db in
            var conditions: [String] = []
            var arguments: StatementArguments = []
            if let url = query.url, !url.isEmpty {
                let (condition, argument) = Self.contains(url, column: "url", index: "run_url_search")
                conditions.append(condition)
                arguments += [argument]
            }
            if let text = query.text, !text.isEmpty {
                let (inURL, urlArgument) = Self.contains(text, column: "url", index: "run_url_search")
                let (inTitle, titleArgument) = Self.contains(text, column: "title", index: "run_title_search")
                conditions.append("(\(inURL) OR \(inTitle))")
                arguments += [urlArgument, titleArgument]
            }
            if let site = query.site {
                conditions.append("site = ?")
                arguments += [site]
            }
            if let outcome = query.outcome {
                conditions.append("outcome = ?")
                arguments += [outcome.rawValue]
            }
            if let since = query.since {
                conditions.append("last_at >= ?")
                arguments += [Timestamp.milliseconds(since)]
            }
            if query.latestOnly {
                conditions.append(
                    "NOT EXISTS (SELECT 1 FROM run later WHERE later.url = run.url AND later.id > run.id)")
            }
            let filter = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
            arguments += [query.limit]
            let runs = try Row.fetchAll(
                db, sql: "SELECT * FROM run \(filter) ORDER BY last_at DESC, id DESC LIMIT ?", arguments: arguments)
            guard !runs.isEmpty else { return [] }
            let ids: [Int64] = runs.map { $0["id"] }
            var timelines: [Int64: [FanficEvent]] = [:]
            let rows = try Row.fetchCursor(
                db,
                sql: """
                    SELECT run_id, body FROM event WHERE run_id IN (\(ids.map { _ in "?" }.joined(separator: ",")))
                    ORDER BY at, id
                    """,
                arguments: StatementArguments(ids))
            while let row = try rows.next() {
                let body: Data = row["body"]
                // Stored by this store from events that decoded: one that no longer does (a type a
                // later build dropped) is left out of the timeline, not an error.
                if let event = try? WireCodec.decodeEvent(body) { timelines[row["run_id"], default: []].append(event) }
            }
            return runs.map { run in
                let id: Int64 = run["id"]
                var history = TaskHistory(
                    url: run["url"], site: run["site"], outcome: TaskOutcome(rawValue: run["outcome"]) ?? .queued,
                    calibreID: run["calibre_id"], firstAt: Timestamp.date(milliseconds: run["first_at"]),
                    lastAt: Timestamp.date(milliseconds: run["last_at"]), timeline: timelines[id] ?? [])
                history.title = run["title"]
                return history
            }
        }
    }

    public func outcomeCounts(since: Date) throws -> [TaskOutcome: Int] {
        try database.read { db in
            var counts: [TaskOutcome: Int] = [:]
            let rows = try Row.fetchAll(
                db, sql: "SELECT outcome, count(*) AS n FROM run WHERE last_at >= ? GROUP BY outcome",
                arguments: [Timestamp.milliseconds(since)])
            for row in rows {
                if let outcome = TaskOutcome(rawValue: row["outcome"]) { counts[outcome] = row["n"] }
            }
            return counts
        }
    }

    public func events(of kinds: [FanficEvent.Kind], limit: Int) throws -> [FanficEvent] {
        guard !kinds.isEmpty, limit > 0 else { return [] }
        return try database.read { db in
            let bodies = try Data.fetchAll(
                db,
                sql: """
                    SELECT body FROM event WHERE type IN (\(kinds.map { _ in "?" }.joined(separator: ",")))
                    ORDER BY at DESC, id DESC LIMIT ?
                    """,
                arguments: StatementArguments(kinds.map(\.rawValue)) + [min(limit, HistoryQuery.maxLimit)])
            return bodies.compactMap { try? WireCodec.decodeEvent($0) }
        }
    }

    public func siteFigures(since: Date) throws -> [SiteFigures] {
        let cutoff = Timestamp.milliseconds(since)
        return try database.read { db in
            // Counted by SQLite; only the durations come out, as integers, site by site.
            var figures: [String: SiteFigures] = [:]
            let rows = try Row.fetchAll(
                db,
                sql: """
                    SELECT site, outcome, count(*), sum(retries) FROM run
                    WHERE last_at >= ? AND site IS NOT NULL GROUP BY site, outcome
                    """,
                arguments: [cutoff])
            for row in rows {
                let site: String = row[0]
                figures[site, default: SiteFigures(site: site)].add(
                    outcome: TaskOutcome(rawValue: row[1]), runs: row[2], retries: row[3])
            }
            for site in figures.keys {
                let durations = try Int.fetchAll(
                    db,
                    sql: """
                        SELECT duration_ms FROM run WHERE site = ? AND last_at >= ? AND outcome = 'succeeded'
                            AND duration_ms IS NOT NULL
                        """,
                    arguments: [site, cutoff])
                figures[site]?.setDurations(durations)
            }
            return figures.values.sorted { $0.site < $1.site }
        }
    }

    @discardableResult public func prune(before cutoff: Date) throws -> Int {
        let millis = Timestamp.milliseconds(cutoff)
        return try database.write { db in
            // A run with no event since the cutoff is over, open or not: the retention bounds
            // the file even when a run never saw its outcome (a worker that vanished).
            let before = try Int.fetchOne(db, sql: "SELECT count(*) FROM event") ?? 0
            try db.execute(sql: "DELETE FROM run WHERE last_at < ?", arguments: [millis])
            try db.execute(sql: "DELETE FROM event WHERE run_id IS NULL AND at < ?", arguments: [millis])
            let after = try Int.fetchOne(db, sql: "SELECT count(*) FROM event") ?? 0
            return before - after
        }
    }

    public func eventCount() throws -> Int {
        try database.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM event") ?? 0 }
    }

    /// The condition that `column` contains `text` (case-insensitive), and its argument. The
    /// trigram index answers LIKE '%text%' without reading every run; it cannot take an ESCAPE
    /// clause, so text shorter than a trigram or with LIKE's own characters goes the slow way.
    static func contains(_ text: String, column: String, index: String) -> (String, any DatabaseValueConvertible) {
        if text.count >= 3, !text.contains(where: { "%_\\".contains($0) }) {
            return ("id IN (SELECT rowid FROM \(index) WHERE \(column) LIKE ?)", "%" + text + "%")
        }
        return ("\(column) LIKE ? ESCAPE '\\'", likePattern(containing: text))
    }

    /// `%text%` with LIKE's own characters taken literally.
    static func likePattern(containing text: String) -> String {
        var escaped = ""
        for character in text {
            if character == "%" || character == "_" || character == "\\" { escaped.append("\\") }
            escaped.append(character)
        }
        return "%" + escaped + "%"
    }
}
