/// One child process `fanfic run` keeps running.
public struct ChildSpec: Sendable, Hashable {
    /// What its log lines are prefixed with: `coordinator`, `ingester`, `worker vm-1`.
    public var name: String
    /// Stopped in this order: ingester and workers first (so workers can report their last
    /// task), the coordinator last.
    public var stopRank: Int
    public var executable: String
    /// The child's `argv[0]` when it is not the executable's path: a multi-call binary started
    /// as one of its roles (`fanfic` as `coordinator`).
    public var invokedAs: String?
    public var arguments: [String]

    public init(name: String, stopRank: Int, executable: String, invokedAs: String? = nil, arguments: [String]) {
        self.name = name
        self.stopRank = stopRank
        self.executable = executable
        self.invokedAs = invokedAs
        self.arguments = arguments
    }
}

/// How long to wait before starting a child again: doubling from `initial` to `maximum`, and
/// back to `initial` once a run lasted `stableAfter` (a crash loop slows down, a rare crash
/// does not pay for old ones).
public struct RestartBackoff: Sendable, Hashable {
    public var initial: Duration
    public var maximum: Duration
    public var stableAfter: Duration
    private(set) var next: Duration

    public init(initial: Duration = .seconds(1), maximum: Duration = .seconds(30), stableAfter: Duration = .seconds(60))
    {
        self.initial = initial
        self.maximum = maximum
        self.stableAfter = stableAfter
        self.next = initial
    }

    /// The delay before the next start, given how long the run that just ended lasted.
    public mutating func delay(afterRunOf lasted: Duration) -> Duration {
        if lasted >= stableAfter { next = initial }
        let delay = next
        next = min(next * 2, maximum)
        return delay
    }
}
