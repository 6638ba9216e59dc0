/// The retry ladder: after a retryable failure, where does a task wait, and when does it give up.
///
/// With the defaults (1, 5, 15 minutes, then the Hail Mary after an hour): attempt 1 fails and
/// waits in tier 0, attempt 2 in tier 1, attempt 3 in tier 2, attempt 4 waits for the Hail
/// Mary, and a failed Hail Mary goes to `fanfic.failed`.
public struct RetryLadder: Sendable, Hashable {
    /// Delays in seconds, one TTL queue each.
    public var delays: [Int]
    public var hailMary: Bool
    public var hailMaryDelay: Int

    public init(delays: [Int] = [60, 300, 900], hailMary: Bool = true, hailMaryDelay: Int = 3600) {
        self.delays = delays
        self.hailMary = hailMary
        self.hailMaryDelay = hailMaryDelay
    }

    /// One delay tier: a queue name suffix and its TTL.
    public struct Tier: Sendable, Hashable {
        /// The routing key on `fanfic.retry` and the suffix of `fanfic.retry.<name>`.
        public let name: String
        public let delaySeconds: Int
        public let isHailMary: Bool
    }

    /// Every tier, in order, the Hail Mary last. Names are the delay (`60s`, `300s`), so that
    /// changing the ladder adds queues instead of silently changing an existing queue's TTL
    /// (which RabbitMQ refuses with PRECONDITION_FAILED).
    public var tiers: [Tier] {
        var result = delays.map { Tier(name: "\($0)s", delaySeconds: $0, isHailMary: false) }
        if hailMary {
            result.append(Tier(name: "hail-mary-\(hailMaryDelay)s", delaySeconds: hailMaryDelay, isHailMary: true))
        }
        // Two tiers with one delay share a queue.
        var seen = Set<String>()
        return result.filter { seen.insert($0.name).inserted }
    }

    /// What happens after a task's `failedAttempts`-th retryable failure (1-based).
    public enum Decision: Sendable, Hashable {
        case retry(Tier, index: Int)
        case hailMary(Tier)
        case giveUp
    }

    public func decide(failedAttempts: Int) -> Decision {
        precondition(failedAttempts >= 1, "decide is called after a failure")
        if failedAttempts <= delays.count {
            let index = failedAttempts - 1
            return .retry(Tier(name: "\(delays[index])s", delaySeconds: delays[index], isHailMary: false), index: index)
        }
        if hailMary && failedAttempts == delays.count + 1 {
            return .hailMary(Tier(name: "hail-mary-\(hailMaryDelay)s", delaySeconds: hailMaryDelay, isHailMary: true))
        }
        return .giveUp
    }

    /// Where a task goes after a retryable failure, and the task as it goes there: its attempt
    /// counted, and its tier or Hail Mary marked.
    public enum Step: Sendable, Hashable {
        /// Wait in `tier`, then run again.
        case wait(TaskMessage, in: Tier)
        /// Past the ladder: to `fanfic.failed`.
        case giveUp(TaskMessage)
    }

    public func step(afterFailureOf task: TaskMessage) -> Step {
        var next = task
        next.attempt += 1
        switch decide(failedAttempts: next.attempt) {
        case .retry(let tier, let index):
            next.retryTier = index
            return .wait(next, in: tier)
        case .hailMary(let tier):
            next.hailMary = true
            next.retryTier = nil
            return .wait(next, in: tier)
        case .giveUp:
            return .giveUp(next)
        }
    }
}
