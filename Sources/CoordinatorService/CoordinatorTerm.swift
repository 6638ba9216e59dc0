import AMQP
import Coordination
import FanficBroker
import FanficCore
import Foundation
import Logging

/// One stretch of leadership: consumes `fanfic.ingress` and `fanfic.control`, feeds what
/// happens to a fresh ``DispatchStateMachine`` and performs the actions it answers with.
///
/// Everything runs through one loop over ``Input``s, so the state machine is only ever touched
/// by one task. The actions that wait on the broker (publishes, drains, reclaims) run as child
/// tasks that report back as inputs: the loop itself never waits on anything but its inputs.
final class CoordinatorTerm: Sendable {
    enum Input: Sendable {
        case ingress(AMQPDelivery)
        case control(AMQPDelivery)
        case event(DispatchEvent)
        case moveSettled
        case operationEnded(WorkerID)
        case tick
        case subscriptionEnded(queue: String, error: String?)
    }

    let coordinator: Coordinator
    let generation: UInt64
    let moves: QueueMoves
    let registry: WorkerRegistry
    private let inputs: AsyncStream<Input>
    private let feed: AsyncStream<Input>.Continuation
    private let clock = ContinuousClock()
    private let started: ContinuousClock.Instant

    var connection: AMQPConnection { coordinator.connection }
    var settings: Coordinator.Settings { coordinator.settings }
    var logger: Logger { coordinator.logger }

    init(coordinator: Coordinator, generation: UInt64) {
        self.coordinator = coordinator
        self.generation = generation
        self.moves = QueueMoves(connection: coordinator.connection, logger: coordinator.logger)
        self.registry = WorkerRegistry(connection: coordinator.connection, logger: coordinator.logger)
        (inputs, feed) = AsyncStream.makeStream(of: Input.self)
        started = clock.now
    }

    private var now: Duration { started.duration(to: clock.now) }

    /// The loop's own state; only the loop touches it.
    private struct State {
        var machine: DispatchStateMachine
        var deliveries: [DeliveryHandle: AMQPDelivery] = [:]
        var nextHandle: DeliveryHandle = 1
        var replyQueues: [WorkerID: String] = [:]
        /// Drains (by the worker they fill) and reclaims in progress.
        var drains: [WorkerID: StopSignal] = [:]
        var reclaims: Set<WorkerID> = []
        var movesInFlight = 0
        var sitesSeen: Set<String> = []
        var ending = false
        /// Each worker's last hello or heartbeat and when it came, for `fanfic status`.
        var reports: [WorkerID: (message: ControlMessage, at: Date)] = [:]
    }

