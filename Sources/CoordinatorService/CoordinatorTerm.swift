import AMQP
import Coordination
import FanficBroker
import FanficCore
import Foundation
import Logging
import Synchronization

/// One stretch of leadership: consumes `fanfic.ingress` and `fanfic.control`, feeds what
/// happens to a fresh ``DispatchStateMachine`` and performs the actions it answers with.
///
/// Everything runs through one loop over ``Input``s, so the state machine is only ever touched
/// by one task. The actions that wait on the broker (publishes, drains, reclaims) run as child
/// tasks that report back as inputs: the loop itself never waits on anything but its inputs.
/// What workers said is the ``ControlLedger``'s, what it means to the world the ``Announcer``'s,
/// what `fanfic status` shows the ``StatusBoard``'s, the broker work ``QueueMoves``'.
final class CoordinatorTerm: Sendable {
    enum Input: Sendable {
        /// A task, decoded and judged by ``TaskIntake`` before it reaches the loop: the site
        /// rules' work runs beside the loop, not in it.
        case ingress(Result<Decoded<Result<TaskIntake.Admitted, TaskIntake.Refusal>>, UndecodableMessage>)
        case control(Result<Decoded<ControlMessage>, UndecodableMessage>)
        case event(DispatchEvent)
        /// A move ended: confirmed or not.
        case moveSettled(MoveID, confirmed: Bool)
        case operationEnded(WorkerID)
        case registrySwept
        case tick
        case subscriptionEnded(queue: String, error: String?)
        /// Whether a worker that sent `heartbeat` while the table was rebuilt holds a
        /// subscription to its queue.
        case subscriptionChecked(ControlMessage, subscribed: Bool)
    }

    let bus: any MessageBus
    /// The connection generation the lock was won on: a newer one means the lock may be gone.
    let generation: UInt64
    let settings: Coordinator.Settings
    let logger: Logger
    let events: EventPublisher
    let board: StatusBoard
    let announcer: Announcer
    let moves: QueueMoves
    let registry: WorkerRegistry
    /// Workers the table has met in this term, for the registry sweep that runs beside the loop:
    /// one that says hello after the sweep began must not have its queue reclaimed by it.
    private let joinedWorkers = Mutex<Set<WorkerID>>([])
    private let inputs: AsyncStream<Input>
    private let feed: AsyncStream<Input>.Continuation
    private let clock = ContinuousClock()
    private let started: ContinuousClock.Instant

    init(
        bus: any MessageBus, generation: UInt64, settings: Coordinator.Settings, events: EventPublisher,
        board: StatusBoard, logger: Logger
    ) {
        self.bus = bus
        self.generation = generation
        self.settings = settings
        self.logger = logger
        self.events = events
        self.board = board
        announcer = Announcer(events: events, source: settings.name, logger: logger)
        moves = QueueMoves(bus: bus, logger: logger)
        registry = WorkerRegistry(bus: bus, forgetAfter: settings.forgetWorkersAfter, logger: logger)
        (inputs, feed) = AsyncStream.makeStream(of: Input.self)
        started = clock.now
    }

    private var now: Duration { started.duration(to: clock.now) }

    /// The loop's own state; only the loop touches it.
    private struct State {
        var machine: DispatchStateMachine
        var ledger = ControlLedger()
        /// Ingress messages not yet settled, with the task's body as it moves on (see ``TaskIntake``).
        var deliveries: [DeliveryHandle: (message: BusMessage, body: Data)] = [:]
        var nextHandle: DeliveryHandle = 1
        /// Drains (by the worker they fill) and reclaims in progress.
        var drains: [WorkerID: StopSignal] = [:]
        var reclaims: Set<WorkerID> = []
        var movesInFlight = 0
        /// The latest move into each queue, finished once it holds its place in the bus's outgoing
        /// order: the next one into that queue waits for that, so a queue receives its tasks in the
        /// order they arrived (child tasks start in any order) while many are in flight. A move that
        /// fails goes back to ingress and comes later.
        var lastMoveInto: [String: Completion] = [:]
        var ending = false
        /// When the registry was last swept (after the rebuild, then every sweep interval).
        var registrySweptAt: Duration?
        var registrySweeping = false
        /// When a refused control message was last logged, by sender and worker id.
        var refusalsLogged: [String: ContinuousClock.Instant] = [:]
    }

