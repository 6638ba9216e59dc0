import Foundation

/// What workers tell the coordinator on `fanfic.control`, and what the coordinator answers.
///
/// JSON like the task message, with the same schema `version`. A worker says `hello` when it
/// starts and consumes nothing until the coordinator answers `admit` on the worker's `reply_to`
/// queue (a returning worker's leftovers may first be reclaimed); then `heartbeat` every
/// `worker.heartbeat` seconds, and `finished` after each task, whatever its outcome.
public struct ControlMessage: Codable, Sendable, Hashable {
    public enum Kind: String, Codable, Sendable, Hashable, CaseIterable {
        /// Worker -> coordinator: started; `site`/`unfinished` describe what its queue still holds.
        case hello
        /// Worker -> coordinator: alive; `site`/`unfinished` as in hello.
        case heartbeat
        /// Worker -> coordinator: one task done (`url`, `site`, `calibre_id` name it).
        case finished
        /// Worker -> coordinator: the `site` it holds refused everyone (`reason`; `retry_after`
        /// seconds when the site asked for a delay). Sent before the task's `finished`.
        case blocked
        /// Coordinator -> worker (on its reply queue): consume your queue.
        case admit
        /// Coordinator -> worker (on its reply queue): this table does not know you (presumed
        /// dead, or a new coordinator); stop taking tasks and say hello again.
        case rejoin
        /// Coordinator -> worker (on its reply queue): tell the user `title` / `text` (a site's
        /// outage and its end: the coordinator decides once for the fleet, a worker has the notifier).
        case notify
        /// Coordinator -> worker (on its reply queue): a new term is rebuilding its table; send a
        /// heartbeat (or hello) now rather than at the next beat.
        case report
    }

    public var version: Int
    public var kind: Kind
    public var worker: String
    /// The site the worker's queue holds tasks of (hello, heartbeat), or the finished task's site.
    public var site: String?
    /// Tasks queued or running for this worker (hello, heartbeat).
    public var unfinished: Int?
    /// The finished task's URL and book id (finished).
    public var url: String?
    public var calibreID: Int?
    /// Where the coordinator answers a hello.
    public var replyTo: String?
    /// What `fanfic status` shows (hello, heartbeat): the worker's host, the story it is
    /// running, and how many tasks it finished since it started.
    public var host: String?
    public var current: String?
    public var tasksDone: Int?
    /// Why the site is blocked (blocked), and the delay it asked for in seconds.
    public var reason: String?
    public var retryAfter: Int?
    /// What to tell the user (notify).
    public var title: String?
    public var text: String?
    public var sentAt: Date

    enum CodingKeys: String, CodingKey {
        case version, kind = "type", worker, site, unfinished, url
        case calibreID = "calibre_id"
        case replyTo = "reply_to"
        case host, current
        case tasksDone = "tasks_done"
        case reason
        case retryAfter = "retry_after"
        case title, text
        case sentAt = "sent_at"
    }

    /// Bounds of the free-text fields: a control message is a few hundred bytes.
    public static let maxReasonLength = 1000
    public static let maxTitleLength = 200
    public static let maxTextLength = 2000
    /// A site asking for more than a day is not believed past a day.
    public static let maxRetryAfter = 86_400

    public init(
        kind: Kind, worker: String, site: String? = nil, unfinished: Int? = nil, url: String? = nil,
        calibreID: Int? = nil, replyTo: String? = nil, sentAt: Date = Date()
    ) {
        self.host = nil
        self.current = nil
        self.tasksDone = nil
        self.reason = nil
        self.retryAfter = nil
        self.title = nil
        self.text = nil
        self.version = TaskMessage.currentVersion
        self.kind = kind
        self.worker = worker
        self.site = site
        self.unfinished = unfinished
        self.url = url
        self.calibreID = calibreID
        self.replyTo = replyTo
        self.sentAt = Timestamp.date(milliseconds: Timestamp.milliseconds(sentAt))
    }

    /// The finished task's identity, for the coordinator's de-duplication.
    public var finishedIdentity: TaskIdentity? {
        guard kind == .finished, let url, let site else { return nil }
        return TaskIdentity(url: url, site: site, calibreID: calibreID)
    }

