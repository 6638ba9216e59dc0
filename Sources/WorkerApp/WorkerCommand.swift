import AppSupport
import ArgumentParser
import ServiceLifecycle

@main
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Downloads stories with FanFicFare into Calibre, one task at a time.",
        discussion: "Connects to the broker, declares the topology and runs until SIGTERM or SIGINT."
    )

    @OptionGroup var options: CommonOptions

    func run() async throws {
        try await RoleRunner.run(role: "worker", options: options) { _, _, logger in
            logger.info("ready; this role's processing is not built yet, waiting for shutdown")
            try await gracefulShutdown()
        }
    }
}
