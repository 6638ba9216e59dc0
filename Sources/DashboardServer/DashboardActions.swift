import FanficBroker
import FanficCore
import Foundation

/// What a person may do from the dashboard, each through the broker like everything else: add
/// stories (the same checks and answers as `fanfic submit`), send a waiting retry to ingress now
/// or cancel it, download a story again from scratch, requeue or delete failed tasks.
///
/// Whatever takes a task out of the broker says so on `fanfic.events` (`task.cancelled`), so that
/// the history shows where it went.
public struct DashboardActions: Sendable {
    public let bus: any MessageBus
    public let ladder: RetryLadder
    /// Emits an event; the role's ``EventPublisher``.
    let emit: @Sendable (FanficEvent) -> Void
    /// `dashboard@<host>`: the events' source.
    let source: String
    let now: @Sendable () -> Date
    /// Whether a series, author or collection page is queued as a list (`fanficfare.expand_lists` > 0).
    public var expandLists = false

    /// At most this many inputs in one submission (a pasted list).
    public static let maxSubmitInputs = 1000

    public init(
        bus: any MessageBus, ladder: RetryLadder, source: String, now: @escaping @Sendable () -> Date = { Date() },
        emit: @escaping @Sendable (FanficEvent) -> Void
    ) {
        self.now = now
        self.bus = bus
        self.ladder = ladder
        self.source = source
        self.emit = emit
    }

    /// Queues the stories among `inputs` (one URL each); `force`: download again whatever the
    /// library has. Nothing is published when none is a story.
    public func submit(_ inputs: [String], force: Bool) async throws -> [StoryLinks.Answer] {
        let links = StoryLinks.resolve(inputs: inputs, lists: expandLists)
        let publisher = TaskPublisher(bus: bus)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for found in links.stories {
                let task = TaskMessage(
                    url: found.story.canonicalURL, site: found.story.site, behavior: force ? .force : .normal,
                    submittedBy: "dashboard")
                group.addTask { try await publisher.submit(task) }
            }
            try await group.waitForAll()
        }
        return links.answers(published: true)
    }

    /// Sends the waiting retries of `url` to ingress now; returns how many there were.
    public func retryNow(url: String) async throws -> Int {
        try await WaitingRetries(bus: bus, ladder: ladder, now: now).act(.releaseNow) { $0.url == url }.count
    }

    /// Cancels the waiting retries of `url`; returns how many there were.
    public func cancelRetry(url: String) async throws -> Int {
        let cancelled = try await WaitingRetries(bus: bus, ladder: ladder, now: now).act(.cancel) { $0.url == url }
        for task in cancelled { announce(task, reason: "retry cancelled from the dashboard") }
        return cancelled.count
    }

    /// Sends the failed tasks of `urls` (nil: every one) back to ingress with a fresh retry
    /// ladder; returns how many.
    public func requeueFailed(urls: Set<String>?) async throws -> Int {
        try await FailedTasks(bus: bus).requeue { task in urls.map { $0.contains(task.url) } ?? true }.count
    }

    /// Deletes the failed tasks of `urls` (nil: every parked message); returns how many tasks.
    public func purgeFailed(urls: Set<String>?) async throws -> Int {
        var chosen: (@Sendable (TaskMessage) -> Bool)?
        if let urls { chosen = { urls.contains($0.url) } }
        let removed = try await FailedTasks(bus: bus).remove(where: chosen)
        for task in removed { announce(task, reason: "purged from fanfic.failed from the dashboard") }
        return removed.count
    }

    private func announce(_ task: TaskMessage, reason: String) {
        emit(
            FanficEvent(
                .taskCancelled, source: source, at: now(), site: task.site, url: task.url, taskID: task.id,
                reason: reason,
                attempt: task.attempt))
    }
}