    public static func hello(worker: String, site: String?, unfinished: Int, replyTo: String) -> ControlMessage {
        ControlMessage(kind: .hello, worker: worker, site: site, unfinished: unfinished, replyTo: replyTo)
    }

    public static func heartbeat(worker: String, site: String?, unfinished: Int) -> ControlMessage {
        ControlMessage(kind: .heartbeat, worker: worker, site: site, unfinished: unfinished)
    }

    public static func finished(worker: String, task: TaskMessage) -> ControlMessage {
        ControlMessage(kind: .finished, worker: worker, site: task.site, url: task.url, calibreID: task.calibreID)
    }

    /// The same message, carrying what `fanfic status` shows about its worker.
    public func reporting(host: String, current: String?, tasksDone: Int) -> ControlMessage {
        var message = self
        message.host = host
        message.current = current
        message.tasksDone = tasksDone
        return message
    }

    public static func rejoin(worker: String) -> ControlMessage {
        ControlMessage(kind: .rejoin, worker: worker)
    }

    public static func admit(worker: String) -> ControlMessage {
        ControlMessage(kind: .admit, worker: worker)
    }

    public static func blocked(worker: String, site: String, reason: String, retryAfter: Int?) -> ControlMessage {
        var message = ControlMessage(kind: .blocked, worker: worker, site: site)
        message.reason = String(reason.prefix(maxReasonLength))
        message.retryAfter = retryAfter.map { min(max(0, $0), maxRetryAfter) }
        return message
    }

    public static func notify(worker: String, title: String, text: String) -> ControlMessage {
        var message = ControlMessage(kind: .notify, worker: worker)
        message.title = String(title.prefix(maxTitleLength))
        message.text = String(text.prefix(maxTextLength))
        return message
    }
}

extension WireCodec {
    /// Encodes a control message as UTF-8 JSON.
    public static func encode(_ message: ControlMessage) -> Data { encodeJSON(message) }

    /// Decodes a control message, checking its version and that each kind has what it needs.
    public static func decodeControl(_ data: Data, limits: WireLimits = WireLimits()) throws(MessageDecodingError)
        -> ControlMessage
    {
        try limits.check(size: data.count)
        let message: ControlMessage = try decodeVersioned(data)
        if message.worker.isEmpty { throw MessageDecodingError(.invalidField, "'worker' is empty") }
        // It names the worker's queues: the same rule as `worker.id`.
        if let problem = Rules.workerID(message.worker) {
            throw MessageDecodingError(.invalidField, "'worker' \(problem)")
        }
        switch message.kind {
        case .hello where message.replyTo?.isEmpty != false:
            throw MessageDecodingError(.missingField, "a hello needs 'reply_to'")
        case .hello, .heartbeat:
            if (message.unfinished ?? 0) < 0 { throw MessageDecodingError(.invalidField, "'unfinished' is negative") }
        case .finished where message.finishedIdentity == nil:
            throw MessageDecodingError(.missingField, "a finished message needs 'url' and 'site'")
        case .blocked:
            guard let site = message.site, !site.isEmpty, site.utf8.count <= 253 else {
                throw MessageDecodingError(.missingField, "a blocked message needs 'site' (at most 253 bytes)")
            }
            guard let reason = message.reason, !reason.isEmpty, reason.count <= ControlMessage.maxReasonLength else {
                throw MessageDecodingError(
                    .invalidField,
                    "a blocked message needs 'reason' of at most \(ControlMessage.maxReasonLength) characters")
            }
            if let delay = message.retryAfter, !(0...ControlMessage.maxRetryAfter).contains(delay) {
                throw MessageDecodingError(
                    .invalidField, "'retry_after' must be 0 to \(ControlMessage.maxRetryAfter) seconds")
            }
        case .notify:
            guard let title = message.title, let text = message.text, title.count <= ControlMessage.maxTitleLength,
                text.count <= ControlMessage.maxTextLength
            else {
                throw MessageDecodingError(.invalidField, "a notify message needs a bounded 'title' and 'text'")
            }
        case .finished, .admit, .rejoin, .report:
            break
        }
        return message
    }
}
