import AMQP
import FanficBroker
import FanficCore
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// Runs one task: by the time it returns `.done`, whatever must follow the task (its retry, its
/// `fanfic.failed` record, its events) is safely published, because the session acks next.
public protocol TaskRunner: Sendable {
    func run(_ task: TaskMessage, workerID: String) async -> TaskSettlement
}

/// What the session does with the delivery once the runner is through.
public enum TaskSettlement: Sendable, Hashable {
    /// Ack: the task's outcome is safely recorded.
    case done
    /// Give it back to the queue: its outcome could not be recorded (the broker was gone), so it
    /// runs again; the pipeline is idempotent.
    case runAgain
}

/// A worker's side of the coordination protocol (docs/coordination.md), around a ``TaskRunner``:
/// says hello and waits to be admitted, then consumes its own queue one task at a time, with
/// heartbeats all along and a `finished` report after each task's ack.
public final class WorkerSession: Sendable {
    public struct Settings: Sendable {
        public var id: String
        public var heartbeat: Duration
        /// Heartbeats and hellos older than this are stale for any coordinator: they expire.
        public var workerTimeout: Duration
        /// Rest between two tasks of one site (`coordinator.site_pause`): the lock keeps other
        /// workers off the site, this keeps one worker from running its tasks back to back.
        public var sitePause: Duration

        public init(id: String, configuration: FanficConfiguration) {
            self.id = id
            heartbeat = .seconds(configuration.worker.heartbeat)
            workerTimeout = .seconds(configuration.coordinator.workerTimeout)
            sitePause = .seconds(configuration.coordinator.sitePause)
        }
    }

    /// What heartbeats report, and what `fanfic status` shows through them.
    struct Progress {
        var admitted = false
        var running: TaskMessage?
        var lastSite: String?
        var tasksDone = 0
    }

    let connection: AMQPConnection
    let settings: Settings
    let runner: any TaskRunner
    let logger: Logger
    private let progress = Mutex(Progress())
    private let admission: AsyncStream<Void>
    private let admitted: AsyncStream<Void>.Continuation
    /// Control messages go out one at a time, each computed in its turn (see ``inTurn(_:)``).
    private let controlTurn = Turnstile()