    func run() async {
        var state = State(machine: DispatchStateMachine(configuration: settings.dispatch, now: now))
        let activeSince = Date()
        coordinator.board.update {
            $0.role = .active
            $0.activeSince = activeSince
        }
        logger.info(
            "rebuilding the table from heartbeats",
            metadata: ["window_s": "\(settings.dispatch.workerTimeout.components.seconds)"])
        await withDiscardingTaskGroup { group in
            group.addTask {
                await self.subscribe(FanficTopology.ingress, prefetch: self.settings.ingressPrefetch) { .ingress($0) }
            }
            group.addTask { await self.subscribe(FanficTopology.control, prefetch: 100) { .control($0) } }
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
                    endBy = clock.now + .seconds(10)
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
                if case .ingress(let delivery) = input { try? await delivery.nack(requeue: true) }
                if case .control(let delivery) = input { try? await delivery.nack(requeue: true) }
            }
            for delivery in state.deliveries.values { try? await delivery.nack(requeue: true) }
            group.cancelAll()
        }
    }

    // MARK: Inputs

    private func handle(_ input: Input, state: inout State, group: inout DiscardingTaskGroup) {
        switch input {
        case .ingress(let delivery):
            if state.ending || Task.isCancelled {
                Task { try? await delivery.nack(requeue: true) }
                return
            }
            let task: TaskMessage
            do {
                task = try TaskCodec.decode(delivery.body)
            } catch {
                park(delivery, reason: "undecodable task: \(error.message)", group: &group)
                return
            }
            let handle = state.nextHandle
            state.nextHandle += 1
            state.deliveries[handle] = delivery
            state.sitesSeen.insert(task.site)
            apply(
                .taskArrived(IncomingTask(handle: handle, taskID: task.id, identity: task.identity)), state: &state,
                group: &group)
        case .control(let delivery):
            let message: ControlMessage
            do {
                message = try TaskCodec.decodeControl(delivery.body)
            } catch {
                park(delivery, reason: "undecodable control message: \(error.message)", group: &group)
                return
            }
            group.addTask { try? await delivery.ack() }
            guard let event = controlEvent(message, state: &state) else { return }
            apply(event, state: &state, group: &group)
        case .event(let event):
            apply(event, state: &state, group: &group)
        case .moveSettled:
            state.movesInFlight -= 1
        case .operationEnded(let worker):
            state.drains[worker] = nil
            state.reclaims.remove(worker)
        case .tick:
            if connection.connectionCount != generation || !connection.isConnected {
                if !state.ending { logger.warning("connection to the broker lost; this term ends") }
                state.ending = true
            }
            if Task.isCancelled { state.ending = true }
            if !state.ending { apply(.tick, state: &state, group: &group) }
            publishStatus(&state)
        case .subscriptionEnded(let queue, let error):
            if !state.ending {
                logger.error(
                    "subscription ended; this term ends",
                    metadata: ["queue": "\(queue)", "error": "\(error ?? "none")"])
            }
            state.ending = true
        }
    }

    private func controlEvent(_ message: ControlMessage, state: inout State) -> DispatchEvent? {
        logger.trace(
            "control message",
            metadata: [
                "type": "\(message.kind.rawValue)", "worker": "\(message.worker)", "site": "\(message.site ?? "-")",
                "unfinished": "\(message.unfinished ?? 0)",
            ])
        if message.kind == .hello || message.kind == .heartbeat {
            state.reports[message.worker] = (message, Date())
        }
        switch message.kind {
        case .hello:
            if let replyTo = message.replyTo { state.replyQueues[message.worker] = replyTo }
            if let site = message.site { state.sitesSeen.insert(site) }
            return .workerHello(message.worker, site: message.site, unfinished: message.unfinished ?? 0)
        case .heartbeat:
            if let site = message.site { state.sitesSeen.insert(site) }
            return .heartbeat(message.worker, site: message.site, unfinished: message.unfinished ?? 0)
        case .finished:
            guard let identity = message.finishedIdentity else { return nil }
            return .taskFinished(message.worker, identity)
        case .admit:
            return nil
        }
    }

    /// Copies the table to the status board (every tick: a few workers, cheap).
    private func publishStatus(_ state: inout State) {
        let machine = state.machine
        let assignments = machine.assignments
        let unfinished = machine.unfinishedByWorker
        state.reports = state.reports.filter { unfinished[$0.key] != nil }
        let workers = unfinished.keys.sorted().map { id in
            let report = state.reports[id]
            return WorkerStatus(
                id: id, host: report?.message.host, site: assignments[id], current: report?.message.current,
                tasksDone: report?.message.tasksDone, unfinished: unfinished[id], lastHeartbeat: report?.at)
        }
        let sites = state.sitesSeen.union(assignments.values).union(machine.sitesWaiting).sorted()
        coordinator.board.update {
            $0.phase = machine.statusPhase
            $0.workers = workers
            $0.waitingSites = machine.sitesWaiting
            $0.sites = sites
        }
    }

    // MARK: Actions

    private func apply(_ event: DispatchEvent, state: inout State, group: inout DiscardingTaskGroup) {
        let actions = state.machine.handle(event, at: now)
        for action in actions {
            perform(action, state: &state, group: &group)
        }
    }

    private func perform(_ action: DispatchAction, state: inout State, group: inout DiscardingTaskGroup) {
        switch action {
        case .publish(let move, let task, let destination):
            guard let delivery = state.deliveries[task.handle] else { return }
            state.movesInFlight += 1
            group.addTask {
                let confirmed = await self.moves.publish(delivery, to: destination)
                self.feed.yield(.event(confirmed ? .publishConfirmed(move) : .publishFailed(move)))
                self.feed.yield(.moveSettled)
            }
        case .ack(let handle):
            guard let delivery = state.deliveries.removeValue(forKey: handle) else { return }
            group.addTask { try? await delivery.ack() }
        case .requeue(let handle):
            guard let delivery = state.deliveries.removeValue(forKey: handle) else { return }
            group.addTask { try? await delivery.nack(requeue: true) }
        case .drainBacklog(let site, let worker):
            let signal = StopSignal()
            state.drains[worker] = signal
            group.addTask {
                await self.moves.drain(site: site, into: worker, until: signal) { self.feed.yield(.event($0)) }
                self.feed.yield(.operationEnded(worker))
            }
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
            let sites = Set(settings.knownSites).union(state.sitesSeen).sorted()
            group.addTask {
                let counts = await self.moves.backlogCounts(sites: sites)
                self.feed.yield(.event(.backlogsDiscovered(counts)))
            }
        case .admit(let worker):
            guard let replyTo = state.replyQueues[worker] else {
                logger.warning("cannot admit a worker that gave no reply queue", metadata: ["worker": "\(worker)"])
                return
            }
            group.addTask { await self.moves.admit(worker, replyTo: replyTo) }
        case .announce(let announcement):
            announce(announcement)
            switch announcement {
            case .workerJoined(let worker):
                group.addTask { await self.registry.register(worker) }
            case .tableRebuilt:
                let known = state.machine.knownWorkers
                group.addTask { await self.registry.sweep(known: known, moves: self.moves) }
            default:
                break
            }
        }
    }

    private func park(_ delivery: AMQPDelivery, reason: String, group: inout DiscardingTaskGroup) {
        logger.warning("parked a message in fanfic.failed", metadata: ["reason": "\(reason)"])
        coordinator.events.emit(FanficEvent(.taskParked, source: settings.name, reason: reason))
        group.addTask {
            do {
                try await TaskPublisher(connection: self.connection).park(
                    delivery.body, reason: reason, properties: delivery.properties)
                try await delivery.ack()
            } catch {
                // Not parked: the broker redelivers it, and past the delivery limit dead-letters it.
                try? await delivery.nack(requeue: true)
            }
        }
    }

    private func subscribe(
        _ queue: String, prefetch: UInt16, _ wrap: @escaping @Sendable (AMQPDelivery) -> Input
    ) async {
        do {
            for try await delivery in connection.consume(queue: queue, prefetch: prefetch) {
                feed.yield(wrap(delivery))
            }
            feed.yield(.subscriptionEnded(queue: queue, error: nil))
        } catch {
            feed.yield(.subscriptionEnded(queue: queue, error: "\(error)"))
        }
    }

    // MARK: Announcements

    private func announce(_ announcement: DispatchAnnouncement) {
        let source = settings.name
        let events = coordinator.events
        switch announcement {
        case .duplicateDropped(let identity):
            logger.info("duplicate dropped", metadata: ["site": "\(identity.site)", "url": "\(identity.url)"])
            events.emit(
                FanficEvent(
                    .taskDuplicate, source: source, site: identity.site, url: identity.url,
                    calibreID: identity.calibreID))
        case .taskRouted(let identity, let destination):
            let queue = Self.queueName(destination)
            logger.debug("task routed", metadata: ["url": "\(identity.url)", "queue": "\(queue)"])
            var event = FanficEvent(
                .taskRouted, source: source, site: identity.site, url: identity.url, calibreID: identity.calibreID,
                destination: queue)
            if case .worker(let id) = destination { event.worker = id }
            events.emit(event)
        case .siteAssigned(let site, let worker):
            logger.info("site assigned", metadata: ["site": "\(site)", "worker": "\(worker)"])
            events.emit(FanficEvent(.siteAssigned, source: source, worker: worker, site: site))
        case .siteReleased(let site, let worker):
            logger.info("site released", metadata: ["site": "\(site)", "worker": "\(worker)"])
            events.emit(FanficEvent(.siteReleased, source: source, worker: worker, site: site))
        case .workerJoined(let worker):
            logger.info("worker joined", metadata: ["worker": "\(worker)"])
            events.emit(FanficEvent(.workerJoined, source: source, worker: worker))
        case .workerPresumedDead(let worker, let site):
            logger.warning(
                "worker presumed dead; reclaiming its queue",
                metadata: ["worker": "\(worker)", "site": "\(site ?? "none")"])
            events.emit(FanficEvent(.workerDead, source: source, worker: worker, site: site))
        case .tableRebuilt(let workers, let waitingSites):
            logger.notice(
                "table rebuilt; assigning", metadata: ["workers": "\(workers)", "waiting_sites": "\(waitingSites)"])
            events.emit(
                FanficEvent(
                    .coordinatorReady, source: source, detail: "workers=\(workers) waiting_sites=\(waitingSites)"))
        }
    }

    static func queueName(_ destination: Destination) -> String {
        switch destination {
        case .worker(let id): FanficTopology.workerQueue(id: id)
        case .backlog(let site): FanficTopology.backlogQueue(site: site)
        }
    }
}
