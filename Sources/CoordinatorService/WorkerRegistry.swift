import AMQP
import Coordination
import FanficBroker
import FanficCore
import Foundation
import Logging
import Synchronization

/// The ids of workers coordinators have seen, kept in the durable queue `fanfic.workers`.
///
/// A new coordinator learns about workers from their heartbeats; a worker that died while no
/// coordinator was watching (or while one was restarting) never sends one, and its queue would
/// keep its tasks forever. After each rebuild the active coordinator reads this registry and
/// moves the tasks of every registered worker it did not hear from, and that nobody consumes,
/// back to ingress.
final class WorkerRegistry: Sendable {
    static var queueName: String { FanficTopology.workers }

    let bus: any MessageBus
    let logger: Logger
    private let registered = Mutex<Set<WorkerID>>([])

    init(bus: any MessageBus, logger: Logger) {
        self.bus = bus
        self.logger = logger
    }

    /// Records a worker that joined the table (once per id and term).
    func register(_ worker: WorkerID) async {
        guard registered.withLock({ $0.insert(worker).inserted }) else { return }
        do {
            try await publish(worker)
        } catch {
            registered.withLock { _ = $0.remove(worker) }
            logger.debug("worker not registered", metadata: ["worker": "\(worker)", "error": "\(error)"])
        }
    }

    /// Reclaims the queues of registered workers the table does not know, then rewrites the
    /// registry without the ones whose queue is gone or now empty. Returns the tasks moved.
    @discardableResult
    func sweep(known: Set<WorkerID>, moves: QueueMoves) async -> Int {
        var entries: [BusMessage] = []
        var ids: Set<WorkerID> = []
        do {
            while let entry = try await bus.get(queue: Self.queueName) {
                entries.append(entry)
                if let id = String(data: entry.body, encoding: .utf8), !id.isEmpty { ids.insert(id) }
            }
        } catch {
            for entry in entries { try? await entry.reject(requeue: true) }
            logger.warning("worker registry not read", metadata: ["error": "\(error)"])
            return 0
        }
        var keep: Set<WorkerID> = []
        var moved = 0
        for id in ids.sorted() {
            if known.contains(id) {
                keep.insert(id)
                continue
            }
            guard let state = try? await bus.queueState(FanficTopology.workerQueue(id: id)) else {
                continue  // its queue is gone: forget it
            }
            if state.consumerCount > 0 {
                keep.insert(id)  // connected, just not talking to us yet
            } else if state.messageCount > 0 {
                logger.warning(
                    "reclaiming the queue of a worker no coordinator has heard from",
                    metadata: ["worker": "\(id)", "tasks": "\(state.messageCount)"])
                moved += Int(state.messageCount)
                if await !moves.reclaim(worker: id, while: { !Task.isCancelled }) { keep.insert(id) }
            }
        }
        // Rewrite: the kept ids first (confirmed), then the old entries go.
        do {
            for id in keep.sorted() { try await publish(id) }
            for entry in entries { try? await entry.ack() }
            registered.withLock { $0.formUnion(keep) }
        } catch {
            for entry in entries { try? await entry.reject(requeue: true) }
        }
        return moved
    }

    private func publish(_ worker: WorkerID) async throws {
        try await bus.publish(
            Data(worker.utf8), exchange: FanficTopology.dispatch, routingKey: Self.queueName,
            properties: AMQPMessageProperties(contentType: "text/plain", deliveryMode: 2), mandatory: true,
            retryFor: .seconds(10))
    }
}