    public init(connection: AMQPConnection, settings: Settings, runner: any TaskRunner, logger: Logger) {
        self.connection = connection
        self.settings = settings
        self.runner = runner
        var logger = logger
        logger[metadataKey: "worker"] = "\(settings.id)"
        self.logger = logger
        (admission, admitted) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    var queue: String { FanficTopology.workerQueue(id: settings.id) }
    /// Where the coordinator answers this worker's hello. It outlives short disconnections and
    /// expires a minute after the worker is gone.
    var replyQueue: String { FanficTopology.replyQueue(worker: settings.id) }

    /// Runs until graceful shutdown; the task in progress is finished first.
    public func run() async throws {
        try await connection.declare(
            AMQPTopology(queues: [
                FanficTopology.worker(id: settings.id),
                // Quorum, like every queue a worker relies on: a classic queue is unusable while
                // its home node is down, and a worker would then not reconnect to the cluster.
                QueueSpec.quorum(replyQueue, arguments: ["x-expires": .int(60_000)]),
            ]))
        try await peekAtLeftovers()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await self.listenForAdmission() }
            group.addTask { await self.reportLiveness() }
            try await self.consumeTasks()
            group.cancelAll()
        }
    }

    // MARK: Tasks

    /// Consumes the queue once admitted. A lost connection ends the subscription: the worker says
    /// hello again and waits to be admitted again, because while it was away the coordinator may
    /// have presumed it dead, reclaimed its queue and given its site to another worker.
    private func consumeTasks() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            logger.info("waiting to be admitted by the coordinator", metadata: ["queue": "\(queue)"])
            await cancelWhenGracefulShutdown {
                for await _ in self.admission { break }
            }
            if Task.isShuttingDownGracefully || Task.isCancelled { return }
            logger.info("admitted; consuming", metadata: ["queue": "\(queue)"])
            do {
                try await cancelWhenGracefulShutdown {
                    for try await delivery in self.connection.consume(
                        queue: self.queue, prefetch: 1, resumesAfterReconnect: false)
                    {
                        // Unstructured, so that a shutdown signal lets the task finish instead of cutting it.
                        await Task { await self.handle(delivery) }.value
                    }
                }
                return
            } catch let error as AMQPError where error.code == .connectionLost {
                progress.withLock { $0.admitted = false }
                logger.warning("connection lost; asking to be admitted again", metadata: ["error": "\(error)"])
                // Until the broker is back, or a stop is asked for (which ends the loop).
                try? await cancelWhenGracefulShutdown {
                    try await self.connection.waitUntilConnected(timeout: .seconds(86_400))
                }
            }
        }
    }

    private func handle(_ delivery: AMQPDelivery) async {
        let task: TaskMessage
        do {
            task = try TaskCodec.decode(delivery.body)
        } catch {
            let reason = "undecodable task: \(error.message)"
            logger.warning("parking a message that is not a task", metadata: ["reason": "\(reason)"])
            do {
                try await TaskPublisher(connection: connection).park(
                    delivery.body, reason: reason, properties: delivery.properties)
                try await delivery.ack()
            } catch {
                try? await delivery.nack(requeue: true)
            }
            return
        }
        // Counted as running from now on: the delivery has left the queue's depth, and a report
        // that counts neither would let a rebuilding coordinator free the site a task too early.
        let last = progress.withLock { progress in
            defer { progress.running = task }
            return progress.lastSite
        }
        if last == task.site, settings.sitePause > .zero {
            try? await Task.sleep(for: settings.sitePause)
        }
        // Now rather than at the next beat, so that `fanfic status` shows the story at once.
        await publishLiveness()
        let settlement = await runner.run(task, workerID: settings.id)
        do {
            if settlement == .runAgain {
                try? await Task.sleep(for: .seconds(1))
                try await delivery.nack(requeue: true)
                progress.withLock { $0.running = nil }
                return
            }
            try await delivery.ack()
        } catch {
            // The broker gives it to this queue again; the pipeline is idempotent.
            logger.warning(
                "ack failed; the task will run again", metadata: ["url": "\(task.url)", "error": "\(error)"])
        }
        // The task leaves the count and its `finished` goes out in one turn: a heartbeat that
        // still counts it was published before, one that no longer counts it after.
        await controlTurn.inTurn {
            progress.withLock {
                $0.running = nil
                $0.lastSite = task.site
                $0.tasksDone += 1
            }
            await publishControl(.finished(worker: settings.id, task: task), expires: false)
        }
        // And a heartbeat, so that `fanfic status` stops showing the story at once.
        await publishLiveness()
    }

    // MARK: Coordination

    /// After a restart the queue may still hold tasks: their site goes into the hello.
    private func peekAtLeftovers() async throws {
        guard let state = try await connection.queueState(queue), state.messageCount > 0,
            let message = try await connection.get(queue: queue)
        else { return }
        let site = try? TaskCodec.decode(message.body).site
        try? await message.nack(requeue: true)
        progress.withLock { $0.lastSite = site }
        logger.info(
            "found tasks left in the queue", metadata: ["count": "\(state.messageCount)", "site": "\(site ?? "?")"])
    }

    private func listenForAdmission() async {
        while !Task.isCancelled {
            do {
                for try await delivery in connection.consume(queue: replyQueue, prefetch: 10) {
                    try? await delivery.ack()
                    guard let message = try? TaskCodec.decodeControl(delivery.body), message.kind == .admit,
                        message.worker == settings.id
                    else { continue }
                    // Only an admission the worker waits for counts: a duplicate (two hellos
                    // answered) must not be kept for after a lost connection.
                    let wasWaiting = progress.withLock { progress -> Bool in
                        defer { progress.admitted = true }
                        return !progress.admitted
                    }
                    if wasWaiting { admitted.yield() }
                }
                return
            } catch {
                logger.debug("reply queue subscription ended; subscribing again", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// Hello until admitted, then heartbeats, every `heartbeat`.
    private func reportLiveness() async {
        while !Task.isCancelled {
            await publishLiveness()
            try? await Task.sleep(for: settings.heartbeat)
        }
    }

    /// A hello or heartbeat, counted and published in one turn. A coordinator rebuilding its
    /// table believes the count; were a heartbeat counted before a task ended but published after
    /// its `finished`, the site would wait forever for a task that is already done (seen in the
    /// cluster test after a node came back).
    private func publishLiveness() async {
        await controlTurn.inTurn {
            let isAdmitted = progress.withLock { $0.admitted }
            await publishControl(await liveness(admitted: isAdmitted), expires: true)
        }
    }

    /// A heartbeat (or, before admission, a hello) with what `fanfic status` shows.
    private func liveness(admitted: Bool) async -> ControlMessage {
        let (site, unfinished) = await backlogSummary()
        let message =
            admitted
            ? ControlMessage.heartbeat(worker: settings.id, site: site, unfinished: unfinished)
            : ControlMessage.hello(worker: settings.id, site: site, unfinished: unfinished, replyTo: replyQueue)
        let (current, done) = progress.withLock { ($0.running?.url, $0.tasksDone) }
        return message.reporting(host: Self.host, current: current, tasksDone: done)
    }

    private static let host = ProcessInfo.processInfo.hostName

    /// The site this worker's queue holds and how many of its tasks are not finished.
    private func backlogSummary() async -> (site: String?, unfinished: Int) {
        let queued = (try? await connection.queueState(queue)).flatMap { $0.map { Int($0.messageCount) } } ?? 0
        let (running, lastSite) = progress.withLock { ($0.running, $0.lastSite) }
        let unfinished = queued + (running == nil ? 0 : 1)
        return (running?.site ?? (unfinished > 0 ? lastSite : nil), unfinished)
    }

    private func publishControl(_ message: ControlMessage, expires: Bool) async {
        var properties = AMQPMessageProperties.persistentJSON()
        if expires {
            properties.expiration = "\(settings.workerTimeout.components.seconds * 1000)"
        }
        do {
            try await connection.publish(
                TaskCodec.encode(message), exchange: "", routingKey: FanficTopology.control, properties: properties,
                mandatory: true, retryFor: expires ? nil : .seconds(60))
        } catch {
            logger.warning(
                "control message not sent", metadata: ["type": "\(message.kind.rawValue)", "error": "\(error)"])
        }
    }
}

/// One at a time, in arrival order: an async lock for work that suspends.
actor Turnstile {
    private var busy = false
    private var waiting: [CheckedContinuation<Void, Never>] = []

    func inTurn(_ body: @Sendable () async -> Void) async {
        if busy {
            await withCheckedContinuation { waiting.append($0) }
        } else {
            busy = true
        }
        await body()
        if waiting.isEmpty {
            busy = false
        } else {
            waiting.removeFirst().resume()
        }
    }
}
