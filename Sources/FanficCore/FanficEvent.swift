import Foundation

/// Something that happened, published to the `fanfic.events` topic exchange with `type` as the
/// routing key, for anyone to observe (`fanfic status`, dashboards, tests).
///
/// JSON like the task message. Only `type`, `source` and `at` are always present; the rest
/// depends on the type.
public struct FanficEvent: Codable, Sendable, Hashable {
    /// The routing keys this build publishes. Others may appear later: observers must ignore
    /// types they do not know.
    public enum Kind: String, Codable, Sendable, Hashable, CaseIterable {
        /// Coordinator: a task went to a worker's queue or a site's backlog (`destination`).
        case taskRouted = "task.routed"
        /// Coordinator: the same story was already queued or running; this copy was dropped.
        case taskDuplicate = "task.duplicate"
        /// Coordinator: a message on `fanfic.ingress` did not decode and was parked (`reason`).
        case taskParked = "task.parked"
        /// Worker: started a task.
        case taskStarted = "task.started"
        /// Worker: the story is in the library (`detail`: new, updated, up to date).
        case taskSucceeded = "task.succeeded"
        /// Worker: a retryable failure; the task waits in a retry tier (`detail`: the tier).
        case taskRetrying = "task.retrying"
        /// Worker: the task's site is blocking (`reason`): the task waits for the site's pause
        /// without spending a retry step (`detail`: the tier it passes through).
        case taskDeferred = "task.deferred"
        /// Worker: the task went to `fanfic.failed` (`reason`).
        case taskFailed = "task.failed"
        /// Dashboard: a waiting retry was cancelled, or a failed task purged (`reason`): the task
        /// is gone from the broker.
        case taskCancelled = "task.cancelled"
        /// Coordinator: a site was given to a worker, or taken back from it.
        case siteAssigned = "site.assigned"
        case siteReleased = "site.released"
        /// Coordinator: a worker met a block at the site (`reason`), so no worker contacts it
        /// until `detail`'s time; and the first task there that ended without one
        /// (`duration_ms`: the outage).
        case sitePaused = "site.paused"
        case siteResumed = "site.resumed"
        /// Coordinator: a worker joined the table, or was presumed dead and its queue reclaimed.
        case workerJoined = "worker.joined"
        case workerDead = "worker.dead"
        /// Coordinator: this instance became the active one, or finished rebuilding its table.
        case coordinatorActive = "coordinator.active"
        case coordinatorReady = "coordinator.ready"
        /// Ingester: one check of the mailbox ended (`detail`: messages read; `reason`: why the
        /// check failed; `duration_ms`).
        case mailPolled = "mail.polled"
    }

    public var version: Int
    public var kind: Kind
    /// Who says so: `coordinator@<host>` or `worker:<id>`.
    public var source: String
    public var at: Date
    public var worker: String?
    public var site: String?
    /// The task's URL.
    public var url: String?
    /// The story's own URL, as FanFicFare wrote it into the EPUB (the library's identity for
    /// it), when a worker knows it; may differ from `url` (another spelling of the story).
    public var storyURL: String?
    /// The story's title, as its EPUB says, when a worker read it.
    public var title: String?
    public var taskID: String?
    public var calibreID: Int?
    /// Where a routed task went: `fanfic.worker.<id>` or `fanfic.backlog.<site>`.
    public var destination: String?
    public var reason: String?
    public var detail: String?
    public var attempt: Int?
    public var durationMilliseconds: Int?
    /// A finished task's time by stage (`lookup`, `fanficfare`, `calibredb`, `lock_wait`), in
    /// milliseconds: where `duration_ms` went.
    public var stagesMilliseconds: [String: Int]?

    enum CodingKeys: String, CodingKey {
        case version, kind = "type", source, at, worker, site, url
        case storyURL = "story_url"
        case title
        case taskID = "task_id"
        case calibreID = "calibre_id"
        case destination, reason, detail, attempt
        case durationMilliseconds = "duration_ms"
        case stagesMilliseconds = "stages_ms"
    }

    public init(
        _ kind: Kind, source: String, at: Date = Date(), worker: String? = nil, site: String? = nil,
        url: String? = nil, taskID: String? = nil, calibreID: Int? = nil, destination: String? = nil,
        reason: String? = nil, detail: String? = nil, attempt: Int? = nil, durationMilliseconds: Int? = nil
    ) {
        self.version = TaskMessage.currentVersion
        self.kind = kind
        self.source = source
        self.at = Timestamp.date(milliseconds: Timestamp.milliseconds(at))
        self.worker = worker
        self.site = site
        self.url = url
        self.taskID = taskID
        self.calibreID = calibreID
        self.destination = destination
        self.reason = reason
        self.detail = detail
        self.attempt = attempt
        self.durationMilliseconds = durationMilliseconds
    }

    /// The routing key on `fanfic.events`.
    public var routingKey: String { kind.rawValue }
}

extension WireCodec {
    /// JSONEncoder's bytes (sorted keys); the common events are written by hand (see ``EventJSON``).
    public static func encode(_ event: FanficEvent) -> Data { EventJSON.encode(event) ?? encodeJSON(event) }

