import AMQP
import FanficBroker
import FanficCore
import Foundation
import Logging
import Notifications
import ServiceLifecycle

/// The `ingester` role: polls each configured folder, turns every unseen message's story links
/// into tasks, and marks the message seen (or moves it) only once its tasks are confirmed by
/// the broker. If the broker is down nothing is marked, and the next poll tries again.
public final class Ingester: Service {
    public struct Settings: Sendable {
        public var email: FanficConfiguration.Email
        public var submittedBy: String
        /// Whether a mail naming a list page and no story queues the list (`fanficfare.expand_lists` > 0).
        public var expandLists: Bool

        public init(email: FanficConfiguration.Email, expandLists: Bool = false) {
            self.email = email
            self.submittedBy = "email:\(email.username)"
            self.expandLists = expandLists
        }
    }

    /// What one poll of one folder did.
    public struct PollReport: Sendable, Hashable {
        public var folder: String
        public var messages = 0
        public var tasksQueued = 0
        /// Messages left unseen because their tasks could not be published.
        public var deferred = 0
        /// Messages over `email.max_message_bytes`, marked so they are never fetched again.
        public var skipped = 0
        public var failed: String?
    }

    let settings: Settings
    let mailbox: any Mailbox
    let publisher: TaskPublisher
    let notifier: any Notifier
    let logger: Logger
    /// Tells `fanfic.events` of each poll (`mail.polled`), for the dashboard's history.
    let emit: @Sendable (FanficEvent) -> Void
    /// `ingester@<host>`: the events' source.
    let source = "ingester@\(ProcessInfo.processInfo.hostName)"

    public init(
        settings: Settings, mailbox: any Mailbox, bus: any MessageBus, notifier: any Notifier, logger: Logger,
        emit: @escaping @Sendable (FanficEvent) -> Void = { _ in }
    ) {
        self.emit = emit
        self.settings = settings
        self.mailbox = mailbox
        self.publisher = TaskPublisher(bus: bus, retryFor: .seconds(10))
        self.notifier = notifier
        self.logger = logger
    }

    /// The ingester of the configured IMAP mailbox.
    public convenience init(
        settings: Settings, bus: any MessageBus, notifier: any Notifier, logger: Logger,
        emit: @escaping @Sendable (FanficEvent) -> Void = { _ in }
    ) {
        let email = settings.email
        let mailbox = IMAPMailbox(
            settings: IMAPMailbox.Settings(
                server: email.server, username: email.username, password: email.password,
                tls: IMAPMailbox.Settings.TLSMode(rawValue: email.tls.rawValue) ?? .implicit,
                caFile: email.caFile.isEmpty ? nil : email.caFile))
        self.init(settings: settings, mailbox: mailbox, bus: bus, notifier: notifier, logger: logger, emit: emit)
    }

    /// Polls every folder once.
    public func pollOnce() async -> [PollReport] {
        var reports: [PollReport] = []
        for folder in settings.email.folders {
            reports.append(await poll(folder))
        }
        return reports
    }

    /// Polls at once, then every `sleep_time` seconds, until graceful shutdown; a failing server
    /// gets a longer wait (doubling, at most ten polls' worth) and a log line each time.
    public func run() async {
        await cancelWhenGracefulShutdown { await self.pollUntilCancelled() }
    }

    private func pollUntilCancelled() async {
        var failures = 0
        while !Task.isCancelled {
            let reports = await pollOnce()
            failures = reports.contains { $0.failed != nil } ? failures + 1 : 0
            let base = settings.email.sleepTime
            let wait = failures == 0 ? base : min(base * (1 << min(failures, 4)), base * 10)
            try? await Task.sleep(for: .seconds(wait))
        }
    }

    func poll(_ folder: String) async -> PollReport {
        let started = ContinuousClock.now
        let report = await read(folder)
        var event = FanficEvent(
            .mailPolled, source: source,
            detail: "\(report.folder): \(report.messages) message(s), \(report.tasksQueued) task(s) queued"
                + (report.deferred > 0 ? ", \(report.deferred) left for the next poll" : "")
                + (report.skipped > 0 ? ", \(report.skipped) too big (skipped)" : ""),
            durationMilliseconds: (ContinuousClock.now - started).wholeMilliseconds)
        event.reason = report.failed
        emit(event)
        return report
    }

