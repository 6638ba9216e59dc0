import AMQP
import Coordination
import FanficBroker
import FanficCore
import Foundation
import Logging
import Synchronization

/// The broker operations behind the state machine's actions. Every move of a task is publish,
/// wait for the confirm, then ack the source: a crash in between duplicates, never loses.
final class QueueMoves: Sendable {
    let bus: any MessageBus
    let logger: Logger
    /// Worker and backlog queues declared in this term (declared once, before the first publish).
    private let declared = Mutex<Set<String>>([])
    /// The sites whose backlogs exist, recorded before a backlog is first declared.
    let backlogIndex: BacklogIndex

    init(bus: any MessageBus, logger: Logger) {
        self.bus = bus
        self.logger = logger
        backlogIndex = BacklogIndex(bus: bus, logger: logger)
    }

    /// Publishes a task from ingress to its destination, marked with the site the coordinator
    /// derived for it (the worker checks it); true once confirmed. `submitted` is called when the
    /// move holds its place in the bus's outgoing order, and again when it is over (a move that
    /// never went out must not hold up the next): it must tolerate a second call.
    func publish(
        _ body: Data, properties: AMQPMessageProperties, site: String, to destination: Destination,
        submitted: @escaping @Sendable () -> Void = {}
    ) async -> Bool {
        let queue = destination.queueName
        defer { submitted() }
        do {
            try await ensureDeclared(destination)
            try await bus.publish(
                body, exchange: FanficTopology.dispatch, routingKey: queue,
                properties: Self.moved(properties, site: site), mandatory: true, submitted: submitted)
            return true
        } catch {
            noteUnconfirmed(queue, error)
            return false
        }
    }

    /// ``publish(_:properties:site:to:submitted:)`` without a task waiting for the confirm:
    /// `confirmed` hears how it ended and must return at once. The move holds its place in the
    /// bus's outgoing order when this returns. Only into a queue this term has declared: false,
    /// and nothing sent, otherwise (the caller then takes the path that declares it first).
    func publishWithoutWaiting(
        _ body: Data, properties: AMQPMessageProperties, site: String, to destination: Destination,
        confirmed: @escaping @Sendable (Bool) -> Void
    ) -> Bool {
        let queue = destination.queueName
        guard declared.withLock({ $0.contains(queue) }) else { return false }
        bus.publish(
            body, exchange: FanficTopology.dispatch, routingKey: queue, properties: Self.moved(properties, site: site),
            mandatory: true
        ) { error in
            if let error { self.noteUnconfirmed(queue, error) }
            confirmed(error == nil)
        }
        return true
    }

    /// A moved task's properties: persistent, marked with the site the coordinator derived for
    /// it (the worker checks it).
    private static func moved(_ properties: AMQPMessageProperties, site: String) -> AMQPMessageProperties {
        var properties = persistent(properties)
        properties.headers[FanficTopology.siteHeader] = .string(site)
        return properties
    }

    private func noteUnconfirmed(_ queue: String, _ error: any Error) {
        logger.warning(
            "move not confirmed; the task goes back to ingress", metadata: ["queue": "\(queue)", "error": "\(error)"])
    }

