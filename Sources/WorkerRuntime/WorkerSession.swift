import AMQP
import FanficBroker
import FanficCore
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// Runs one task and answers what became of it; the session's ``OutcomeSettler`` records that.
/// Must be idempotent: a task whose outcome could not be recorded runs again.
public protocol TaskRunner: Sendable {
    func run(_ task: TaskMessage, workerID: String, logger: Logger) async -> StoryOutcome
}

/// How a task left the worker: acked with its outcome recorded, or given back to run again.
public enum TaskSettlement: Sendable, Hashable {
    /// Acked: the task's outcome is safely recorded.
    case done
    /// Given back to the queue: its outcome could not be recorded, or its ack failed (the broker
    /// was gone), so it runs again; the pipeline is idempotent.
    case runAgain
}

/// A worker's side of the coordination protocol (docs/coordination.md), around a ``TaskRunner``:
/// says hello and waits to be admitted, then consumes its own queue one task at a time, with
/// heartbeats all along; each task's outcome goes to the ``OutcomeSettler``, which acks it and
/// then has the session report it `finished`. A Service of the worker role.
public final class WorkerSession: Service {
    public struct Settings: Sendable {
        public var id: String
        public var heartbeat: Duration
        /// Heartbeats and hellos older than this are stale for any coordinator: they expire.
        public var workerTimeout: Duration
        /// Rest between two tasks of one site (`coordinator.site_pause`): the lock keeps other
        /// workers off the site, this keeps one worker from running its tasks back to back.
        public var sitePause: Duration
        /// Bounds on the tasks it reads (`[limits]`).
        public var limits: WireLimits
        /// How long one task may hold its delivery unacked: the broker's consumer timeout for
        /// this worker's subscription (RabbitMQ's default, 30 minutes, would redeliver a long
        /// story under the worker still downloading it). FanFicFare's timeout and a margin.
        public var taskTimeout: Duration
        /// After a block, this worker contacts the site again only after this (`sites.cooldown`,
        /// the shortest pause the coordinator gives it): the site's other tasks in its queue wait.
        public var siteCooldown: Duration
        /// `[sites."<site>"] pause`: a site's own rest between two tasks instead of `sitePause`.
        public var sitePauses: [String: Duration]
        /// Quiet hours (`sites.quiet_hours`, and each site's own): a task of a quiet site in this
        /// queue waits instead of running.
        public var quietHours: QuietSchedule

        public init(id: String, configuration: FanficConfiguration) {
            self.id = id
            heartbeat = .seconds(configuration.worker.heartbeat)
            workerTimeout = .seconds(configuration.coordinator.workerTimeout)
            sitePause = .seconds(configuration.coordinator.sitePause)
            limits = configuration.limits.wire
            taskTimeout = .seconds(configuration.fanficfare.timeout + 600)
            siteCooldown = .seconds(configuration.sites.cooldown)
            let overrides = configuration.sites.overrides
            sitePauses = overrides.compactMapValues { $0.pause.map { .seconds($0) } }
            quietHours = QuietSchedule(configuration: configuration)
        }

        func pause(for site: String) -> Duration { sitePauses[site] ?? sitePause }
    }

    /// What heartbeats report, and what `fanfic status` shows through them.
    struct Progress {
        var admitted = false
        /// The task being run: the story `fanfic status` shows.
        var running: TaskMessage?
        /// The site of the last task run (for the site pause).
        var lastSite: String?
        /// Tasks delivered on the current subscription and not settled, by delivery number, with
        /// their sites: they have left the queue's depth, so reports count them here. A lost
        /// connection gives them all back (the broker requeues them): they leave this at once.
        var held: [Int: String] = [:]
        var deliveries = 0
        /// The site of the tasks in this worker's queue, as last seen: a delivery, the leftovers
        /// at start, a task given back.
        var queueSite: String?
        var tasksDone = 0
        /// Sites this worker met a block at, until when it leaves them alone.
        var blocked: [String: (until: ContinuousClock.Instant, reason: String)] = [:]
    }

