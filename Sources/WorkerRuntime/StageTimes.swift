import FanficCore
import Synchronization

/// How long each stage of one task took: the lookup in the library, FanFicFare, calibredb
/// writes, and waiting for the library's write turn. The worker session installs one per task
/// (a task-local), the pipeline's stages add to it, and the task's event carries the totals
/// (`stages_ms`), so that where a story's time goes can be read from `fanfic.events`.
public final class StageTimes: Sendable {
    @TaskLocal public static var current: StageTimes?

    /// The stages the pipeline reports.
    public enum Stage: String, Sendable {
        /// Finding the book and exporting its EPUB (and OPF) for an update.
        case lookup
        case fanficfare
        /// Library writes: add, replace, metadata, and the check of an added book.
        case calibredb
        /// Waiting for the Content Server's write turn (other workers writing).
        case lockWait = "lock_wait"
    }

    private let totals = Mutex<[Stage: Duration]>([:])

    public init() {}

    /// Runs `body`, adding its time to `stage` of the current task's times (if any).
    public static func measure<T>(_ stage: Stage, _ body: () async throws -> T) async rethrows -> T {
        guard let times = current else { return try await body() }
        let start = ContinuousClock.now
        defer { times.add(stage, ContinuousClock.now - start) }
        return try await body()
    }

    public func add(_ stage: Stage, _ duration: Duration) {
        totals.withLock { $0[stage, default: .zero] += duration }
    }

    /// Whole milliseconds per stage that ran, keyed by the stage's name.
    public var milliseconds: [String: Int] {
        totals.withLock { totals in
            Dictionary(uniqueKeysWithValues: totals.map { ($0.key.rawValue, $0.value.wholeMilliseconds) })
        }
    }
}