    /// Moves a site's backlog into a worker's queue, one task at a time, until it is empty, `limit`
    /// tasks (the worker's turn) have moved, or `signal` says stop (a reclaim of that worker, the
    /// term's end, the site's budget or quiet hours); it then reports `.backlogDrained`: the moves
    /// into the worker are over.
    func drain(
        site: String, sweep: Bool = false, into worker: WorkerID, upTo limit: Int? = nil, until signal: StopSignal,
        report: @Sendable (DispatchEvent) -> Void
    ) async {
        defer { signal.finished() }
        let source = sweep ? FanficTopology.sweepBacklogQueue(site: site) : FanficTopology.backlogQueue(site: site)
        let target = FanficTopology.workerQueue(id: worker)
        var moved = 0
        while !signal.isStopped && !Task.isCancelled {
            if let limit, moved >= limit {
                logger.debug("a turn moved", metadata: ["site": "\(site)", "worker": "\(worker)", "moved": "\(moved)"])
                report(.backlogDrained(site: site, worker: worker))
                return
            }
            do {
                guard let message = try await bus.get(queue: source) else {
                    logger.info(
                        "backlog drained", metadata: ["site": "\(site)", "worker": "\(worker)", "moved": "\(moved)"])
                    report(.backlogDrained(site: site, worker: worker))
                    return
                }
                let identity = try? WireCodec.decode(message.body).identity
                do {
                    try await ensureDeclared(.worker(worker))
                    try await bus.publish(
                        message.body, exchange: FanficTopology.dispatch, routingKey: target,
                        properties: Self.persistent(message.properties), mandatory: true)
                } catch {
                    try? await message.reject(requeue: true)
                    throw error
                }
                // Confirmed in the worker's queue: counted there even if this ack is lost (the
                // backlog would then hand out a copy, which the worker's pipeline absorbs).
                report(.backlogTaskMoved(site: site, worker: worker, identity: identity))
                moved += 1
                try? await message.ack()
            } catch {
                logger.warning(
                    "backlog drain interrupted; retrying",
                    metadata: ["site": "\(site)", "worker": "\(worker)", "error": "\(error)"])
                try? await Task.sleep(for: .seconds(1))
            }
        }
        logger.info("backlog drain stopped", metadata: ["site": "\(site)", "worker": "\(worker)", "moved": "\(moved)"])
        report(.backlogDrained(site: site, worker: worker))
    }

    /// Moves what is left in a worker's queue back to `fanfic.ingress`. True when the queue was
    /// found empty; false when stopped first.
    func reclaim(worker: WorkerID, while shouldGoOn: @Sendable () -> Bool) async -> Bool {
        let queue = FanficTopology.workerQueue(id: worker)
        var moved = 0
        while shouldGoOn() {
            do {
                guard let message = try await bus.get(queue: queue) else {
                    logger.info("worker queue reclaimed", metadata: ["worker": "\(worker)", "moved": "\(moved)"])
                    return true
                }
                do {
                    try await bus.publish(
                        message.body, exchange: FanficTopology.ingress, routingKey: FanficTopology.taskRoutingKey,
                        properties: Self.persistent(message.properties), mandatory: true)
                } catch {
                    try? await message.reject(requeue: true)
                    throw error
                }
                moved += 1
                try? await message.ack()
            } catch let error as AMQPError where error.code == .channelClosed && error.replyCode == 404 {
                return true  // no such queue: nothing to reclaim
            } catch {
                logger.warning("reclaim interrupted; retrying", metadata: ["worker": "\(worker)", "error": "\(error)"])
                try? await Task.sleep(for: .seconds(1))
            }
        }
        return false
    }

    /// The message counts of the sites' backlogs (or sweep backlogs) that exist, 0 for one that
    /// could not be asked about; `unanswered` names those, to be asked again.
    func backlogCounts(sites: [String], sweep: Bool = false) async -> (counts: [String: Int], unanswered: Set<String>) {
        var counts: [String: Int] = [:]
        var unanswered: Set<String> = []
        for site in sites {
            let queue = sweep ? FanficTopology.sweepBacklogQueue(site: site) : FanficTopology.backlogQueue(site: site)
            do {
                if let state = try await bus.queueState(queue) { counts[site] = Int(state.messageCount) }
            } catch {
                counts[site] = 0
                unanswered.insert(site)
            }
        }
        return (counts, unanswered)
    }

