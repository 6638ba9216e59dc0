import AppSupport
import ArgumentParser
import ServiceLifecycle

@main
struct CoordinatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinator",
        abstract: "Routes each site's tasks to one worker at a time.",
        discussion: "Connects to the broker, declares the topology and runs until SIGTERM or SIGINT."
    )

    @OptionGroup var options: CommonOptions

    func run() async throws {
        try await RoleRunner.run(role: "coordinator", options: options) { _, _, logger in
            logger.info("ready; this role's processing is not built yet, waiting for shutdown")
            try await gracefulShutdown()
        }
    }
}
