import Foundation

/// What a coordinator answers on `fanfic.status`: who it is, whether it is active, and (when
/// active) its table of workers. `fanfic status` asks every coordinator at once and adds the
/// queue depths it reads from the broker itself.
public struct CoordinatorStatus: Codable, Sendable, Hashable {
    public enum Role: String, Codable, Sendable, Hashable {
        case active, standby
    }

    /// Where an active coordinator's term is: rebuilding its table from heartbeats, looking for
    /// backlogs, or assigning sites.
    public enum Phase: String, Codable, Sendable, Hashable {
        case rebuilding, discovering, running
    }

    public var version: Int
    /// `coordinator@<host>:<pid>`.
    public var name: String
    public var host: String
    public var role: Role
    /// When this process started, and when it became active.
    public var startedAt: Date
    public var activeSince: Date?
    public var phase: Phase?
    public var workers: [WorkerStatus]
    /// Sites with tasks in a backlog and no worker yet, oldest first.
    public var waitingSites: [String]
    /// Every site this term has seen, the waiting ones included, sorted: where `fanfic status`
    /// looks for backlogs.
    public var sites: [String]
    /// Sites no worker contacts after a block, and those being tried again.
    public var pausedSites: [PausedSite]

    enum CodingKeys: String, CodingKey {
        case version, name, host, role, phase, workers, sites
        case pausedSites = "paused_sites"
        case startedAt = "started_at"
        case activeSince = "active_since"
        case waitingSites = "waiting_sites"
    }

    public init(
        name: String, host: String, role: Role, startedAt: Date, activeSince: Date? = nil, phase: Phase? = nil,
        workers: [WorkerStatus] = [], waitingSites: [String] = [], sites: [String] = []
    ) {
        self.version = TaskMessage.currentVersion
        self.name = name
        self.host = host
        self.role = role
        self.startedAt = startedAt
        self.activeSince = activeSince
        self.phase = phase
        self.workers = workers
        self.waitingSites = waitingSites
        self.sites = sites
        self.pausedSites = []
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        version = try container.decode(Int.self, forKey: .version)
        name = try container.decode(String.self, forKey: .name)
        host = try container.decode(String.self, forKey: .host)
        role = try container.decode(Role.self, forKey: .role)
        startedAt = try container.decode(Date.self, forKey: .startedAt)
        activeSince = try container.decodeIfPresent(Date.self, forKey: .activeSince)
        phase = try container.decodeIfPresent(Phase.self, forKey: .phase)
        workers = try container.decode([WorkerStatus].self, forKey: .workers)
        waitingSites = try container.decode([String].self, forKey: .waitingSites)
        sites = try container.decode([String].self, forKey: .sites)
        // Absent from coordinators older than site pauses.
        pausedSites = try container.decodeIfPresent([PausedSite].self, forKey: .pausedSites) ?? []
    }
}

/// A site paused for the fleet after a block (or, `probing`, being tried again by one worker).
public struct PausedSite: Codable, Sendable, Hashable {
    public var site: String
    public var reason: String
    /// When the outage began and when the current pause ends.
    public var since: Date
    public var until: Date
    /// Pauses in this outage (the cooldown doubles with each).
    public var pauses: Int
    public var probing: Bool

    public init(site: String, reason: String, since: Date, until: Date, pauses: Int, probing: Bool) {
        self.site = site
        self.reason = reason
        self.since = since
        self.until = until
        self.pauses = pauses
        self.probing = probing
    }
}

/// One worker as the active coordinator knows it, from its assignments and the worker's last
/// control message.
public struct WorkerStatus: Codable, Sendable, Hashable {
    public var id: String
    public var host: String?
    /// The site assigned to it, if any.
    public var site: String?
    /// The story it is running now (as of its last heartbeat).
    public var current: String?
    /// Tasks it finished since it started.
    public var tasksDone: Int?
    /// Tasks sent to it and not finished (queued and running).
    public var unfinished: Int?
    public var lastHeartbeat: Date?

    enum CodingKeys: String, CodingKey {
        case id, host, site, current, unfinished
        case tasksDone = "tasks_done"
        case lastHeartbeat = "last_heartbeat"
    }

    public init(
        id: String, host: String? = nil, site: String? = nil, current: String? = nil, tasksDone: Int? = nil,
        unfinished: Int? = nil, lastHeartbeat: Date? = nil
    ) {
        self.id = id
        self.host = host
        self.site = site
        self.current = current
        self.tasksDone = tasksDone
        self.unfinished = unfinished
        self.lastHeartbeat = lastHeartbeat
    }
}

extension WireCodec {
    public static func encode(_ status: CoordinatorStatus) -> Data { encodeJSON(status) }

    public static func decodeStatus(_ data: Data, limits: WireLimits = WireLimits()) throws(MessageDecodingError)
        -> CoordinatorStatus
    {
        try limits.check(size: data.count)
        return try decodeVersioned(data)
    }
}
