import AMQP
import AppSupport
import ArgumentParser
import FanficBroker
import Foundation
import Notifications
import StoryPipeline
import WorkerRuntime

@main
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Downloads stories with FanFicFare and puts them into Calibre, one task at a time.",
        discussion: """
            Says hello to the coordinator, consumes its own queue fanfic.worker.<id> once admitted, \
            and on SIGTERM or SIGINT finishes the task in hand before it exits.
            """
    )

    @OptionGroup var options: CommonOptions

    @Option(help: "This worker's id (default: worker.id from the config, else <host name>-<index>).")
    var id: String?

    @Option(help: "Index appended to the host name for the default id, when several workers share a host.")
    var index: Int = 1

    func run() async throws {
        let explicitID = id
        let index = index
        try await RoleRunner.run(role: "worker", options: options) { connection, configuration, logger in
            let workerID = explicitID ?? WorkerIdentity.resolve(configured: configuration.worker.id, index: index)
            var logger = logger
            logger[metadataKey: "worker"] = "\(workerID)"
            let events = EventPublisher(connection: connection, logger: logger)
            let pipeline = StoryPipeline(
                settings: StoryPipeline.Settings(configuration: configuration), connection: connection, events: events,
                notifier: AppriseNotifier(urls: configuration.notifications.appriseURLs, logger: logger), logger: logger
            )
            let session = WorkerSession(
                connection: connection, settings: WorkerSession.Settings(id: workerID, configuration: configuration),
                runner: pipeline, logger: logger)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { await events.run() }
                try await session.run()
                events.finish()
                try await group.waitForAll()
            }
        }
    }
}