    func run() async {
        var state = State(machine: DispatchStateMachine(configuration: settings.dispatch, now: now))
        board.becameActive(at: Date())
        logger.info(
            "rebuilding the table from heartbeats",
            metadata: ["window_s": "\(settings.dispatch.workerTimeout.components.seconds)"])
        await withDiscardingTaskGroup { group in
            group.addTask {
                await self.subscribe(
                    FanficTopology.ingress, prefetch: self.settings.ingressPrefetch, concurrently: true
                ) {
                    [wire = self.settings.limits.wire, lists = self.settings.expandLists] in
                    TaskIntake.admit(try WireCodec.decode($0, limits: wire), body: $0, lists: lists)
                } wrap: {
                    .ingress($0)
                }
            }
            group.addTask {
                await self.subscribe(FanficTopology.control, prefetch: 100) {
                    [wire = self.settings.limits.wire] in
                    try WireCodec.decodeControl($0, limits: wire)
                } wrap: {
                    .control($0)
                }
            }
            // Known before the first move: a backlog it names needs no record.
            group.addTask { _ = await self.moves.backlogIndex.loadOnce() }
            group.addTask {
                // Every registered worker reporting ends the rebuild early (none: at once).
                if let registered = await self.registry.registeredIDs() {
                    self.feed.yield(.event(.registeredWorkers(registered)))
                    for worker in registered.sorted() { await self.moves.askForReport(worker) }
                }
            }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: self.settings.tickInterval)
                    self.feed.yield(.tick)
                }
            }
            var endBy: ContinuousClock.Instant?
            for await input in inputs {
                handle(input, state: &state, group: &group)
                if state.ending, endBy == nil {
                    endBy = clock.now + settings.endingGrace
                    for signal in state.drains.values { signal.stop() }
                }
                // Ending: let moves in flight settle (so their sources are acked, not
                // redelivered as duplicates), then leave.
                if let endBy,
                    (state.movesInFlight == 0 && state.drains.isEmpty && state.reclaims.isEmpty)
                        || clock.now > endBy
                {
                    break
                }
            }
            feed.finish()
            // What the loop never got to, and what is still unacked, goes back to the broker.
            for await input in inputs {
                if let message = Self.message(of: input) { try? await message.reject(requeue: true) }
            }
            for delivery in state.deliveries.values { try? await delivery.message.reject(requeue: true) }
            await moves.backlogIndex.giveBack()
            group.cancelAll()
        }
    }

    private static func message(of input: Input) -> BusMessage? {
        switch input {
        case .ingress(.success(let task)): task.message
        case .ingress(.failure(let bad)): bad.message
        case .control(.success(let control)): control.message
        case .control(.failure(let bad)): bad.message
        default: nil
        }
    }

    // MARK: Inputs

    private func handle(_ input: Input, state: inout State, group: inout DiscardingTaskGroup) {
        switch input {
        case .ingress(let received):
            if state.ending || Task.isCancelled {
                if let message = Self.message(of: input) { group.addTask { try? await message.reject(requeue: true) } }
                return
            }
            arrive(received, state: &state, group: &group)
        case .control(.failure(let bad)):
            park(bad.message, reason: "undecodable control message: \(bad.reason)", group: &group)
        case .control(.success(let control)):
            group.addTask { try? await control.message.ack() }
            hear(control.value, from: control.message.properties.userID, state: &state, group: &group)
        case .subscriptionChecked(let message, let subscribed):
            state.ledger.checking.remove(message.worker)
            guard subscribed else {
                noteRefused(
                    message, sender: nil, reason: "no subscription to its queue: not a worker any coordinator admitted",
                    state: &state)
                return
            }
            state.ledger.subscribed.insert(message.worker)
            guard let event = state.ledger.translate(message, at: Date()) else { return }
            apply(event, state: &state, group: &group)
        case .event(let event):
            apply(event, state: &state, group: &group)
        case .moveSettled(let move, let confirmed):
            state.movesInFlight -= 1
            apply(confirmed ? .publishConfirmed(move) : .publishFailed(move), state: &state, group: &group)
        case .operationEnded(let worker):
            state.drains[worker] = nil
            state.reclaims.remove(worker)
        case .registrySwept:
            state.registrySweeping = false
        case .tick:
            if bus.generation != generation || !bus.isConnected {
                if !state.ending { logger.warning("connection to the broker lost; this term ends") }
                state.ending = true
            }
            if Task.isCancelled { state.ending = true }
            if !state.ending {
                let quiet = settings.quietSites(seen: state.ledger.sitesSeen, at: Date())
                if quiet != state.machine.quietSites { apply(.quietSites(quiet), state: &state, group: &group) }
                apply(.tick, state: &state, group: &group)
            }
            if !state.ending, !state.registrySweeping, let swept = state.registrySweptAt,
                now - swept >= settings.registrySweepInterval
            {
                sweepRegistry(state: &state, group: &group)
            }
            state.ledger.keepReports(of: state.machine.unfinishedByWorker.keys)
            board.show(state.machine, ledger: state.ledger, now: now)
        case .subscriptionEnded(let queue, let error):
            if !state.ending {
                logger.error(
                    "subscription ended; this term ends",
                    metadata: ["queue": "\(queue)", "error": "\(error ?? "none")"])
            }
            state.ending = true
        }
    }

    private func checkSubscription(
        of message: ControlMessage, state: inout State, group: inout DiscardingTaskGroup
    ) {
        guard !state.ledger.checking.contains(message.worker),
            state.ledger.checking.count + state.ledger.subscribed.count < settings.limits.maxWorkers
        else { return }
        state.ledger.checking.insert(message.worker)
        let queue = FanficTopology.workerQueue(id: message.worker)
        group.addTask {
            let consumers = (try? await self.bus.queueState(queue))?.consumerCount ?? 0
            self.feed.yield(.subscriptionChecked(message, subscribed: consumers > 0))
        }
    }

    /// A task from ingress: parked when it does not decode or is not a story, else to the table.
    private func arrive(
        _ received: Result<Decoded<Result<TaskIntake.Admitted, TaskIntake.Refusal>>, UndecodableMessage>,
        state: inout State,
        group: inout DiscardingTaskGroup
    ) {
        switch received {
        case .failure(let bad):
            park(bad.message, reason: "undecodable task: \(bad.reason)", group: &group)
        case .success(let received):
            switch received.value {
            case .failure(let refusal):
                park(received.message, reason: refusal.reason, group: &group)
            case .success(let admitted):
                let task = admitted.task
                let handle = state.nextHandle
                state.nextHandle += 1
                state.deliveries[handle] = (received.message, admitted.body)
                state.ledger.sitesSeen.insert(task.site)
                apply(
                    .taskArrived(
                        IncomingTask(
                            handle: handle, taskID: task.id, identity: task.identity,
                            isSweep: task.submittedBy == TaskMessage.sweepSubmitter)),
                    state: &state, group: &group)
            }
        }
    }

    /// A worker's control message, from `sender` as the broker vouches: checked, then to the table.
    private func hear(
        _ message: ControlMessage, from sender: String?, state: inout State, group: inout DiscardingTaskGroup
    ) {
        if message.kind == .hello, !state.machine.knownWorkers.contains(message.worker),
            state.machine.knownWorkers.count >= settings.limits.maxWorkers
        {
            noteRefused(
                message, sender: sender,
                reason: "the table holds \(settings.limits.maxWorkers) workers (limits.max_workers)", state: &state)
            return
        }
        if let refusal = state.ledger.refusal(of: message, from: sender, workerUsers: settings.workerUsers) {
            noteRefused(message, sender: sender, reason: refusal, state: &state)
            return
        }
        logger.trace(
            "control message",
            metadata: [
                "type": "\(message.kind.rawValue)", "worker": "\(message.worker)", "site": "\(message.site ?? "-")",
                "unfinished": "\(message.unfinished ?? 0)",
            ])
        if message.kind == .heartbeat, !state.machine.isRunning, !state.machine.knownWorkers.contains(message.worker),
            !state.ledger.subscribed.contains(message.worker)
        {
            // Rebuilding, a heartbeat is how a worker admitted by an earlier coordinator is
            // found; believed only from a worker that consumes its queue, as an admitted one
            // does (a phantom id does not). This one waits for the look.
            checkSubscription(of: message, state: &state, group: &group)
            return
        }
        guard let event = state.ledger.translate(message, at: Date()) else { return }
        apply(event, state: &state, group: &group)
    }

    /// A control message not believed is dropped; logged once a minute per sender and worker id,
    /// so a flood neither fills the log nor slows the loop.
    private func noteRefused(_ message: ControlMessage, sender: String?, reason: String, state: inout State) {
        let key = "\(sender ?? "?")/\(message.worker)"
        if let last = state.refusalsLogged[key], clock.now - last < .seconds(60) { return }
        state.refusalsLogged[key] = clock.now
        if state.refusalsLogged.count > 1000 { state.refusalsLogged = [key: clock.now] }
        logger.warning(
            "dropped a control message",
            metadata: [
                "type": "\(message.kind.rawValue)", "worker": "\(InertText.escape(message.worker))",
                "user": "\(InertText.escape(sender ?? "?"))", "reason": "\(reason)",
            ])
    }

    // MARK: Actions

    private func apply(_ event: DispatchEvent, state: inout State, group: inout DiscardingTaskGroup) {
        let actions = state.machine.handle(event, at: now)
        // Before any move starts: the registry sweep must see a worker met here before its queue
        // gets what the table sends it.
        for case .announce(.workerJoined(let worker)) in actions {
            joinedWorkers.withLock { _ = $0.insert(worker) }
        }
        for action in actions {
            perform(action, state: &state, group: &group)
        }
    }

    /// Moves the site's backlog (or sweep backlog) into the worker, stoppable through `state.drains`.
    private func startDrain(
        site: String, sweep: Bool, into worker: WorkerID, upTo limit: Int?, state: inout State,
        group: inout DiscardingTaskGroup
    ) {
        let signal = StopSignal()
        state.drains[worker] = signal
        group.addTask {
            await self.moves.drain(site: site, sweep: sweep, into: worker, upTo: limit, until: signal) {
                self.feed.yield(.event($0))
            }
            self.feed.yield(.operationEnded(worker))
        }
    }

    private func perform(_ action: DispatchAction, state: inout State, group: inout DiscardingTaskGroup) {
        switch action {
        case .publish(let move, let task, let destination):
            guard let delivery = state.deliveries[task.handle] else { return }
            state.movesInFlight += 1
            let queue = destination.queueName
            let previous = state.lastMoveInto[queue]
            // The common case: every earlier move into the queue holds its place, and the queue is
            // declared. Published from here, it is in order by the time this returns; no task
            // waits for its confirm.
            if previous?.isFinished ?? true,
                moves.publishWithoutWaiting(
                    delivery.body, properties: delivery.message.properties, site: task.identity.site,
                    to: destination, confirmed: { [feed] in feed.yield(.moveSettled(move, confirmed: $0)) })
            {
                state.lastMoveInto[queue] = nil
                return
            }
            let turn = Completion()
            state.lastMoveInto[queue] = turn
            // Forget turns that are over (a few per queue at most are ever pending).
            if state.lastMoveInto.count > 256 {
                state.lastMoveInto = state.lastMoveInto.filter { !$0.value.isFinished }
            }
            group.addTask {
                // In order into a queue: this move goes out after the one before it (its place in
                // the bus's order, not its confirm: the moves into a queue are pipelined).
                await previous?.waitUntilFinished()
                let confirmed = await self.moves.publish(
                    delivery.body, properties: delivery.message.properties, site: task.identity.site, to: destination,
                    submitted: turn.finish)
                self.feed.yield(.moveSettled(move, confirmed: confirmed))
            }
        case .ack(let handle):
            guard let delivery = state.deliveries.removeValue(forKey: handle) else { return }
            delivery.message.ackWithoutWaiting()
        case .requeue(let handle):
            guard let delivery = state.deliveries.removeValue(forKey: handle) else { return }
            group.addTask { try? await delivery.message.reject(requeue: true) }
        case .drainBacklog(let site, let worker, let limit):
            startDrain(site: site, sweep: false, into: worker, upTo: limit, state: &state, group: &group)
        case .drainSweepBacklog(let site, let worker):
            startDrain(site: site, sweep: true, into: worker, upTo: 1, state: &state, group: &group)
        case .reclaim(let worker):
            let drain = state.drains.removeValue(forKey: worker)
            drain?.stop()
            state.reclaims.insert(worker)
            group.addTask {
                await drain?.waitUntilFinished()
                if await self.moves.reclaim(worker: worker, while: { !Task.isCancelled }) {
                    self.feed.yield(.event(.workerReclaimed(worker)))
                }
                self.feed.yield(.operationEnded(worker))
            }
        case .discoverBacklogs:
            // Only the backlogs the index names (and those this term declared): a question
            // about a queue that does not exist is a channel error on the broker.
            let known = Set(settings.knownSites)
            group.addTask {
                let index = self.moves.backlogIndex
                let reading = await index.loadOnce()
                let own = index.declaredByThisTerm
                let (counts, unanswered) = await self.moves.backlogCounts(
                    sites: reading.sitesToAsk(sweep: false, known: known).union(own.backlogs).sorted())
                let (sweepCounts, sweepUnanswered) = await self.moves.backlogCounts(
                    sites: reading.sitesToAsk(sweep: true, known: known).union(own.sweepBacklogs).sorted(),
                    sweep: true)
                self.feed.yield(
                    .event(
                        .backlogsDiscovered(
                            counts.filter { $0.value > 0 }, sweep: sweepCounts.filter { $0.value > 0 })))
                await index.rewrite(
                    BacklogIndex.Sites(backlogs: Set(counts.keys), sweepBacklogs: Set(sweepCounts.keys)))
                await self.askAgain(backlogs: unanswered, sweepBacklogs: sweepUnanswered)
            }
        case .admit(let worker):
            guard state.ledger.replyQueues[worker] != nil else {
                logger.warning("cannot admit a worker that gave no reply queue", metadata: ["worker": "\(worker)"])
                return
            }
            group.addTask { await self.moves.admit(worker) }
        case .stopDrain(let worker):
            state.drains[worker]?.stop()
        case .askToRejoin(let worker):
            logger.info(
                "heartbeats from a worker this table does not know; asking it to say hello",
                metadata: ["worker": "\(worker)"])
            group.addTask { await self.moves.askToRejoin(worker) }
        case .announce(let announcement):
            announcer.announce(announcement)
            switch announcement {
            case .workerJoined(let worker):
                group.addTask { await self.registry.register(worker) }
            case .tableRebuilt:
                sweepRegistry(state: &state, group: &group)
            case .sitePaused(let site, let worker, let until, let reason, let pauses, let waiting):
                let untilDate = Date() + (until - now).timeInterval
                announcePause(
                    site: site, worker: worker, until: untilDate, reason: reason, pauses: pauses, waiting: waiting,
                    group: &group)
            case .siteResumed(let site, let worker, let outage, _):
                let minutes = max(1, Int((outage.timeInterval / 60).rounded()))
                group.addTask {
                    await self.moves.notify(
                        worker, title: "\(site) answers again",
                        text: "\(site) is answering again after \(minutes) min; its stories are being fetched.")
                }
            default:
                break
            }
        }
    }

    /// Asks again about the backlogs the discovery got no answer about (a broker busy or between
    /// nodes), until each is answered or the term ends, and reports those holding tasks: counted
    /// as empty, they would wait until their site's next task, perhaps for good.
    private func askAgain(backlogs: Set<String>, sweepBacklogs: Set<String>) async {
        var (backlogs, sweepBacklogs) = (backlogs, sweepBacklogs)
        guard !backlogs.isEmpty || !sweepBacklogs.isEmpty else { return }
        logger.warning(
            "backlogs the broker did not answer about; asking again",
            metadata: ["backlogs": "\(backlogs.sorted())", "sweep_backlogs": "\(sweepBacklogs.sorted())"])
        var delay = settings.backlogRetry
        while !backlogs.isEmpty || !sweepBacklogs.isEmpty {
            do { try await Task.sleep(for: delay) } catch { return }
            delay = min(delay * 2, .seconds(60))
            let (counts, unanswered) = await moves.backlogCounts(sites: backlogs.sorted())
            let (sweepCounts, sweepUnanswered) = await moves.backlogCounts(sites: sweepBacklogs.sorted(), sweep: true)
            // An unanswered backlog counts 0: only answers are found.
            let found = counts.filter { $0.value > 0 }
            let sweepFound = sweepCounts.filter { $0.value > 0 }
            if !found.isEmpty || !sweepFound.isEmpty {
                logger.info(
                    "backlogs found on asking again",
                    metadata: ["backlogs": "\(found.keys.sorted())", "sweep_backlogs": "\(sweepFound.keys.sorted())"])
                feed.yield(.event(.backlogsDiscovered(found, sweep: sweepFound)))
            }
            (backlogs, sweepBacklogs) = (unanswered, sweepUnanswered)
        }
    }

    /// An event per pause, and a notification at the first of an outage with the stories waiting:
    /// the reporting worker's queue plus the site's backlog.
    private func announcePause(
        site: String, worker: WorkerID, until: Date, reason: String, pauses: Int, waiting: Int,
        group: inout DiscardingTaskGroup
    ) {
        var event = FanficEvent(
            .sitePaused, source: settings.name, worker: worker, site: site,
            reason: TaskPublisher.bounded(reason, to: settings.limits.maxReasonLength),
            detail: "until \(until.formatted(.iso8601)), pause \(pauses)")
        event.attempt = pauses
        events.emit(event)
        // One notification per outage: its later, longer pauses are in events and `fanfic status`.
        guard pauses == 1 else { return }
        group.addTask {
            let backlog = await self.moves.backlogCounts(sites: [site]).counts[site] ?? 0
            let time = until.formatted(date: .omitted, time: .shortened)
            let stories = waiting + backlog
            await self.moves.notify(
                worker, title: "\(site) is blocking us",
                text:
                    "\(site): \(reason); paused until \(time) (\(stories) \(stories == 1 ? "story" : "stories") waiting)"
            )
        }
    }

    private func sweepRegistry(state: inout State, group: inout DiscardingTaskGroup) {
        state.registrySweptAt = now
        state.registrySweeping = true
        let known = state.machine.knownWorkers
        group.addTask {
            await self.registry.sweep(known: known, moves: self.moves) { id in
                !self.joinedWorkers.withLock { $0.contains(id) }
            }
            self.feed.yield(.registrySwept)
        }
    }

    private func park(_ message: BusMessage, reason: String, group: inout DiscardingTaskGroup) {
        logger.warning("parked a message in fanfic.failed", metadata: ["reason": "\(reason)"])
        events.emit(
            FanficEvent(
                .taskParked, source: settings.name,
                reason: TaskPublisher.bounded(reason, to: settings.limits.maxReasonLength)))
        let publisher = TaskPublisher(bus: bus, maxReasonLength: settings.limits.maxReasonLength)
        group.addTask { await publisher.park(message, reason: reason) }
    }

    /// Feeds one queue's messages, decoded, to the loop until the subscription ends, in the order
    /// they arrived. `concurrently`: each message is decoded in a task of its own (up to the
    /// prefetch at once), so that decoding, which is most of a routed task's work, uses every core
    /// instead of holding up the messages behind it.
    private func subscribe<Value: Sendable>(
        _ queue: String, prefetch: UInt16, concurrently: Bool = false,
        decode: @escaping @Sendable (Data) throws -> Value,
        wrap: @escaping @Sendable (Result<Decoded<Value>, UndecodableMessage>) -> Input
    ) async {
        let subscription = bus.consume(queue: queue, prefetch: prefetch)
        guard concurrently else {
            do {
                for try await received in subscription.decoded(decode) { feed.yield(wrap(received)) }
                feed.yield(.subscriptionEnded(queue: queue, error: nil))
            } catch {
                feed.yield(.subscriptionEnded(queue: queue, error: "\(error)"))
            }
            return
        }
        let (decoding, inOrder) = AsyncStream.makeStream(of: Task<Input, Never>.self)
        await withDiscardingTaskGroup { group in
            group.addTask {
                for await task in decoding { self.feed.yield(await task.value) }
            }
            var ending: Input
            do {
                for try await message in subscription {
                    inOrder.yield(Task { wrap(Decoded.decode(message, decode)) })
                }
                ending = .subscriptionEnded(queue: queue, error: nil)
            } catch {
                ending = .subscriptionEnded(queue: queue, error: "\(error)")
            }
            inOrder.yield(Task { [ending] in ending })
            inOrder.finish()
        }
    }
}

extension Duration {
    var timeInterval: TimeInterval {
        TimeInterval(components.seconds) + TimeInterval(components.attoseconds) / 1e18
    }
}
