import AppSupport
import ArgumentParser
import FanficBroker
import FanficCore
import Foundation
import Logging
import Notifications
import TestSupport
import WorkerRuntime

#if canImport(Glibc)
    import Glibc
#endif

/// A worker for the coordinator's integration tests: the real coordination protocol
/// (WorkerSession), but each task only records when it started and ended and waits a while,
/// instead of running FanFicFare. Tests read the records to check that no two workers ever ran
/// one site at the same time.
@main
struct TestWorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fanfic-test-worker", abstract: "A worker that pretends to download (tests only).")

    @OptionGroup var options: CommonOptions

    @Option(help: "Worker id (the config's worker.id is used otherwise).")
    var id: String?

    @Option(help: "Append one JSON line per task start and end to this file.")
    var record: String

    @Option(help: "How long a task takes, in milliseconds (a task's submitted_by \"... ms=N\" overrides it).")
    var taskMs: Int = 200

    func run() async throws {
        let record = self.record
        let taskMs = self.taskMs
        let id = self.id
        try await RoleRunner.run(role: "test-worker", options: options) { bus, configuration, logger in
            let workerID = id ?? configuration.worker.id
            let settler = OutcomeSettler(
                bus: bus, ladder: configuration.retry.ladder, emit: { _ in }, notifier: RecordingNotifier())
            return [
                WorkerSession(
                    bus: bus, settings: WorkerSession.Settings(id: workerID, configuration: configuration),
                    runner: RecordingRunner(path: record, defaultMilliseconds: taskMs), settler: settler,
                    emit: { _ in }, logger: logger)
            ]
        }
    }
}

struct RecordingRunner: TaskRunner {
    let path: String
    let defaultMilliseconds: Int

    func run(_ task: TaskMessage, workerID: String, logger: Logger) async -> StoryOutcome {
        let milliseconds =
            RecordingTasks.milliseconds(from: task.submittedBy) ?? defaultMilliseconds
        append(["event": "start", "worker": workerID, "site": task.site, "url": task.url, "t": Self.monotonicNanos()])
        try? await Task.sleep(for: .milliseconds(milliseconds))
        append(["event": "end", "worker": workerID, "site": task.site, "url": task.url, "t": Self.monotonicNanos()])
        return .stored(book: 0, detail: "simulated", notify: false, storyURL: nil)
    }

    /// CLOCK_MONOTONIC is one clock for every process on the machine: records of several
    /// workers can be compared.
    static func monotonicNanos() -> Int {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return spec.tv_sec * 1_000_000_000 + spec.tv_nsec
    }

    private func append(_ fields: [String: any Sendable]) {
        guard var line = try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys]) else { return }
        line.append(0x0A)
        let descriptor = open(path, O_WRONLY | O_APPEND | O_CREAT, 0o644)
        guard descriptor >= 0 else { return }
        _ = line.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        close(descriptor)
    }
}