    private func read(_ folder: String) async -> PollReport {
        var report = PollReport(folder: folder)
        let uids: [UInt32]
        do {
            uids = try await mailbox.unseen(in: folder)
        } catch {
            report.failed = "\(error)"
            logger.error(
                "mailbox not read",
                metadata: ["server": "\(settings.email.server)", "folder": "\(folder)", "error": "\(error)"])
            return report
        }
        for uid in uids {
            report.messages += 1
            do {
                let size = try await mailbox.size(uid: uid, in: folder)
                if size > settings.email.maxMessageBytes {
                    try await skipTooBig(uid, size: size, in: folder)
                    report.skipped += 1
                    continue
                }
                let raw = try await mailbox.fetch(uid: uid, in: folder)
                let outcome = try await handle(MailMessage(raw), uid: uid, folder: folder)
                report.tasksQueued += outcome
            } catch let error as IMAPError {
                report.failed = "\(error)"
                logger.error(
                    "message not read", metadata: ["folder": "\(folder)", "uid": "\(uid)", "error": "\(error)"])
                break
            } catch {
                report.deferred += 1
                logger.warning(
                    "tasks not published; the message stays unseen for the next poll",
                    metadata: ["folder": "\(folder)", "uid": "\(uid)", "error": "\(error)"])
            }
        }
        if report.messages > 0 {
            logger.info(
                "mailbox polled",
                metadata: [
                    "folder": "\(folder)", "messages": "\(report.messages)", "tasks": "\(report.tasksQueued)",
                    "deferred": "\(report.deferred)",
                ])
        }
        return report
    }

    /// Publishes the message's stories, then marks it; returns the tasks queued.
    func handle(_ message: MailMessage, uid: UInt32, folder: String) async throws -> Int {
        let email = settings.email
        if !email.allowedSenders.isEmpty {
            let allowed = Set(email.allowedSenders.map { $0.lowercased() })
            guard let sender = message.sender, allowed.contains(sender) else {
                logger.notice(
                    "message from a sender not in email.allowed_senders; left unseen, not read again",
                    metadata: ["sender": "\(InertText.escape(message.sender ?? "unknown"))", "uid": "\(uid)"])
                try await mailbox.markSkipped(uid: uid, in: folder)
                return 0
            }
        }
        let links = Self.links(in: message, lists: settings.expandLists)
        var stories = links.stories
        // A mail that names stories is about them: the author, series and collection links of a
        // site's update notice are not asked for. Only a mail naming lists alone queues them.
        if stories.contains(where: { !$0.isList }) { stories.removeAll(where: \.isList) }
        if stories.count > email.maxURLsPerMessage {
            logger.warning(
                "more story links than email.max_urls_per_message; the rest are ignored",
                metadata: ["found": "\(stories.count)", "kept": "\(email.maxURLsPerMessage)"])
            stories = Array(stories.prefix(email.maxURLsPerMessage))
        }
        let disabled = Set(email.disabledSites)
        let skipped = stories.filter { disabled.contains($0.story.site) }
        for found in skipped {
            // As the original does: the user hears of it and fetches it by hand.
            logger.notice(
                "story of a disabled site not queued",
                metadata: ["url": "\(found.story.canonicalURL)", "site": "\(found.story.site)"])
            await notifier.notify(
                title: "Story not downloaded: \(found.story.site) is disabled", body: found.story.canonicalURL)
        }
        stories.removeAll { disabled.contains($0.story.site) }

        if stories.isEmpty && skipped.isEmpty {
            // Seen when asked; otherwise left unseen for its reader, and not read again.
            if email.markUnmatchedSeen {
                try await mark(uid, in: folder)
            } else {
                try await mailbox.markSkipped(uid: uid, in: folder)
            }
            return 0
        }
        let submitter = message.sender.map { "email:\($0)" } ?? settings.submittedBy
        try await withThrowingTaskGroup(of: Void.self) { group in
            for found in stories {
                let task = TaskMessage(url: found.story.canonicalURL, site: found.story.site, submittedBy: submitter)
                group.addTask { try await self.publisher.submit(task) }
            }
            try await group.waitForAll()
        }
        try await mark(uid, in: folder)
        return stories.count
    }

    /// A message too big to read: marked so it is never fetched again, and the user told.
    private func skipTooBig(_ uid: UInt32, size: Int, in folder: String) async throws {
        let limit = settings.email.maxMessageBytes
        logger.warning(
            "message over email.max_message_bytes; skipped and not read again",
            metadata: ["folder": "\(folder)", "uid": "\(uid)", "bytes": "\(size)", "limit": "\(limit)"])
        try await mailbox.markSkipped(uid: uid, in: folder)
        await notifier.notify(
            title: "An email was too big to read",
            body:
                "Message \(uid) in \(folder) has \(size) bytes, over email.max_message_bytes (\(limit)); "
                + "it is left unseen and will not be read. Send the story links in a smaller email.")
    }

    private func mark(_ uid: UInt32, in folder: String) async throws {
        if settings.email.processedFolder.isEmpty {
            try await mailbox.markSeen(uid: uid, in: folder)
        } else {
            try await mailbox.move(uid: uid, in: folder, to: settings.email.processedFolder)
        }
    }

    /// Every story link of every text part, HTML `href`s included, each story once; `lists`:
    /// list pages too.
    public static func links(in message: MailMessage, lists: Bool = false) -> StoryLinks {
        var links = StoryLinks()
        for part in message.parts {
            links.merge(StoryLinks.extract(text: part.text, html: part.isHTML, lists: lists))
        }
        return links
    }
}
