import AMQP
import Coordination
import FanficBroker
import FanficCore
import Foundation
import Logging
import Synchronization

/// The workers coordinators have seen and when, kept in the durable queue `fanfic.workers`.
///
/// A new coordinator learns about workers from their heartbeats; a worker that died while no
/// coordinator was watching (or while one was restarting) never sends one, and its queue would
/// keep its tasks forever. After each rebuild, and every few minutes, the active coordinator
/// reads this registry, moves the tasks of every registered worker it does not hear from (and
/// that nobody consumes) back to ingress, and forgets a worker silent for longer than
/// `coordinator.forget_workers_after`: its queue, then empty, is deleted.
///
/// Each entry is `{"id": ..., "last_seen": <unix seconds>}` (a bare id, as older coordinators
/// wrote, counts as seen now). Times are wall-clock because the registry outlives coordinators.
final class WorkerRegistry: Sendable {
    static var queueName: String { FanficTopology.workers }

    struct Entry: Codable, Hashable {
        var id: WorkerID
        var lastSeen: Int

        enum CodingKeys: String, CodingKey {
            case id
            case lastSeen = "last_seen"
        }
    }

    /// What one sweep did.
    struct SweepResult: Equatable {
        var tasksMoved = 0
        var forgotten: [WorkerID] = []
        var kept: [WorkerID] = []
    }

    let bus: any MessageBus
    let logger: Logger
    /// Silence after which a worker is forgotten.
    let forgetAfter: TimeInterval
    private let registered = Mutex<Set<WorkerID>>([])

    init(bus: any MessageBus, forgetAfter: TimeInterval = 86_400, logger: Logger) {
        self.bus = bus
        self.forgetAfter = forgetAfter
        self.logger = logger
    }

    /// Records a worker that joined the table (once per id and term).
    func register(_ worker: WorkerID, at now: Date = Date()) async {
        guard registered.withLock({ $0.insert(worker).inserted }) else { return }
        do {
            try await publish(Entry(id: worker, lastSeen: Self.seconds(now)))
        } catch {
            registered.withLock { _ = $0.remove(worker) }
            logger.debug("worker not registered", metadata: ["worker": "\(worker)", "error": "\(error)"])
        }
    }

    /// The ids the registry names, read without changing it (each entry goes back); nil when it
    /// cannot be read. A new term waits for these to report instead of a whole timeout window.
    func registeredIDs(now: Date = Date()) async -> Set<WorkerID>? {
        var messages: [BusMessage] = []
        var ids: Set<WorkerID>? = []
        do {
            while let message = try await bus.get(queue: Self.queueName) {
                messages.append(message)
                if let entry = Self.entry(message.body, now: now) { ids?.insert(entry.id) }
            }
        } catch {
            logger.debug(
                "worker registry not read; the rebuild waits its whole window", metadata: ["error": "\(error)"])
            ids = nil
        }
        for message in messages { try? await message.reject(requeue: true) }
        return ids
    }

    /// Reclaims the queues of registered workers the table does not know, forgets those silent
    /// past `forgetAfter` (deleting their queue once it is empty and unused), then rewrites the
    /// registry: `known` workers as seen `now`, the others with their last sighting.
    @discardableResult
    func sweep(
        known: Set<WorkerID>, moves: QueueMoves, now: Date = Date(),
        stillUnknown: @Sendable (WorkerID) -> Bool = { _ in true }
    ) async -> SweepResult {
        var messages: [BusMessage] = []
        var lastSeen: [WorkerID: Int] = [:]
        do {
            while let message = try await bus.get(queue: Self.queueName) {
                messages.append(message)
                if let entry = Self.entry(message.body, now: now) {
                    lastSeen[entry.id] = max(lastSeen[entry.id] ?? 0, entry.lastSeen)
                }
            }
        } catch {
            for message in messages { try? await message.reject(requeue: true) }
            logger.warning("worker registry not read", metadata: ["error": "\(error)"])
            return SweepResult()
        }
        let nowSeconds = Self.seconds(now)
        for id in known { lastSeen[id] = nowSeconds }
        var result = SweepResult()
        var keep: [Entry] = []
        for (id, seen) in lastSeen.sorted(by: { $0.key < $1.key }) {
            if known.contains(id) {
                keep.append(Entry(id: id, lastSeen: seen))
                continue
            }
            let queue = FanficTopology.workerQueue(id: id)
            guard let state = try? await bus.queueState(queue) else {
                result.forgotten.append(id)  // its queue is gone
                continue
            }
            if state.consumerCount > 0 {
                keep.append(Entry(id: id, lastSeen: nowSeconds))  // connected, just not talking to us yet
                continue
            }
            if state.messageCount > 0 {
                // Met by the table since `known` was taken (admitted, not consuming yet): its
                // queue holds what the table just sent it.
                guard stillUnknown(id) else {
                    keep.append(Entry(id: id, lastSeen: nowSeconds))
                    continue
                }
                logger.warning(
                    "reclaiming the queue of a worker no coordinator has heard from",
                    metadata: ["worker": "\(id)", "tasks": "\(state.messageCount)"])
                result.tasksMoved += Int(state.messageCount)
                // Asked again before each move: a hello may land while the queue is being moved.
                if await !moves.reclaim(worker: id, while: { !Task.isCancelled && stillUnknown(id) }) {
                    keep.append(Entry(id: id, lastSeen: seen))
                    continue
                }
            }
            if TimeInterval(nowSeconds - seen) >= forgetAfter, (try? await bus.deleteQueueIfIdle(queue)) == true {
                logger.info(
                    "forgot a worker silent past coordinator.forget_workers_after; its queue is deleted",
                    metadata: ["worker": "\(id)", "silent_s": "\(nowSeconds - seen)"])
                result.forgotten.append(id)
            } else {
                keep.append(Entry(id: id, lastSeen: seen))
            }
        }
        // Rewrite: the kept entries first (confirmed), then the old ones go.
        do {
            for entry in keep { try await publish(entry) }
            for message in messages { try? await message.ack() }
            registered.withLock { $0.formUnion(keep.map(\.id)) }
        } catch {
            for message in messages { try? await message.reject(requeue: true) }
        }
        result.kept = keep.map(\.id)
        return result
    }

    static func entry(_ body: Data, now: Date) -> Entry? {
        if let entry = try? JSONDecoder().decode(Entry.self, from: body) {
            return !entry.id.isEmpty && FanficConfiguration.workerIDProblem(entry.id) == nil ? entry : nil
        }
        // A bare id, as coordinators before last-seen times wrote.
        guard let id = String(data: body, encoding: .utf8), !id.isEmpty, FanficConfiguration.workerIDProblem(id) == nil
        else {
            return nil
        }
        return Entry(id: id, lastSeen: seconds(now))
    }

    private static func seconds(_ date: Date) -> Int { Int(date.timeIntervalSince1970) }

    private func publish(_ entry: Entry) async throws {
        try await bus.publish(
            try JSONEncoder().encode(entry), exchange: FanficTopology.dispatch, routingKey: Self.queueName,
            properties: AMQPMessageProperties(contentType: "application/json", deliveryMode: 2), mandatory: true,
            retryFor: .seconds(10))
    }
}
