import AMQP
import Coordination
import FanficBroker
import FanficCore
import Foundation
import Logging
import Synchronization
import TestSupport

@testable import CoordinatorService

/// A coordinator on an in-memory broker, and fake workers that speak the coordination protocol
/// by hand: what a test does to the coordinator is exactly what a message on the wire does.
final class Fleet: Sendable {
    static let ladder = RetryLadder(delays: [60], hailMaryDelay: 3600)

    let broker = InMemoryBroker(topology: FanficTopology.declarations(retry: Fleet.ladder))
    /// The test's own connection: publishing tasks, looking at queues.
    let client: InMemoryBus
    let workerTimeout: Duration
    /// `coordinator.worker_users`: empty, any user.
    let workerUsers: Set<String>

    let limits: FanficConfiguration.Limits

    /// `workerTimeout`: 5 s unless a test is about the timeout. With 1 s, a worker whose
    /// heartbeats a test stopped (or that CPU-bound tests starved of the 2 cores' threads for a
    /// second) was presumed dead before the test's next step, and its wait timed out.
    init(
        workerTimeout: Duration = .seconds(5), workerUsers: Set<String> = [],
        limits: FanficConfiguration.Limits = FanficConfiguration.Limits()
    ) {
        client = InMemoryBus(broker: broker, user: "fanfic-cli")
        self.workerTimeout = workerTimeout
        self.workerUsers = workerUsers
        self.limits = limits
    }

    func settings(name: String) -> Coordinator.Settings {
        var settings = Coordinator.Settings(
            dispatch: DispatchStateMachine.Configuration(workerTimeout: workerTimeout, sitePause: .zero, siteCaps: [:]),
            knownSites: ["test1.com", "test2.com"], name: name)
        settings.tickInterval = .milliseconds(10)
        settings.standbyRetry = .milliseconds(20)
        settings.endingGrace = .milliseconds(500)
        settings.backlogRetry = .milliseconds(50)
        settings.workerUsers = workerUsers
        settings.limits = limits
        return settings
    }

    /// A coordinator with its own connection; runs until the returned task is cancelled.
    func startCoordinator(_ name: String = "c1") -> (coordinator: Coordinator, bus: InMemoryBus, run: Task<Void, Never>)
    {
        let bus = InMemoryBus(broker: broker, user: "fanfic-coordinator")
        var logger = Logger(label: "test.\(name)")
        // FANFIC_TEST_COORDINATOR_LOG=debug (or trace) shows what the coordinator decided.
        logger.logLevel =
            ProcessInfo.processInfo.environment["FANFIC_TEST_COORDINATOR_LOG"].flatMap(Logger.Level.init(rawValue:))
            ?? .critical
        let events = EventPublisher(bus: bus, logger: logger)
        let coordinator = Coordinator(
            bus: bus, settings: settings(name: name), events: events, board: StatusBoard(name: name), logger: logger)
        let run = Task {
            await withDiscardingTaskGroup { group in
                group.addTask { await events.run() }
                group.addTask { try? await coordinator.run() }
            }
        }
        return (coordinator, bus, run)
    }

    /// A running coordinator with one admitted, beating worker: what most tests start from.
    struct Scene: Sendable {
        let coordinator: Coordinator
        let worker: FakeWorker
        let run: Task<Void, Never>
        let beating: Task<Void, Never>

        func stop() {
            beating.cancel()
            run.cancel()
        }
    }

    func sceneWithWorker(_ id: String = "w1") async throws -> Scene {
        let (coordinator, _, run) = startCoordinator()
        let worker = worker(id)
        do {
            try await worker.join()
        } catch {
            run.cancel()
            throw error
        }
        return Scene(coordinator: coordinator, worker: worker, run: run, beating: worker.keepBeating())
    }

    /// Returns once the coordinator has handled every control message sent before: the control
    /// queue is in order, so it sends a marked heartbeat from `worker` (whose beating stops) and
    /// waits until the status shows the mark.
    func waitUntilHandled(through scene: Scene) async throws {
        scene.beating.cancel()
        await scene.beating.value  // no heartbeat of its may land after the mark
        let worker = scene.worker
        let mark = "mark-\(UUID().uuidString.prefix(8))"
        let (site, unfinished) = try await worker.holding()
        try await worker.send(
            ControlMessage.heartbeat(worker: worker.id, site: site, unfinished: unfinished)
                .reporting(host: mark, current: nil, tasksDone: 0))
        try await waitUntil("the coordinator handled what came before") {
            scene.coordinator.board.current.workers.first { $0.id == worker.id }?.host == mark
        }
    }