    public static func decodeEvent(_ data: Data) throws(MessageDecodingError) -> FanficEvent {
        try decodeVersioned(data)
    }

    /// An event from the wire, for an observer that keeps it (the dashboard's history): the size
    /// checked before parsing, then every field bounded, so what anyone publishes to
    /// `fanfic.events` cannot grow a store past what real events need.
    public static func decodeEvent(
        _ data: Data, limits: WireLimits, maxTextLength: Int
    ) throws(MessageDecodingError) -> FanficEvent {
        try limits.check(size: data.count)
        let event = try decodeEvent(data)
        func bound(_ name: String, _ value: String?, _ maximum: Int) throws(MessageDecodingError) {
            guard let value, value.count > maximum else { return }
            throw MessageDecodingError(.tooLarge, "'\(name)' is \(value.count) characters; at most \(maximum)")
        }
        try bound("source", event.source, 256)
        try bound("worker", event.worker, 256)
        try bound("site", event.site, 256)
        try bound("task_id", event.taskID, 128)
        try bound("url", event.url, limits.maxURLLength)
        try bound("story_url", event.storyURL, limits.maxURLLength)
        try bound("title", event.title, 1000)
        try bound("destination", event.destination, 512)
        try bound("reason", event.reason, maxTextLength)
        try bound("detail", event.detail, maxTextLength)
        if event.source.isEmpty { throw MessageDecodingError(.invalidField, "'source' is empty") }
        if event.url?.isEmpty == true { throw MessageDecodingError(.invalidField, "'url' is empty") }
        for (name, value) in [("attempt", event.attempt), ("duration_ms", event.durationMilliseconds)] {
            if let value, value < 0 { throw MessageDecodingError(.invalidField, "'\(name)' is negative") }
        }
        if let stages = event.stagesMilliseconds {
            if stages.count > 32 {
                throw MessageDecodingError(.tooLarge, "'stages_ms' has \(stages.count) stages; at most 32")
            }
            for (stage, value) in stages {
                try bound("a 'stages_ms' name", stage, 64)
                if value < 0 { throw MessageDecodingError(.invalidField, "'stages_ms.\(stage)' is negative") }
            }
        }
        return event
    }
}

/// An event's JSON written by hand: the coordinator emits one per task it routes, and
/// JSONEncoder's generic path was a large share of routing's cost. Only for events whose text is
/// printable ASCII without quotes or backslashes (nothing to escape) and without stage times:
/// their bytes are then exactly what JSONEncoder writes with sorted keys, which a test compares
/// field by field; any other event is nil here and goes through JSONEncoder.
enum EventJSON {
    static func encode(_ event: FanficEvent) -> Data? {
        guard event.stagesMilliseconds == nil else { return nil }
        var writer = Writer()
        // In JSONEncoder's sorted order of the keys (`CodingKeys`).
        writer.string("at", Timestamp.format(event.at))
        writer.int("attempt", event.attempt)
        writer.int("calibre_id", event.calibreID)
        writer.string("destination", event.destination)
        writer.string("detail", event.detail)
        writer.int("duration_ms", event.durationMilliseconds)
        writer.string("reason", event.reason)
        writer.string("site", event.site)
        writer.string("source", event.source)
        writer.string("story_url", event.storyURL)
        writer.string("task_id", event.taskID)
        writer.string("title", event.title)
        writer.string("type", event.kind.rawValue)
        writer.string("url", event.url)
        writer.int("version", event.version)
        writer.string("worker", event.worker)
        return writer.finish()
    }

    struct Writer {
        private var bytes: [UInt8] = []
        /// False once a string needed escaping: the caller takes JSONEncoder's path.
        private var plain = true

        init() { bytes.reserveCapacity(320) }

        private mutating func key(_ name: StaticString) {
            bytes.append(bytes.isEmpty ? UInt8(ascii: "{") : UInt8(ascii: ","))
            bytes.append(UInt8(ascii: "\""))
            bytes.append(contentsOf: UnsafeBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount))
            bytes.append(contentsOf: [UInt8(ascii: "\""), UInt8(ascii: ":")])
        }

        mutating func string(_ name: StaticString, _ value: String?) {
            guard plain, let value else { return }
            key(name)
            bytes.append(UInt8(ascii: "\""))
            for byte in value.utf8 {
                // Printable ASCII but the quote and the backslash: written as is by JSONEncoder too.
                guard byte >= 0x20, byte < 0x7F, byte != UInt8(ascii: "\""), byte != UInt8(ascii: "\\") else {
                    plain = false
                    return
                }
                bytes.append(byte)
            }
            bytes.append(UInt8(ascii: "\""))
        }

        mutating func int(_ name: StaticString, _ value: Int?) {
            guard plain, let value else { return }
            key(name)
            bytes.append(contentsOf: String(value).utf8)
        }

        consuming func finish() -> Data? {
            guard plain, !bytes.isEmpty else { return nil }
            bytes.append(UInt8(ascii: "}"))
            return Data(bytes)
        }
    }
}
