import AMQP
import FanficBroker
import FanficCore
import Foundation
import TestSupport
import Testing

/// Every role's user through the operations a hostile or buggy role could try, against the real
/// broker: what the definitions allow and what they refuse (ACCESS_REFUSED, 403).
enum PermissionMatrix {
    enum Answer: String, Sendable { case allowed, refused }

    enum Operation: Sendable, CustomStringConvertible {
        case declare(String, AMQPTopology)
        case delete(String)
        case purge(String)
        case get(String)
        case consume(String)
        case publish(exchange: String)

        var description: String {
            switch self {
            case .declare(let what, _): "declare \(what)"
            case .delete(let queue): "delete \(queue)"
            case .purge(let queue): "purge \(queue)"
            case .get(let queue): "get \(queue)"
            case .consume(let queue): "consume \(queue)"
            case .publish(let exchange): "publish to \(exchange.isEmpty ? "the default exchange" : exchange)"
            }
        }
    }

    static let roles = ["admin", "coordinator", "worker", "ingester", "cli", "dashboard"]
    static let worker = FanficTopology.workerQueue(id: "matrix")
    static let victim = "fanfic.backlog.matrix-victim"

    /// Each operation with the roles allowed to do it (in ``roles`` order); the others are refused.
    static func expectations(ladder: RetryLadder) -> [(Operation, allowed: Set<String>)] {
        let owners: Set<String> = ["admin", "coordinator"]
        let shared = FanficTopology.declarations(retry: ladder)
        var rows: [(Operation, allowed: Set<String>)] = [
            (.declare("the shared topology", shared), owners),
            (.declare("a worker queue", FanficTopology.worker(id: "matrix-new")), owners),
            (
                .declare("the Content Server lock", AMQPTopology(queues: [FanficTopology.lock("fanfic.lock.matrix")])),
                owners.union(["worker"])
            ),
            (
                .declare("the sweep lock", AMQPTopology(queues: [FanficTopology.lock(FanficTopology.sweepLock)])),
                owners.union(["worker"])
            ),
            (
                .declare("a status reply queue", FanficTopology.statusReplies(FanficTopology.statusReplyQueue())),
                owners.union(["cli", "dashboard"])
            ),
            (.declare("the dashboard's event queue", FanficTopology.dashboard()), owners.union(["dashboard"])),
            (.delete(victim), owners),
            (.delete(FanficTopology.ingress), []),  // tried only by the refused roles: see run()
            // The dashboard reads fanfic.failed (its Failed page's requeue and purge), so it may purge it.
            (.purge(FanficTopology.failed), owners.union(["dashboard"])),
            (.purge(FanficTopology.ingress), owners),
            (.purge(worker), owners.union(["worker"])),
            (.get(FanficTopology.ingress), owners),
            (.get(FanficTopology.control), owners),
            (.get(FanficTopology.failed), owners.union(["dashboard"])),
            (.get(FanficTopology.retryQueue(ladder.tiers[0])), owners.union(["dashboard"])),
            (.get(FanficTopology.sweepState), owners.union(["worker"])),
            (.get(FanficTopology.sweepDelay), owners.union(["worker"])),
            (.get(FanficTopology.sweepRequests), owners.union(["worker"])),
            (.get(FanficTopology.sweepProgress), owners.union(["cli", "dashboard"])),
            (.get(FanficTopology.backlogQueue(site: "test1.com")), owners),
            (.get(worker), owners.union(["worker"])),
            (.get(FanficTopology.replyQueue(worker: "matrix")), owners.union(["worker"])),
            (.consume(FanficTopology.failed), owners.union(["dashboard"])),
            (.consume(worker), owners.union(["worker"])),
        ]
        let publishers: [(String, Set<String>)] = [
            // The worker: the stories of a list page it expanded.
            (FanficTopology.ingress, ["coordinator", "worker", "ingester", "cli", "dashboard"]),
            (FanficTopology.control, ["coordinator", "worker"]),
            (FanficTopology.failed, ["coordinator", "worker", "dashboard"]),
            (FanficTopology.retry, ["coordinator", "worker", "dashboard"]),
            (FanficTopology.events, ["coordinator", "worker", "ingester", "dashboard"]),
            (FanficTopology.dispatch, ["coordinator"]),
            (FanficTopology.status, ["coordinator", "cli", "dashboard"]),
            (FanficTopology.statusReplies, ["coordinator"]),
            (FanficTopology.sweep, ["coordinator", "worker"]),
            (FanficTopology.sweepRequests, ["coordinator", "cli"]),
            ("", []),
        ]
        for (exchange, allowed) in publishers { rows.append((.publish(exchange: exchange), allowed.union(["admin"]))) }
        return rows
    }

