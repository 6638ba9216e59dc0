import FanficBroker
import FanficCore
import Foundation
import Logging
import Notifications
import WorkerRuntime

/// Records a story's outcome, in the order DESIGN.md asks, and says whether the task may be acked:
///
/// 1. a retryable failure goes to its retry tier (or, past the ladder, to `fanfic.failed`), and a
///    permanent one to `fanfic.failed`, each a confirmed publish; if that publish fails, the task
///    runs again (`.runAgain`) and nothing else happens;
/// 2. the outcome's event is emitted (fire-and-forget: events are for observers, never a
///    record the system depends on);
/// 3. the user is told (new, updated, failed, retries exhausted).
///
/// Only then does the worker session ack the task and report it finished.
public struct OutcomeSettler: Sendable {
    let bus: any MessageBus
    let ladder: RetryLadder
    let emit: @Sendable (FanficEvent) -> Void
    let notifier: any Notifier
    /// How long a publish keeps retrying through reconnects before the task is given back.
    var retryFor: Duration = .seconds(60)

    public init(
        bus: any MessageBus, ladder: RetryLadder, emit: @escaping @Sendable (FanficEvent) -> Void,
        notifier: any Notifier
    ) {
        self.bus = bus
        self.ladder = ladder
        self.emit = emit
        self.notifier = notifier
    }

    public func settle(
        _ outcome: StoryOutcome, of task: TaskMessage, workerID: String, milliseconds: Int, logger: Logger
    ) async -> TaskSettlement {
        do {
            try await record(outcome, of: task, workerID: workerID, milliseconds: milliseconds, logger: logger)
            return .done
        } catch {
            logger.error("outcome not recorded; the task will run again", metadata: ["error": "\(error)"])
            return .runAgain
        }
    }

    func record(
        _ outcome: StoryOutcome, of task: TaskMessage, workerID: String, milliseconds: Int, logger: Logger
    ) async throws {
        let publisher = TaskPublisher(bus: bus, retryFor: retryFor)
        var event = FanficEvent(
            .taskSucceeded, source: "worker:\(workerID)", worker: workerID, site: task.site, url: task.url,
            taskID: task.id, attempt: task.attempt, durationMilliseconds: milliseconds)
        switch outcome {
        case .stored(let book, let detail, let notify, let storyURL):
            event.calibreID = book
            event.detail = detail
            event.storyURL = storyURL
            logger.info("story in the library", metadata: ["book": "\(book)", "detail": "\(detail)"])
            emit(event)
            if notify {
                await notifier.notify(
                    title: detail == "new" ? "New story" : "Story updated",
                    body: "\(storyURL ?? task.url) (book \(book))")
            }
        case .retryable(let reason):
            var next = task
            next.attempt += 1
            event.reason = reason
            let decision = ladder.decide(failedAttempts: next.attempt)
            switch decision {
            case .retry(let tier, _), .hailMary(let tier):
                if case .retry(_, let index) = decision {
                    next.retryTier = index
                } else {
                    next.hailMary = true
                    next.retryTier = nil
                }
                try await publisher.scheduleRetry(next, tier: tier)
                event.kind = .taskRetrying
                event.detail = tier.name
                logger.warning(
                    tier.isHailMary ? "task failed again; the Hail Mary waits" : "task failed; retrying later",
                    metadata: ["tier": "\(tier.name)", "reason": "\(reason)"])
                emit(event)
            case .giveUp:
                try await publisher.park(TaskCodec.encode(next), reason: "retries exhausted: \(reason)")
                event.kind = .taskFailed
                logger.error("retries exhausted; parked in fanfic.failed", metadata: ["reason": "\(reason)"])
                emit(event)
                await notifier.notify(title: "Story failed after every retry", body: "\(task.url): \(reason)")
            }
        case .permanent(let reason):
            try await publisher.park(TaskCodec.encode(task), reason: reason)
            event.kind = .taskFailed
            event.reason = reason
            logger.error("permanent failure; parked in fanfic.failed", metadata: ["reason": "\(reason)"])
            emit(event)
            await notifier.notify(title: "Story failed", body: "\(task.url): \(reason)")
        }
    }
}