    let bus: any MessageBus
    let settings: Settings
    let runner: any TaskRunner
    let settler: OutcomeSettler
    let emit: @Sendable (FanficEvent) -> Void
    let logger: Logger
    private let progress = Mutex(Progress())
    private let admission: AsyncStream<Void>
    /// While this worker consumes: where a `rejoin` from the coordinator goes (stop taking, say
    /// hello again). A stream per consuming session: a cancelled iteration ends its stream.
    private let revocation = Mutex<AsyncStream<Void>.Continuation?>(nil)
    private let admitted: AsyncStream<Void>.Continuation
    /// Control messages go out one at a time, each computed in its turn (see ``inTurn(_:)``).
    private let controlTurn = Turnstile()

    public init(
        bus: any MessageBus, settings: Settings, runner: any TaskRunner, settler: OutcomeSettler,
        emit: @escaping @Sendable (FanficEvent) -> Void, logger: Logger
    ) {
        self.bus = bus
        self.settings = settings
        self.runner = runner
        self.settler = settler
        self.emit = emit
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
        do {
            try await bus.declare(FanficTopology.workerQueues(id: settings.id))
        } catch let error as AMQPError where error.replyCode == 403 {
            // Least privilege: the coordinator declares them when it hears this worker's hello.
            logger.debug("the coordinator declares this worker's queues", metadata: ["amqp.error": "\(error)"])
        }
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
    /// have presumed it dead, reclaimed its queue and given its site to another worker. So does
    /// the coordinator's `rejoin`, sent when it no longer knows this worker.
    private func consumeTasks() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            logger.info("waiting to be admitted by the coordinator", metadata: ["queue": "\(queue)"])
            await cancelWhenGracefulShutdown {
                for await _ in self.admission { break }
            }
            if Task.isShuttingDownGracefully || Task.isCancelled { return }
            logger.info("admitted; consuming", metadata: ["queue": "\(queue)"])
            do {
                guard try await consumeUntilStopped() == .revoked else { return }
                logger.warning("the coordinator does not know this worker (presumed dead?); saying hello again")
            } catch let error as AMQPError where error.code == .connectionLost {
                // Not admitted since the subscription ended (see `take`): an admission that came
                // while the last task ran counts for the next subscription.
                logger.warning("connection lost; asking to be admitted again", metadata: ["error": "\(error)"])
                // Until the broker is back, or a stop is asked for (which ends the loop).
                try? await cancelWhenGracefulShutdown {
                    try await self.bus.waitUntilConnected(timeout: .seconds(86_400))
                }
            }
        }
    }

    /// Why the taking stopped.
    enum Stop: Sendable { case shutdown, revoked }

    /// A message from the subscription, numbered when it is a task (see ``Progress/held``).
    struct Received: Sendable {
        let delivery: Int?
        let message: Result<Decoded<TaskMessage>, UndecodableMessage>
    }

    /// Runs the queue's tasks one at a time until graceful shutdown or a `rejoin`, which stop the
    /// taking, never the task in hand: a child takes from the subscription (and is cancelled),
    /// this loop runs what it hands over (and is not).
    private func consumeUntilStopped() async throws -> Stop {
        let (handover, feed) = AsyncStream.makeStream(of: Received.self)
        return try await withThrowingTaskGroup(of: Stop.self) { group in
            group.addTask {
                defer { feed.finish() }
                return try await cancelWhenGracefulShutdown { try await self.take(into: feed) }
            }
            for await received in handover { await handle(received) }
            return try await group.next() ?? .shutdown
        }
    }

    /// Hands the subscription's tasks over one by one until a `rejoin` (`.revoked`), the end of
    /// the subscription or cancellation (`.shutdown`).
    private func take(into feed: AsyncStream<Received>.Continuation) async throws -> Stop {
        let (revocations, revoke) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        revocation.withLock { $0 = revoke }
        defer { revocation.withLock { $0 = nil } }
        return try await withThrowingTaskGroup(of: Stop.self) { taking in
            taking.addTask {
                let subscription = self.bus.consume(
                    queue: self.queue, prefetch: 1, resumesAfterReconnect: false,
                    arguments: ["x-consumer-timeout": .int(self.settings.taskTimeout.components.seconds * 1000)])
                let limits = self.settings.limits
                do {
                    for try await received in subscription.decoded({ try WireCodec.decode($0, limits: limits) }) {
                        feed.yield(Received(delivery: self.hold(received), message: received))
                    }
                } catch let error as AMQPError where error.code == .connectionLost {
                    // The broker gives back what this connection held: those tasks are in the
                    // queue's depth again, and the one in hand will run again from there. This
                    // worker says hello from now on, even while its task runs: a coordinator
                    // rebuilding after a broker restart believes a hello, but not heartbeats from a
                    // worker that does not consume its queue, and would otherwise give its site away.
                    self.progress.withLock {
                        $0.held = [:]
                        $0.admitted = false
                    }
                    throw error
                }
                return .shutdown
            }
            taking.addTask {
                for await _ in revocations { return .revoked }
                return .shutdown
            }
            let stop = try await taking.next() ?? .shutdown
            taking.cancelAll()
            return stop
        }
    }

    /// Numbers a task delivered to this worker and counts it as held until it is settled.
    private func hold(_ received: Result<Decoded<TaskMessage>, UndecodableMessage>) -> Int? {
        guard case .success(let task) = received else { return nil }
        return progress.withLock { progress in
            progress.deliveries += 1
            progress.held[progress.deliveries] = task.value.site
            progress.queueSite = task.value.site
            return progress.deliveries
        }
    }

    private func handle(_ received: Received) async {
        switch received.message {
        case .failure(let bad): await park(bad)
        case .success(let task):
            guard let delivery = received.delivery, progress.withLock({ $0.held[delivery] != nil }) else {
                // Delivered before the connection was lost: the broker has it back, not this worker.
                logger.debug("not running a task of the lost connection", metadata: ["url": "\(task.value.url)"])
                return
            }
            await run(task.value, message: task.message, delivery: delivery)
        }
    }

    private func park(_ bad: UndecodableMessage) async {
        let reason = "undecodable task: \(bad.reason)"
        logger.warning("parking a message that is not a task", metadata: ["reason": "\(reason)"])
        await TaskPublisher(bus: bus, maxReasonLength: settler.maxReasonLength).park(bad.message, reason: reason)
    }

    /// Runs one task and has its outcome settled: recorded, acked, then reported finished.
    private func run(_ task: TaskMessage, message: BusMessage, delivery: Int) async {
        if let reason = Self.misplaced(task, message) {
            await handBack(task, message: message, delivery: delivery, reason: reason)
            return
        }
        if settings.quietHours.isQuiet(task.site, at: Date()) {
            await handBack(task, message: message, delivery: delivery, reason: "the site is in its quiet hours")
            return
        }
        if let block = blockedNow(task.site) {
            // The coordinator paused the site: this task waits with the others, unrun.
            let settlement = await settler.settle(
                .siteBlocked("paused after a block: \(block)", retryAfterSeconds: nil), of: task, message: message,
                workerID: settings.id, milliseconds: 0, logger: logger
            ) {
                await self.reportFinished(task, delivery: delivery, ran: false)
            }
            if settlement == .runAgain { await givenBack(task, delivery: delivery) }
            return
        }
        let last = progress.withLock { progress in
            defer { progress.running = task }
            return progress.lastSite
        }
        let pause = settings.pause(for: task.site)
        if last == task.site, pause > .zero {
            try? await Task.sleep(for: pause)
        }
        // Now rather than at the next beat, so that `fanfic status` shows the story at once.
        await publishLiveness()
        var logger = logger
        logger[metadataKey: "url"] = "\(task.url)"
        logger[metadataKey: "task"] = "\(task.id)"
        let (outcome, milliseconds, stages) = await timedRun(task, logger: logger)
        if case .siteBlocked(let reason, let retryAfter) = outcome {
            // Before this task's `finished`: the coordinator pauses the site for every worker.
            progress.withLock { $0.blocked[task.site] = (ContinuousClock.now + settings.siteCooldown, reason) }
            await controlTurn.inTurn {
                await publishControl(
                    .blocked(worker: settings.id, site: task.site, reason: reason, retryAfter: retryAfter),
                    expires: false)
            }
        }
        let settlement = await settler.settle(
            outcome, of: task, message: message, workerID: settings.id, milliseconds: milliseconds, stages: stages,
            logger: logger
        ) {
            await self.reportFinished(task, delivery: delivery, ran: true)
        }
        if settlement == .runAgain {
            await givenBack(task, delivery: delivery)
            return
        }
        // And a heartbeat, so that `fanfic status` stops showing the story at once.
        await publishLiveness()
    }

    /// Why this worker leaves the site alone for now, or nil.
    private func blockedNow(_ site: String) -> String? {
        progress.withLock { progress in
            guard let block = progress.blocked[site] else { return nil }
            if ContinuousClock.now < block.until { return block.reason }
            progress.blocked[site] = nil
            return nil
        }
    }

    /// Why a task in this worker's queue is not this worker's to run, or nil: its URL must be a
    /// story URL (or a list page) of the site the coordinator gave it (the task's header), and
    /// the task must say the same site. A task from an older coordinator, without the header, is
    /// checked against its own `site`.
    static func misplaced(_ task: TaskMessage, _ message: BusMessage, rules: SiteRules = .bundled) -> String? {
        guard let site = rules.site(ofStoryOrList: task.url) else { return "its URL is not a story URL" }
        var given = task.site
        if case .string(let header) = message.properties.headers[FanficTopology.siteHeader] { given = header }
        guard site == given, task.site == given else {
            return "its URL is of \(site), but it came as a task of \(given)"
        }
        return nil
    }

    /// Gives a misplaced task back (see ``OutcomeSettler/handBack(_:message:logger:finished:)``)
    /// and reports it finished here: the coordinator counted it as this worker's.
    private func handBack(_ task: TaskMessage, message: BusMessage, delivery: Int, reason: String) async {
        logger.warning(
            "a task in this worker's queue is not to run now; handing it back",
            metadata: ["url": "\(task.url)", "reason": "\(reason)"])
        let settlement = await settler.handBack(task, message: message, logger: logger) {
            await self.reportFinished(task, delivery: delivery, ran: false)
        }
        if settlement == .runAgain { await givenBack(task, delivery: delivery) }
    }

    /// The task went back to this worker's queue unfinished (no `finished`: it runs again and is
    /// reported then). It is in the queue's depth now, and the queue holds its site.
    private func givenBack(_ task: TaskMessage, delivery: Int) async {
        await controlTurn.inTurn {
            progress.withLock {
                $0.running = nil
                $0.held[delivery] = nil
                $0.queueSite = task.site
            }
        }
    }

    /// The runner's outcome and how long it took, announced by a `task.started` event.
    private func timedRun(
        _ task: TaskMessage, logger: Logger
    ) async -> (StoryOutcome, milliseconds: Int, stages: [String: Int]) {
        emit(
            FanficEvent(
                .taskStarted, source: "worker:\(settings.id)", worker: settings.id, site: task.site, url: task.url,
                taskID: task.id, attempt: task.attempt))
        logger.info("task started", metadata: ["attempt": "\(task.attempt)", "hail_mary": "\(task.hailMary)"])
        let started = ContinuousClock.now
        let stages = StageTimes()
        let outcome = await StageTimes.$current.withValue(stages) {
            await runner.run(task, workerID: settings.id, logger: logger)
        }
        return (outcome, (ContinuousClock.now - started).wholeMilliseconds, stages.milliseconds)
    }

    /// The task leaves the count and its `finished` goes out in one turn: a heartbeat that still
    /// counts it was published before, one that no longer counts it after.
    private func reportFinished(_ task: TaskMessage, delivery: Int, ran: Bool) async {
        await controlTurn.inTurn {
            progress.withLock {
                $0.running = nil
                $0.held[delivery] = nil
                if ran {
                    $0.lastSite = task.site
                    $0.tasksDone += 1
                }
            }
            await publishControl(.finished(worker: settings.id, task: task), expires: false)
        }
    }

    // MARK: Coordination

    /// After a restart the queue may still hold tasks: their site goes into the hello.
    private func peekAtLeftovers() async throws {
        guard let state = try await bus.queueState(queue), state.messageCount > 0,
            let message = try await bus.get(queue: queue)
        else { return }
        let site = try? WireCodec.decode(message.body).site
        try? await message.reject(requeue: true)
        progress.withLock {
            $0.lastSite = site
            $0.queueSite = site
        }
        logger.info(
            "found tasks left in the queue", metadata: ["count": "\(state.messageCount)", "site": "\(site ?? "?")"])
    }

    private func listenForAdmission() async {
        while !Task.isCancelled {
            do {
                for try await delivery in bus.consume(queue: replyQueue, prefetch: 10) {
                    try? await delivery.ack()
                    guard let message = try? WireCodec.decodeControl(delivery.body), message.worker == settings.id
                    else { continue }
                    if message.kind == .rejoin {
                        // Only while admitted: the hellos that follow are the answer.
                        let wasAdmitted = progress.withLock { progress -> Bool in
                            defer { progress.admitted = false }
                            return progress.admitted
                        }
                        if wasAdmitted { revocation.withLock { _ = $0?.yield() } }
                        continue
                    }
                    if message.kind == .report {
                        // A new coordinator is rebuilding its table: it waits for this report.
                        Task { await self.publishLiveness() }
                        continue
                    }
                    if message.kind == .notify, let title = message.title, let text = message.text {
                        // The coordinator's word for the fleet (a site's outage, its end).
                        // Apart from this loop: an admit or rejoin must not wait on Apprise.
                        Task { [notifier = settler.notifier] in await notifier.notify(title: title, body: text) }
                        continue
                    }
                    guard message.kind == .admit else { continue }
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

    /// The site this worker's queue holds and how many of its tasks are not finished: those
    /// waiting in the queue and those delivered and not settled (the one running, and the next
    /// one the broker hands over as soon as the last is acked).
    private func backlogSummary() async -> (site: String?, unfinished: Int) {
        let queued = (try? await bus.queueState(queue)).flatMap { $0.map { Int($0.messageCount) } } ?? 0
        let (heldSite, held, queueSite) = progress.withLock { progress in
            (progress.held.min { $0.key < $1.key }?.value, progress.held.count, progress.queueSite)
        }
        let unfinished = queued + held
        return (heldSite ?? (unfinished > 0 ? queueSite : nil), unfinished)
    }

    private func publishControl(_ message: ControlMessage, expires: Bool) async {
        var properties = AMQPMessageProperties.persistentJSON()
        if expires {
            properties.expiration = "\(settings.workerTimeout.components.seconds * 1000)"
        }
        do {
            try await bus.publish(
                WireCodec.encode(message), exchange: FanficTopology.control, routingKey: "", properties: properties,
                mandatory: true, retryFor: expires ? nil : .seconds(60))
        } catch {
            logger.warning(
                "control message not sent", metadata: ["type": "\(message.kind.rawValue)", "error": "\(error)"])
        }
    }
}
