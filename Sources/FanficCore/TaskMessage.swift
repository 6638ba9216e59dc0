import Foundation

/// One story to fetch: the message that travels through every queue.
///
/// JSON with snake_case keys and a schema `version`; see README.md for an example. Retry
/// counting lives here (`attempt`, `retry_tier`, `hail_mary`), never in the broker's headers.
public struct TaskMessage: Codable, Sendable, Hashable {
    /// The schema version this build writes and reads.
    public static let currentVersion = 1

    /// What a worker should do when the story is already in the library.
    public enum Behavior: String, Codable, Sendable, Hashable, CaseIterable {
        /// Update by the configured update method.
        case normal
        /// Download again whatever the dates say.
        case force
    }

    public var version: Int
    /// Unique per submission, for logs and events; not part of the identity.
    public var id: String
    /// The canonical story URL.
    public var url: String
    /// The site key: the lock the coordinator holds while a worker runs this task.
    public var site: String
    /// The Calibre book id, when known.
    public var calibreID: Int?
    /// Failed attempts so far.
    public var attempt: Int
    /// The retry tier (index into the configured delays) this task last waited in.
    public var retryTier: Int?
    /// This is the last, slower and more forgiving try.
    public var hailMary: Bool
    public var behavior: Behavior
    /// Who submitted it: `email:<address>`, `cli:<user>`, ..., `sweep` for a scheduled check.
    public var submittedBy: String
    /// `submitted_by` of a sweep's update check: it yields to every other task of its site.
    public static let sweepSubmitter = "sweep"
    public var submittedAt: Date

    enum CodingKeys: String, CodingKey {
        case version, id, url, site
        case calibreID = "calibre_id"
        case attempt
        case retryTier = "retry_tier"
        case hailMary = "hail_mary"
        case behavior
        case submittedBy = "submitted_by"
        case submittedAt = "submitted_at"
    }

    public init(
        id: String = UUID().uuidString.lowercased(),
        url: String,
        site: String,
        calibreID: Int? = nil,
        attempt: Int = 0,
        retryTier: Int? = nil,
        hailMary: Bool = false,
        behavior: Behavior = .normal,
        submittedBy: String,
        submittedAt: Date = Date()
    ) {
        self.version = Self.currentVersion
        self.id = id
        self.url = url
        self.site = site
        self.calibreID = calibreID
        self.attempt = attempt
        self.retryTier = retryTier
        self.hailMary = hailMary
        self.behavior = behavior
        self.submittedBy = submittedBy
        // The wire format keeps milliseconds; so does the task, so that it survives a round trip.
        self.submittedAt = Timestamp.date(milliseconds: Timestamp.milliseconds(submittedAt))
    }

    /// The same story twice in the pipeline is processed once: this is what "the same" means.
    public var identity: TaskIdentity { TaskIdentity(url: url, site: site, calibreID: calibreID) }
}

/// The de-duplication key of a task: `(url, site, calibre_id)`.
public struct TaskIdentity: Hashable, Sendable, CustomStringConvertible {
    public let url: String
    public let site: String
    public let calibreID: Int?

    public init(url: String, site: String, calibreID: Int?) {
        self.url = url
        self.site = site
        self.calibreID = calibreID
    }

    public var description: String {
        "\(site) \(url)" + (calibreID.map { " #\($0)" } ?? "")
    }
}
