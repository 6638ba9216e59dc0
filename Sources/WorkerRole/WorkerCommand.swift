import AMQP
import AppSupport
import ArgumentParser
import CalibreLibrary
import FanficBroker
import Foundation
import Notifications
import ServiceLifecycle
import StoryPipeline
import Sweep
import WorkerRuntime

public struct WorkerCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Downloads stories with FanFicFare and puts them into Calibre, one task at a time.",
        discussion: """
            Says hello to the coordinator, consumes its own queue fanfic.worker.<id> once admitted, \
            and on SIGTERM or SIGINT finishes the task in hand before it exits.
            """
    )

    @OptionGroup var options: CommonOptions

    public init() {}

    @Option(help: "This worker's id (default: worker.id from the config, else <host name>-<index>).")
    var id: String?

    @Option(
        help:
            "Index appended to the host name for the default id, when several workers share a host (worker.slots picks it instead)."
    )
    var index: Int = 1

    public func validate() throws {
        if let id, let problem = WorkerIdentity.problem(with: id) {
            throw ValidationError("--id \(id.debugDescription) \(problem)")
        }
        if index < 1 { throw ValidationError("--index must be at least 1") }
    }

    public func run() async throws {
        let explicitID = id
        let index = index
        try await RoleRunner.run(role: "worker", options: options) { bus, configuration, logger in
            let problems = Preflight.problems(configuration)
            if !problems.isEmpty { throw CannotStart(problems) }
            var index = index
            if explicitID == nil, configuration.worker.id.isEmpty, !configuration.worker.slots.isEmpty {
                do {
                    let claim = try WorkerIdentity.SlotClaim(in: configuration.worker.slots)
                    // Held until the process exits: the number is this worker's for its lifetime.
                    _ = Unmanaged.passRetained(claim)
                    index = claim.number
                } catch {
                    throw CannotStart(["\(error)"])
                }
            }
            let workerID = explicitID ?? WorkerIdentity.resolve(configured: configuration.worker.id, index: index)
            var logger = logger
            logger[metadataKey: "worker"] = "\(workerID)"
            let events = EventPublisher(bus: bus, logger: logger)
            var settler = OutcomeSettler(
                bus: bus, ladder: configuration.retry.ladder, emit: { [events] in events.emit($0) },
                notifier: AppriseNotifier(urls: configuration.notifications.appriseURLs, logger: logger))
            settler.maxReasonLength = configuration.limits.maxReasonLength
            let session = WorkerSession(
                bus: bus, settings: WorkerSession.Settings(id: workerID, configuration: configuration),
                runner: StoryPipeline(configuration: configuration, bus: bus), settler: settler,
                emit: { [events] in events.emit($0) }, logger: logger)
            // The event publisher stops last: the events of the task in hand still go out.
            var services: [any Service] = [events, session]
            if configuration.sweep.interval > 0 {
                // Every worker offers to schedule sweeps (it has calibre to read the library); the
                // holder of fanfic.lock.sweep does, the others stand by (docs/sweeps.md).
                let calibre = configuration.calibre
                let catalog = LibraryCatalog(
                    location: CalibreLocation(calibre.library),
                    credentials: calibre.username.isEmpty
                        ? nil : CalibreCredentials(username: calibre.username, password: calibre.password))
                let search = configuration.sweep.search
                services.append(
                    SweepScheduler(bus: bus, settings: .init(sweep: configuration.sweep), logger: logger) {
                        try await catalog.books(matching: search)
                    })
            }
            return services
        }
    }
}