    /// Tells a worker it may consume its queue: declares its queue and reply queue (a worker may
    /// not), then answers on the reply queue its id names (never one a message names).
    func admit(_ worker: WorkerID) async {
        do {
            try await bus.declare(FanficTopology.workerQueues(id: worker))
            declared.withLock { _ = $0.insert(FanficTopology.workerQueue(id: worker)) }
            try await bus.publish(
                WireCodec.encode(ControlMessage.admit(worker: worker)), exchange: FanficTopology.dispatch,
                routingKey: FanficTopology.replyQueue(worker: worker), properties: .persistentJSON(), mandatory: true,
                retryFor: .seconds(5))
            logger.info("worker admitted", metadata: ["worker": "\(worker)"])
        } catch {
            // It says hello again at its next heartbeat, and is admitted then.
            logger.warning("admit not sent", metadata: ["worker": "\(worker)", "error": "\(error)"])
        }
    }

    /// Asks a worker to say hello again, on the reply queue its id names (never one a message
    /// names); nothing happens when there is no such queue.
    func askToRejoin(_ worker: WorkerID) async {
        do {
            try await bus.publish(
                WireCodec.encode(ControlMessage.rejoin(worker: worker)), exchange: FanficTopology.dispatch,
                routingKey: FanficTopology.replyQueue(worker: worker), properties: .persistentJSON(), mandatory: false,
                retryFor: nil)
        } catch {
            logger.debug("rejoin not sent", metadata: ["worker": "\(worker)", "error": "\(error)"])
        }
    }

    /// Asks a worker to tell its user something (a site's outage, its end): the coordinator
    /// decides once for the fleet; workers have the notifier. Best effort, like notifications.
    func notify(_ worker: WorkerID, title: String, text: String) async {
        do {
            try await bus.publish(
                WireCodec.encode(ControlMessage.notify(worker: worker, title: title, text: text)),
                exchange: FanficTopology.dispatch, routingKey: FanficTopology.replyQueue(worker: worker),
                properties: .persistentJSON(), mandatory: true, retryFor: .seconds(5))
        } catch {
            logger.warning("notification not sent", metadata: ["worker": "\(worker)", "error": "\(error)"])
        }
    }

    /// Asks a worker for its report now (a new term rebuilds its table). Best effort: a worker
    /// that does not answer is waited for as before.
    func askForReport(_ worker: WorkerID) async {
        try? await bus.publish(
            WireCodec.encode(ControlMessage(kind: .report, worker: worker)), exchange: FanficTopology.dispatch,
            routingKey: FanficTopology.replyQueue(worker: worker), properties: .persistentJSON(), mandatory: false,
            retryFor: nil)
    }

    private func ensureDeclared(_ destination: Destination) async throws {
        let name = destination.queueName
        if declared.withLock({ $0.contains(name) }) { return }
        let topology: AMQPTopology
        switch destination {
        case .worker(let id):
            topology = FanficTopology.worker(id: id)
        case .backlog(let site):
            try await backlogIndex.record(site)
            topology = FanficTopology.backlog(site: site)
        case .sweepBacklog(let site):
            try await backlogIndex.record(site, sweep: true)
            topology = FanficTopology.sweepBacklog(site: site)
        }
        try await bus.declare(topology)
        declared.withLock { _ = $0.insert(name) }
    }

    private static func persistent(_ properties: AMQPMessageProperties) -> AMQPMessageProperties {
        var properties = properties
        properties.deliveryMode = 2
        return properties
    }
}

/// Asks a background operation to stop after its current step, and waits until it has.
final class StopSignal: Sendable {
    private let stopped = Mutex(false)
    private let completion = Completion()

    var isStopped: Bool { stopped.withLock { $0 } }

    func stop() { stopped.withLock { $0 = true } }

    func finished() { completion.finish() }

    func waitUntilFinished() async { await completion.waitUntilFinished() }
}

/// Something that finishes once; any number may wait for it (before or after).
final class Completion: Sendable {
    private let state = Mutex<(finished: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    var isFinished: Bool { state.withLock { $0.finished } }

    func finish() {
        let waiters = state.withLock { state in
            state.finished = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    func waitUntilFinished() async {
        await withCheckedContinuation { continuation in
            let done = state.withLock { state in
                if state.finished { return true }
                state.waiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }
}
