import AMQP
import FanficBroker
import FanficCore
import Foundation
import Logging
import Notifications
import Synchronization
import TestSupport
import Testing
import WorkerRuntime

@testable import CoordinatorService

/// Real worker sessions beside a real coordinator on one in-memory broker: what the two sides'
/// rules do together when the broker restarts under a task in a worker's hands.
@Suite("A broker restart with a task in a worker's hands")
struct BrokerRestartTests {
    /// Every run's start and end, in one order for all workers (no clock involved).
    final class RunLog: Sendable {
        struct Entry: Sendable, Equatable {
            let worker: String
            let url: String
            let started: Bool
        }
        let entries = Mutex<[Entry]>([])
        var all: [Entry] { entries.withLock { $0 } }

        func runs(of worker: String) -> [String] { all.filter { $0.worker == worker && $0.started }.map(\.url) }

        /// Pairs of runs of one site by two workers that overlap.
        var overlaps: [(Entry, Entry)] {
            var open: [Entry] = []
            var found: [(Entry, Entry)] = []
            for entry in all {
                if entry.started {
                    let site = URL(string: entry.url)?.host
                    for other in open where other.worker != entry.worker && URL(string: other.url)?.host == site {
                        found.append((other, entry))
                    }
                    open.append(entry)
                } else if let index = open.firstIndex(where: { $0.worker == entry.worker && $0.url == entry.url }) {
                    open.remove(at: index)
                }
            }
            return found
        }
    }

    /// Stores every story; the first run of `held` waits until the gate opens.
    final class GatedRunner: TaskRunner {
        let log: RunLog
        private let held: Mutex<String?>
        private let gate: AsyncStream<Void>
        private let opener: AsyncStream<Void>.Continuation

        init(log: RunLog, holding url: String? = nil) {
            self.log = log
            held = Mutex(url)
            (gate, opener) = AsyncStream.makeStream(of: Void.self)
        }

        func open() { opener.finish() }

        func run(_ task: TaskMessage, workerID: String, logger: Logger) async -> StoryOutcome {
            log.entries.withLock { $0.append(.init(worker: workerID, url: task.url, started: true)) }
            let waits = held.withLock { held in
                defer { if held == task.url { held = nil } }
                return held == task.url
            }
            if waits {
                for await _ in gate {}
            }
            log.entries.withLock { $0.append(.init(worker: workerID, url: task.url, started: false)) }
            return .stored(book: 1, detail: "new", notify: false, storyURL: task.url)
        }
    }

    /// A worker session as the `worker` role runs it, on a connection of its own.
    func startWorker(_ id: String, runner: GatedRunner, fleet: Fleet) -> (bus: InMemoryBus, run: Task<Void, Never>) {
        let bus = InMemoryBus(broker: fleet.broker, user: "fanfic-worker")
        var settings = WorkerSession.Settings(id: id, configuration: FanficConfiguration())
        settings.heartbeat = .milliseconds(20)
        settings.workerTimeout = fleet.workerTimeout
        settings.sitePause = .zero
        var settler = OutcomeSettler(bus: bus, ladder: Fleet.ladder, emit: { _ in }, notifier: RecordingNotifier())
        settler.runAgainPause = .zero
        var logger = Logger(label: "test.\(id)")
        logger.logLevel =
            ProcessInfo.processInfo.environment["FANFIC_TEST_WORKER_LOG"].flatMap(Logger.Level.init(rawValue:))
            ?? .critical
        let session = WorkerSession(
            bus: bus, settings: settings, runner: runner, settler: settler, emit: { _ in }, logger: logger)
        return (bus, Task { try? await session.run() })
    }

    @Test(
        "a worker running a task across a broker restart keeps its site: the new term hears it, no other worker runs the site, the task is counted once"
    )
    func taskInHandAcrossRestart() async throws {
        let fleet = Fleet()
        let (coordinator, coordinatorBus, run) = fleet.startCoordinator()
        defer { run.cancel() }
        let log = RunLog()
        let first = "http://test1.com?sid=1"
        let gated = GatedRunner(log: log, holding: first)
        let w1 = startWorker("w1", runner: gated, fleet: fleet)
        defer { w1.run.cancel() }
        try await waitUntil("w1 is in the table") { coordinator.board.current.workers.map(\.id) == ["w1"] }
        _ = try await fleet.submit(first, site: "test1.com")
        try await waitUntil("w1 runs the first task") { log.runs(of: "w1") == [first] }
        let w2 = startWorker("w2", runner: GatedRunner(log: log), fleet: fleet)
        defer { w2.run.cancel() }
        try await waitUntil("w2 is in the table") { coordinator.board.current.workers.map(\.id) == ["w1", "w2"] }

        // The broker restarts: every connection drops (w1's delivery goes back to its queue),
        // the term ends; then everyone is back and a new term rebuilds its table.
        for bus in [coordinatorBus, w1.bus, w2.bus] { bus.disconnect() }
        try await waitUntil("the term ended") { coordinator.board.current.role == .standby }
        for bus in [coordinatorBus, w1.bus, w2.bus] { bus.reconnect() }
        let second = try await fleet.submit("http://test1.com?sid=2", site: "test1.com")

        // Either the new term gave w1 the site again (the second task waits in w1's queue behind
        // the one in its hands), or another worker got it: w2 runs a test1.com task.
        try await waitUntil("the second task is w1's, or w2 ran something") {
            fleet.queue(FanficTopology.workerQueue(id: "w1")).contains { $0.id == second.id }
                || !log.runs(of: "w2").isEmpty
        }
        #expect(log.runs(of: "w2").isEmpty, "w2 ran test1.com while w1 still had a task of it in hand")
        let listed = coordinator.board.current.workers.first { $0.id == "w1" }
        #expect(listed?.site == "test1.com" && listed?.unfinished == 2, "\(String(describing: listed))")

        gated.open()
        try await waitUntil("w1 ran the given-back task and the second one, and the site is released") {
            let w1Status = coordinator.board.current.workers.first { $0.id == "w1" }
            return log.runs(of: "w1") == [first, first, second.url] && w1Status?.site == nil
                && w1Status?.unfinished == 0 && fleet.queue(FanficTopology.workerQueue(id: "w1")).isEmpty
        }
        #expect(log.runs(of: "w2").isEmpty)
        #expect(log.overlaps.isEmpty, "\(log.overlaps)")
    }
}
