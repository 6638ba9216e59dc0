import FanficBroker
import FanficCore
import Foundation
import Logging
import Notifications

/// Settles one task from its outcome, in the order DESIGN.md asks; the one place that does:
///
/// 1. a retryable failure goes to its retry tier (or, past the ladder, to `fanfic.failed`), and a
///    permanent one to `fanfic.failed`, each a confirmed publish; if that publish fails, the task
///    goes back to its queue to run again (`.runAgain`) and nothing else happens;
/// 2. the outcome's event is emitted (fire-and-forget: events are for observers, never a
///    record the system depends on);
/// 3. the user is told (new, updated, failed, retries exhausted);
/// 4. only then is the task acked, and the coordinator told it is finished (a task whose ack
///    fails is not: the broker gives it back, and it is reported when it has run again).
public struct OutcomeSettler: Sendable {
    let bus: any MessageBus
    let ladder: RetryLadder
    let emit: @Sendable (FanficEvent) -> Void
    let notifier: any Notifier
    /// How long a publish keeps retrying through reconnects before the task is given back.
    var retryFor: Duration = .seconds(60)
    /// Rest before a task whose outcome could not be recorded goes back to its queue: the broker
    /// was gone, and the task would otherwise come straight back.
    public var runAgainPause: Duration = .seconds(1)
    /// Reasons in `fanfic.failed` and events are cut to this (`limits.max_reason_length`).
    public var maxReasonLength = 2000
    /// Times one task may wait for its site's pause before a block counts as its own failure.
    public var maxDeferrals = 12

    public init(
        bus: any MessageBus, ladder: RetryLadder, emit: @escaping @Sendable (FanficEvent) -> Void,
        notifier: any Notifier
    ) {
        self.bus = bus
        self.ladder = ladder
        self.emit = emit
        self.notifier = notifier
    }

    /// Records the outcome, then acks `message` and calls `finished`; or, when the outcome could
    /// not be recorded, gives the task back to its queue (the pipeline is idempotent).
    public func settle(
        _ outcome: StoryOutcome, of task: TaskMessage, message: BusMessage, workerID: String, milliseconds: Int,
        stages: [String: Int]? = nil, logger: Logger, finished: @Sendable () async -> Void
    ) async -> TaskSettlement {
        var outcome = outcome
        var deferrals = 0
        if case .int(let count) = message.properties.headers[FanficTopology.deferralsHeader] {
            deferrals = Int(clamping: max(0, count))
        }
        if case .siteBlocked(let reason, _) = outcome, deferrals >= maxDeferrals {
            outcome = .retryable("\(reason) (waited for the site \(deferrals) times: counted as this story's failure)")
        }
        return await conclude(message, logger: logger, finished: finished) {
            try await record(
                outcome, of: task, workerID: workerID, milliseconds: milliseconds, stages: stages,
                deferrals: deferrals, logger: logger)
        }
    }

    /// A task that is not this worker's to run goes back to be routed by its URL, through the
    /// shortest retry tier with its attempt unchanged (straight to ingress it could arrive before
    /// this worker's `finished`, while the coordinator still holds its identity, and be dropped
    /// as a duplicate); then it is acked and reported finished, as a settled task is.
    public func handBack(
        _ task: TaskMessage, message: BusMessage, logger: Logger, finished: @Sendable () async -> Void
    ) async -> TaskSettlement {
        await conclude(message, logger: logger, finished: finished) {
            let publisher = TaskPublisher(bus: bus, retryFor: retryFor, maxReasonLength: maxReasonLength)
            if let tier = ladder.tiers.first {
                try await publisher.scheduleRetry(task, tier: tier)
            } else {
                try await publisher.submit(task)
            }
        }
    }

    /// The order every task leaves a worker in: `record` (confirmed publishes), then the ack, then
    /// `finished`. If `record` or the ack fails, nothing else happens and the task goes back to its queue.
    private func conclude(
        _ message: BusMessage, logger: Logger, finished: @Sendable () async -> Void,
        record: () async throws -> Void
    ) async -> TaskSettlement {
        do {
            try await record()
        } catch {
            logger.error("outcome not recorded; the task will run again", metadata: ["error": "\(error)"])
            try? await Task.sleep(for: runAgainPause)
            do {
                try await message.reject(requeue: true)
            } catch {
                // Its connection is gone: the broker redelivers it anyway.
                logger.warning("task not given back; the broker redelivers it", metadata: ["error": "\(error)"])
            }
            return .runAgain
        }
        do {
            try await message.ack()
        } catch {
            // Its connection or channel is gone: the broker gives it to this queue again, and it
            // runs again (the pipeline is idempotent). Reported finished then, not now: a
            // coordinator that rebuilt its table counts it once, as the queue holds it.
            logger.warning("ack failed; the task will run again", metadata: ["error": "\(error)"])
            return .runAgain
        }
        await finished()
        return .done
    }

