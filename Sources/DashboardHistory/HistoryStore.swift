import FanficCore
import Foundation

/// Where the dashboard keeps what happened: every event from `fanfic.events`, grouped into task
/// runs (one story's way from queued to its outcome), for the History, Sites and Failed pages
/// and `GET /api/history`.
///
/// A protocol so that a bigger installation can keep its history in PostgreSQL (a second
/// implementation over postgres-nio) without touching the recorder or the pages; SQLite
/// (``SQLiteHistoryStore``) is the default.
public protocol HistoryStore: Sendable {
    /// Records events in the order they arrived, each into its task's run (see ``TaskRun``).
    func record(_ events: [FanficEvent]) throws

    /// The task runs that match, newest first.
    func history(_ query: HistoryQuery) throws -> [TaskHistory]

    /// How many runs stand at each outcome, among those with an event at or after `since`.
    func outcomeCounts(since: Date) throws -> [TaskOutcome: Int]

    /// The latest events of these types (about no task: mail polls, workers, sites), newest
    /// first, at most `limit` (and ``HistoryQuery/maxLimit``).
    func events(of kinds: [FanficEvent.Kind], limit: Int) throws -> [FanficEvent]

    /// Each site's runs with an event at or after `since`: outcomes, retries, durations.
    func siteFigures(since: Date) throws -> [SiteFigures]

    /// Forgets runs that ended, and events, before `cutoff`; how many events went.
    @discardableResult func prune(before cutoff: Date) throws -> Int

    /// Events kept.
    func eventCount() throws -> Int
}

/// Where a task stands, from the last event of its run that says so.
public enum TaskOutcome: String, Sendable, Codable, CaseIterable {
    /// Routed to a worker's queue or a site's backlog.
    case queued
    case running
    /// Waiting in a retry tier.
    case retrying
    /// Waiting for its site's pause after a block.
    case deferred
    case succeeded
    /// In `fanfic.failed`.
    case failed
    /// Parked by the coordinator: not a task it could read.
    case parked
    /// Dropped on arrival: the same story was already queued or running.
    case duplicate
    /// Taken out of the broker from the dashboard: a waiting retry cancelled, a failed task purged.
    case cancelled

    /// Whether the run is over: a later event for the URL starts a new run.
    public var isFinal: Bool {
        switch self {
        case .succeeded, .failed, .parked, .duplicate, .cancelled: true
        case .queued, .running, .retrying, .deferred: false
        }
    }

    /// What an event says about its task's run; nil for events about no task's state.
    public init?(after kind: FanficEvent.Kind) {
        switch kind {
        case .taskRouted: self = .queued
        case .taskStarted: self = .running
        case .taskRetrying: self = .retrying
        case .taskDeferred: self = .deferred
        case .taskSucceeded: self = .succeeded
        case .taskFailed: self = .failed
        case .taskParked: self = .parked
        case .taskDuplicate: self = .duplicate
        case .taskCancelled: self = .cancelled
        case .siteAssigned, .siteReleased, .sitePaused, .siteResumed, .workerJoined, .workerDead,
            .coordinatorActive, .coordinatorReady, .mailPolled:
            return nil
        }
    }
}

/// What `GET /api/history` and the History page ask for. Every bound is applied by the store.
public struct HistoryQuery: Sendable, Hashable {
    /// A part of the task's URL (case-insensitive).
    public var url: String?
    /// A part of the URL or of the story's title (case-insensitive): the History page's search.
    public var text: String?
    /// The site key, exactly.
    public var site: String?
    public var outcome: TaskOutcome?
    /// Runs that had an event at or after this instant.
    public var since: Date?
    public var limit: Int
    /// Only runs that are their URL's latest (where a story stands now, not every time it ran).
    public var latestOnly: Bool

    /// At most this many runs in one answer.
    public static let maxLimit = 1000

    public init(
        url: String? = nil, text: String? = nil, site: String? = nil, outcome: TaskOutcome? = nil,
        since: Date? = nil, limit: Int = 100, latestOnly: Bool = false
    ) {
        self.text = text
        self.latestOnly = latestOnly
        self.url = url
        self.site = site
        self.outcome = outcome
        self.since = since
        self.limit = min(max(limit, 1), Self.maxLimit)
    }
}

/// One site's figures over a window (the Sites page).
public struct SiteFigures: Sendable, Hashable, Codable {
    public var site: String
    public var runs = 0
    public var succeeded = 0
    public var failed = 0
    /// Retries the runs went through (each `task.retrying`).
    public var retries = 0
    /// Of the succeeded runs that say how long the worker took, in milliseconds.
    public var medianMilliseconds: Int?
    public var p95Milliseconds: Int?

