import AMQP
import AppSupport
import ArgumentParser
import FanficBroker
import FanficCore
import Foundation
import Synchronization

/// `fanfic status`: the broker, the coordinators, each worker, and the depth of every queue
/// that holds tasks. Coordinators answer a request on the `fanfic.status` fanout exchange;
/// the depths are read from the broker directly.
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the broker, the coordinators, the workers and the queues.",
        discussion: """
            Exits 0 when an active coordinator answered, 1 when the broker can't be reached or no \
            active coordinator answered (what could be read is printed anyway).
            """
    )

    @OptionGroup var options: CommonOptions

    @Flag(help: "Print JSON for scripts.")
    var json = false

    @Option(help: "Seconds to wait for an active coordinator's answer.")
    var wait: Double = 2

    func validate() throws {
        guard wait > 0, wait <= 60 else { throw ValidationError("--wait must be between 0 and 60 seconds") }
    }

    /// The whole answer, as `--json` prints it.
    struct Report: Encodable {
        struct Broker: Encodable {
            var url: String
            var reachable: Bool
            var error: String?
        }
        struct Worker: Encodable {
            var status: WorkerStatus
            /// Tasks waiting in `fanfic.worker.<id>` (not counting the one it runs).
            var queued: Int?

            func encode(to encoder: any Encoder) throws {
                try status.encode(to: encoder)
                var container = encoder.container(keyedBy: CodingKeys.self)
                try container.encodeIfPresent(queued, forKey: .queued)
            }
            enum CodingKeys: String, CodingKey { case queued }
        }
        struct Tier: Encodable {
            var queue: String
            var delaySeconds: Int
            var depth: Int?
            enum CodingKeys: String, CodingKey {
                case queue, depth
                case delaySeconds = "delay_s"
            }
        }

        var checkedAt: Date
        var broker: Broker
        /// The name of the active coordinator, nil when none answered.
        var active: String?
        var coordinators: [CoordinatorStatus]
        var workers: [Worker]
        var backlogs: [String: Int]
        var retry: [Tier]
        var ingress: Int?
        var failed: Int?

        enum CodingKeys: String, CodingKey {
            case broker, active, coordinators, workers, backlogs, retry, ingress, failed
            case checkedAt = "checked_at"
        }
    }

    func run() async throws {
        Bootstrap.logging(options)
        let configuration = try Bootstrap.configuration(options)
        let url = Redaction.url(configuration.broker.url)
        var report = Report(
            checkedAt: Date(), broker: .init(url: url, reachable: false), coordinators: [], workers: [],
            backlogs: [:], retry: [])

        let connection: AMQPConnection
        do {
            connection = try await CLIBroker.connect(configuration, timeout: 5)
        } catch {
            report.broker.error = "\(error)"
            emit(report)
            throw ExitCode.failure
        }
        report.broker.reachable = true
        defer { Task { await connection.close() } }

        report.coordinators = try await askCoordinators(connection)
        let active = report.coordinators.first { $0.role == .active }
        report.active = active?.name

        for worker in active?.workers ?? [] {
            let queued = try await connection.queueState(FanficTopology.workerQueue(id: worker.id))
            report.workers.append(.init(status: worker, queued: queued.map { Int($0.messageCount) }))
        }
        for site in active?.sites ?? [] {
            if let state = try await connection.queueState(FanficTopology.backlogQueue(site: site)),
                state.messageCount > 0
            {
                report.backlogs[site] = Int(state.messageCount)
            }
        }
        for tier in configuration.retry.ladder.tiers {
            let queue = FanficTopology.retryQueue(tier)
            let state = try await connection.queueState(queue)
            report.retry.append(
                .init(queue: queue, delaySeconds: tier.delaySeconds, depth: state.map { Int($0.messageCount) }))
        }
        report.ingress = try await connection.queueState(FanficTopology.ingress).map { Int($0.messageCount) }
        report.failed = try await connection.queueState(FanficTopology.failed).map { Int($0.messageCount) }
        await connection.close()

        emit(report)
        if active == nil { throw ExitCode.failure }
    }

    /// Publishes one request to every coordinator and collects the answers for `wait` seconds.
    private func askCoordinators(_ connection: AMQPConnection) async throws -> [CoordinatorStatus] {
        let replyQueue = FanficTopology.statusReplyQueue()
        try await connection.declare(
            AMQPTopology(queues: [QueueSpec(name: replyQueue, durable: false, exclusive: true, autoDelete: true)]),
            remember: false)
        let answers = connection.consume(queue: replyQueue, prefetch: 50)
        var properties = AMQPMessageProperties(contentType: "application/json", deliveryMode: 1)
        properties.replyTo = replyQueue
        properties.expiration = "\(Int(wait * 1000))"
        try await connection.publish(
            Data(#"{"type":"status","version":\#(TaskMessage.currentVersion)}"#.utf8),
            exchange: FanficTopology.status, routingKey: "", properties: properties)

        // Every coordinator answers at once. Once the active one has, standbys get a short
        // grace; the whole window is only waited out when no active coordinator answers.
        let found = Answers()
        let collector = Task {
            for try await answer in answers {
                try? await answer.ack()
                if let status = try? TaskCodec.decodeStatus(answer.body) { found.add(status) }
            }
        }
        let deadline = ContinuousClock.now + .milliseconds(Int(wait * 1000))
        var activeSeenAt: ContinuousClock.Instant?
        while ContinuousClock.now < deadline {
            if activeSeenAt == nil, found.all.contains(where: { $0.role == .active }) { activeSeenAt = .now }
            if let activeSeenAt, ContinuousClock.now - activeSeenAt > .milliseconds(300) { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        collector.cancel()
        _ = await collector.result
        return found.all.sorted { ($0.role == .active ? 0 : 1, $0.name) < ($1.role == .active ? 0 : 1, $1.name) }
    }

    private final class Answers: Sendable {
        private let list = Mutex<[CoordinatorStatus]>([])
        func add(_ status: CoordinatorStatus) { list.withLock { $0.append(status) } }
        var all: [CoordinatorStatus] { list.withLock { $0 } }
    }

    private func emit(_ report: Report) {
        if json {
            var data = TaskCodec.encodeValue(report)
            data.append(0x0A)
            FileHandle.standardOutput.write(data)
        } else {
            FileHandle.standardOutput.write(Data(StatusText.render(report, wait: wait).utf8))
        }
    }
}