    func record(
        _ outcome: StoryOutcome, of task: TaskMessage, workerID: String, milliseconds: Int,
        stages: [String: Int]? = nil, deferrals: Int = 0, logger: Logger
    ) async throws {
        let publisher = TaskPublisher(bus: bus, retryFor: retryFor, maxReasonLength: maxReasonLength)
        var event = FanficEvent(
            .taskSucceeded, source: "worker:\(workerID)", worker: workerID, site: task.site, url: task.url,
            taskID: task.id, attempt: task.attempt, durationMilliseconds: milliseconds)
        event.stagesMilliseconds = stages?.isEmpty == false ? stages : nil
        switch outcome {
        case .stored(let book, let detail, let notify, let storyURL, let title):
            event.calibreID = book
            event.detail = detail
            event.storyURL = storyURL
            event.title = title
            logger.info("story in the library", metadata: ["book": "\(book)", "detail": "\(detail)"])
            emit(event)
            if notify {
                let title =
                    detail == "new" ? "New story" : detail.hasPrefix("kept") ? "Story not updated" : "Story updated"
                let body =
                    "\(storyURL ?? task.url) (book \(book))"
                    + (["new", "updated"].contains(detail) ? "" : ": \(detail)")
                await notifier.notify(title: title, body: body)
            }
        case .expanded(let stories, let found):
            // Each story a task of its own, by the same person; the coordinator drops those
            // already queued, and each worker's lookup makes one already in the library an update.
            for story in stories {
                try await publisher.submit(
                    TaskMessage(
                        url: story.canonicalURL, site: story.site, behavior: task.behavior,
                        submittedBy: task.submittedBy))
            }
            let cut = found > stories.count ? ", the first \(stories.count) of \(found) (fanficfare.expand_lists)" : ""
            event.detail = "list: \(stories.count) stories queued\(cut)"
            logger.info("list expanded", metadata: ["stories": "\(stories.count)", "found": "\(found)"])
            emit(event)
            await notifier.notify(title: "List expanded", body: "\(task.url): \(stories.count) stories queued\(cut)")
        case .retryable(let reason):
            event.reason = TaskPublisher.bounded(reason, to: maxReasonLength)
            switch ladder.step(afterFailureOf: task) {
            case .wait(let next, let tier):
                try await publisher.scheduleRetry(next, tier: tier)
                event.kind = .taskRetrying
                event.detail = tier.name
                logger.warning(
                    tier.isHailMary ? "task failed again; the Hail Mary waits" : "task failed; retrying later",
                    metadata: ["tier": "\(tier.name)", "reason": "\(reason)"])
                emit(event)
            case .giveUp(let next):
                try await publisher.park(WireCodec.encode(next), reason: "retries exhausted: \(reason)")
                event.kind = .taskFailed
                logger.error("retries exhausted; parked in fanfic.failed", metadata: ["reason": "\(reason)"])
                emit(event)
                await notifier.notify(title: "Story failed after every retry", body: "\(task.url): \(reason)")
            }
        case .siteBlocked(let reason, _):
            // Not the story's failure: it goes round again with its attempt unchanged, through
            // the shortest tier (straight to ingress it could arrive before this worker's
            // `finished`, while the coordinator still holds its identity, and be dropped as a
            // duplicate), then waits in its site's backlog while the site is paused.
            if let tier = ladder.tiers.first {
                try await publisher.scheduleRetry(
                    task, tier: tier, headers: [FanficTopology.deferralsHeader: .int(Int64(deferrals + 1))])
                event.detail = tier.name
            } else {
                try await publisher.submit(task)
            }
            event.kind = .taskDeferred
            event.reason = TaskPublisher.bounded(reason, to: maxReasonLength)
            logger.warning("the site is blocking; the task waits for it", metadata: ["reason": "\(reason)"])
            emit(event)
        case .permanent(let reason):
            try await publisher.park(WireCodec.encode(task), reason: reason)
            event.kind = .taskFailed
            event.reason = TaskPublisher.bounded(reason, to: maxReasonLength)
            logger.error("permanent failure; parked in fanfic.failed", metadata: ["reason": "\(reason)"])
            emit(event)
            await notifier.notify(title: "Story failed", body: "\(task.url): \(reason)")
        }
    }
}