    /// Runs every row for every role; returns (role, operation, expected, answer, detail).
    /// Expects every answer to be the expected one; returns the answers as a TSV table (role,
    /// operation, expected, answer, the broker's words).
    static func check(
        _ results: [(role: String, operation: String, expected: Answer, answer: Answer, detail: String)]
    ) -> String {
        var table = "role\toperation\texpected\tanswer\n"
        for row in results {
            table += "\(row.role)\t\(row.operation)\t\(row.expected.rawValue)\t\(row.answer.rawValue)\t\(row.detail)\n"
            #expect(
                row.answer == row.expected,
                "\(row.role): \(row.operation) was \(row.answer.rawValue), expected \(row.expected.rawValue) \(row.detail)"
            )
        }
        return table
    }

    static func run(urls: [String: String], ladder: RetryLadder) async throws -> [(
        role: String, operation: String, expected: Answer, answer: Answer, detail: String
    )] {
        var connections: [String: AMQPMessageBus] = [:]
        for role in roles {
            var configuration = try AMQPConfiguration(url: urls[role]!)
            configuration.connectionName = "matrix-\(role)"
            configuration.commandTimeout = .seconds(20)
            let connection = AMQPConnection(configuration: configuration, logger: TestBroker.logger)
            try await connection.waitUntilConnected(timeout: .seconds(30))
            connections[role] = AMQPMessageBus(connection)
        }
        defer { for bus in connections.values { Task { await bus.connection.close() } } }
        let admin = connections["admin"]!
        try await admin.declare(FanficTopology.worker(id: "matrix").merging(FanficTopology.reply(worker: "matrix")))

        var results: [(String, String, Answer, Answer, String)] = []
        for (operation, allowed) in expectations(ladder: ladder) {
            for role in roles {
                // Deleting a queue the system needs is tried only by those who must be refused.
                if case .delete(let queue) = operation, queue == FanficTopology.ingress,
                    ["admin", "coordinator"].contains(role)
                {
                    continue
                }
                try await prepare(operation, with: admin)
                let (answer, detail) = await attempt(operation, on: connections[role]!)
                results.append((role, "\(operation)", allowed.contains(role) ? .allowed : .refused, answer, detail))
            }
        }
        return results
    }

    /// What an operation needs to be meaningful: a victim to delete, a message to take.
    private static func prepare(_ operation: Operation, with admin: AMQPMessageBus) async throws {
        switch operation {
        case .delete(let queue) where queue == victim:
            try await admin.declare(AMQPTopology(queues: [QueueSpec.quorum(victim)]), remember: false)
        case .get(let queue), .consume(let queue):
            // A backlog exists once some task waited in it, which a ready fleet may never need.
            let backlogPrefix = FanficTopology.backlogQueue(site: "")
            if queue.hasPrefix(backlogPrefix) {
                try await admin.declare(
                    FanficTopology.backlog(site: String(queue.dropFirst(backlogPrefix.count))), remember: false)
            }
            try await admin.publish(
                Data(#"{"matrix":true}"#.utf8), exchange: "", routingKey: queue, properties: .persistentJSON(),
                mandatory: true)
        default:
            break
        }
    }

    private static func attempt(_ operation: Operation, on bus: AMQPMessageBus) async -> (Answer, String) {
        do {
            switch operation {
            case .declare(_, let topology):
                try await bus.declare(topology, remember: false)
            case .delete(let queue):
                try await bus.deleteQueue(queue)
            case .purge(let queue):
                try await bus.purgeQueue(queue)
            case .get(let queue):
                try await bus.get(queue: queue)?.reject(requeue: true)
            case .consume(let queue):
                for try await message in bus.consume(queue: queue, prefetch: 1) {
                    try await message.reject(requeue: true)
                    break
                }
            case .publish(let exchange):
                try await bus.publish(
                    Data(#"{"matrix":true}"#.utf8), exchange: exchange, routingKey: "matrix.nowhere",
                    properties: AMQPMessageProperties(contentType: "application/json", deliveryMode: 1),
                    mandatory: false, retryFor: nil)
            }
            return (.allowed, "")
        } catch let error as AMQPError where error.replyCode == 403 || error.code == .accessRefused {
            return (.refused, "\(error)")
        } catch {
            // 404/405 and the like: the permission check passed, the resource said no.
            return (.allowed, "\(error)")
        }
    }
}