    func submit(_ url: String, site: String) async throws -> TaskMessage {
        let task = TaskMessage(url: url, site: site, submittedBy: "test")
        try await TaskPublisher(bus: client).submit(task)
        return task
    }

    func publishRaw(_ text: String) async throws {
        try await client.publish(
            Data(text.utf8), exchange: FanficTopology.ingress, routingKey: FanficTopology.taskRoutingKey,
            properties: .persistentJSON(), mandatory: true)
    }

    /// Whether every message that entered `fanfic.ingress` has been routed, dropped or parked.
    var ingressSettled: Bool {
        broker.messages(in: FanficTopology.ingress).isEmpty && broker.unsettled(in: FanficTopology.ingress) == 0
    }

    func queue(_ name: String) -> [TaskMessage] {
        broker.messages(in: name).compactMap { try? WireCodec.decode($0.body) }
    }

    /// A worker (or someone pretending to be one) on its own connection as `user`.
    func worker(_ id: String, user: String = "fanfic-worker") -> FakeWorker {
        FakeWorker(id: id, bus: InMemoryBus(broker: broker, user: user))
    }
}

/// A worker played by the test: it says what the test tells it to, and counts what it holds.
final class FakeWorker: Sendable {
    let id: String
    let bus: InMemoryBus
    var queue: String { FanficTopology.workerQueue(id: id) }
    var replyQueue: String { FanficTopology.replyQueue(worker: id) }
    private let running = Mutex<[TaskMessage]>([])
    private let lastSite = Mutex<String?>(nil)

    init(id: String, bus: InMemoryBus) {
        self.id = id
        self.bus = bus
    }

    func send(_ message: ControlMessage) async throws {
        try await bus.publish(
            WireCodec.encode(message), exchange: FanficTopology.control, routingKey: "",
            properties: .persistentJSON(), mandatory: true)
    }

    /// What it holds: its queue's depth plus the tasks it has taken and not finished.
    func holding() async throws -> (site: String?, unfinished: Int) {
        let queued = Int(try await bus.queueState(queue)?.messageCount ?? 0)
        let (site, count) = running.withLock { ($0.first?.site, $0.count) }
        let unfinished = queued + count
        return (site ?? (unfinished > 0 ? lastSite.withLock { $0 } : nil), unfinished)
    }

    /// Hello, then waits for the coordinator's admission.
    func join(timeout: Duration = .seconds(30)) async throws {
        try await bus.declare(
            FanficTopology.workerQueues(id: id))
        let (site, unfinished) = try await holding()
        try await send(.hello(worker: id, site: site, unfinished: unfinished, replyTo: replyQueue))
        try await waitUntil("\(id) is admitted", timeout: timeout, every: .milliseconds(10)) {
            guard let reply = try await bus.get(queue: replyQueue) else { return false }
            try await reply.ack()
            return (try? WireCodec.decodeControl(reply.body))?.kind == .admit
        }
    }

    /// Holds a subscription to its queue, as an admitted worker does, until cancelled.
    func holdSubscription() -> Task<Void, Never> {
        let subscription = bus.consume(queue: queue, prefetch: 1)
        return Task {
            do {
                for try await _ in subscription {}
            } catch {}
        }
    }

    func heartbeat() async throws {
        let (site, unfinished) = try await holding()
        try await send(.heartbeat(worker: id, site: site, unfinished: unfinished))
    }

    /// Heartbeats every `interval` until the returned task is cancelled.
    func keepBeating(every interval: Duration = .milliseconds(50)) -> Task<Void, Never> {
        Task {
            while !Task.isCancelled {
                try? await heartbeat()
                try? await Task.sleep(for: interval)
            }
        }
    }

    /// Takes the next task of its queue, as the worker session does.
    func take() async throws -> TaskMessage? {
        guard let message = try await bus.get(queue: queue) else { return nil }
        let task = try WireCodec.decode(message.body)
        running.withLock { $0.append(task) }
        try await message.ack()
        return task
    }

    /// Finishes a task it took.
    func finish(_ task: TaskMessage) async throws {
        running.withLock { $0.removeAll { $0.id == task.id } }
        lastSite.withLock { $0 = task.site }
        try await send(.finished(worker: id, task: task))
    }
}
