import AMQP
import AppSupport
import ArgumentParser
import FanficBroker
import FanficCore
import Foundation

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
        /// Sites no worker contacts after a block (or being tried again), from the active coordinator.
        var pausedSites: [PausedSite] = []
        var retry: [Tier]
        var ingress: Int?
        var failed: Int?

        enum CodingKeys: String, CodingKey {
            case broker, active, coordinators, workers, backlogs, retry, ingress, failed
            case checkedAt = "checked_at"
            case pausedSites = "paused_sites"
        }
    }

    func run() async throws {
        Bootstrap.logging(options)
        let configuration = try Bootstrap.configuration(options)
        let url = Redaction.url(configuration.broker.url)
        var report = Report(
            checkedAt: Date(), broker: .init(url: url, reachable: false), coordinators: [], workers: [],
            backlogs: [:], retry: [])

        let broker: CLIBroker
        do {
            broker = try await CLIBroker.connect(configuration, timeout: 5)
        } catch {
            report.broker.error = "\(error)"
            emit(report)
            throw ExitCode.failure
        }
        report.broker.reachable = true
        do {
            let bus = broker.bus
            report.coordinators = try await StatusExchange.ask(bus, wait: .milliseconds(Int(wait * 1000)))
            let active = report.coordinators.first { $0.role == .active }
            report.active = active?.name
            report.pausedSites = active?.pausedSites ?? []

            for worker in active?.workers ?? [] {
                let queued = try await bus.queueState(FanficTopology.workerQueue(id: worker.id))
                report.workers.append(.init(status: worker, queued: queued.map { Int($0.messageCount) }))
            }
            for site in active?.sites ?? [] {
                if let state = try await bus.queueState(FanficTopology.backlogQueue(site: site)),
                    state.messageCount > 0
                {
                    report.backlogs[site] = Int(state.messageCount)
                }
            }
            for tier in configuration.retry.ladder.tiers {
                let queue = FanficTopology.retryQueue(tier)
                let state = try await bus.queueState(queue)
                report.retry.append(
                    .init(queue: queue, delaySeconds: tier.delaySeconds, depth: state.map { Int($0.messageCount) }))
            }
            report.ingress = try await bus.queueState(FanficTopology.ingress).map { Int($0.messageCount) }
            report.failed = try await bus.queueState(FanficTopology.failed).map { Int($0.messageCount) }
        } catch {
            await broker.close()
            throw error
        }
        await broker.close()

        emit(report)
        if report.active == nil { throw ExitCode.failure }
    }

    private func emit(_ report: Report) {
        if json {
            var data = WireCodec.encodeValue(report)
            data.append(0x0A)
            FileHandle.standardOutput.write(data)
        } else {
            FileHandle.standardOutput.write(Data(StatusText.render(report, wait: wait).utf8))
        }
    }
}