    public init(site: String) { self.site = site }

    /// Succeeded among the runs that ended either way; nil before any did.
    public var successRate: Double? {
        succeeded + failed == 0 ? nil : Double(succeeded) / Double(succeeded + failed)
    }

    /// Adds `runs` runs that stand at `outcome` and went through `retries` retries.
    mutating func add(outcome: TaskOutcome?, runs: Int = 1, retries: Int) {
        self.runs += runs
        self.retries += retries
        if outcome == .succeeded { succeeded += runs }
        if outcome == .failed { failed += runs }
    }

    /// The median and 95th percentile (nearest rank) of `values`.
    mutating func setDurations(_ values: [Int]) {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return }
        func rank(_ fraction: Double) -> Int {
            sorted[min(sorted.count - 1, max(0, Int((fraction * Double(sorted.count)).rounded(.up)) - 1))]
        }
        medianMilliseconds = rank(0.5)
        p95Milliseconds = rank(0.95)
    }

    enum CodingKeys: String, CodingKey {
        case site, runs, succeeded, failed, retries
        case medianMilliseconds = "median_ms"
        case p95Milliseconds = "p95_ms"
        case successRate = "success_rate"
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(site, forKey: .site)
        try container.encode(runs, forKey: .runs)
        try container.encode(succeeded, forKey: .succeeded)
        try container.encode(failed, forKey: .failed)
        try container.encode(retries, forKey: .retries)
        try container.encodeIfPresent(medianMilliseconds, forKey: .medianMilliseconds)
        try container.encodeIfPresent(p95Milliseconds, forKey: .p95Milliseconds)
        try container.encodeIfPresent(successRate, forKey: .successRate)
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        site = try container.decode(String.self, forKey: .site)
        runs = try container.decode(Int.self, forKey: .runs)
        succeeded = try container.decode(Int.self, forKey: .succeeded)
        failed = try container.decode(Int.self, forKey: .failed)
        retries = try container.decode(Int.self, forKey: .retries)
        medianMilliseconds = try container.decodeIfPresent(Int.self, forKey: .medianMilliseconds)
        p95Milliseconds = try container.decodeIfPresent(Int.self, forKey: .p95Milliseconds)
    }
}

/// One task run: a URL from the event that started the run to its outcome, with every event.
public struct TaskHistory: Sendable, Hashable, Codable {
    public var url: String
    /// The story's title, once a worker has read its EPUB.
    public var title: String?
    public var site: String?
    public var outcome: TaskOutcome
    public var calibreID: Int?
    public var firstAt: Date
    public var lastAt: Date
    /// Its events, oldest first.
    public var timeline: [FanficEvent]

    public init(
        url: String, site: String?, outcome: TaskOutcome, calibreID: Int?, firstAt: Date, lastAt: Date,
        timeline: [FanficEvent]
    ) {
        self.url = url
        self.site = site
        self.outcome = outcome
        self.calibreID = calibreID
        self.firstAt = firstAt
        self.lastAt = lastAt
        self.timeline = timeline
    }

    enum CodingKeys: String, CodingKey {
        case url, title, site, outcome, timeline
        case calibreID = "calibre_id"
        case firstAt = "first_at"
        case lastAt = "last_at"
    }
}

/// How events become runs, the same for every store. Events reach the dashboard out of order
/// (a role publishes several at once; workers and the coordinator are different hosts), so the
/// order that counts is their time, not their arrival:
/// - an event with a URL joins the URL's latest run if that run is open, or if the event is not
///   later than the run's last event (a straggler of a run that already ended); otherwise it
///   opens a new run;
/// - the run's outcome is what its latest event says; an older one joins the timeline only;
/// - a duplicate leaves an existing run's outcome as it is (the copy was dropped; the original
///   goes on), and is a run of its own only when it opens one.
public enum TaskRun {
    /// Whether an event at `at` (milliseconds) belongs to a run that is `open` or ended at `lastAt`.
    public static func joins(event at: Int64, open: Bool, lastAt: Int64) -> Bool {
        open || at <= lastAt
    }

    /// The run's outcome after `event`, the run's latest, given its outcome before (nil: a new run).
    public static func outcome(after event: FanficEvent, current: TaskOutcome?) -> TaskOutcome? {
        guard let said = TaskOutcome(after: event.kind) else { return current }
        if said == .duplicate, let current { return current }
        return said
    }
}
