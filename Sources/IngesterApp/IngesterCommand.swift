import AppSupport
import ArgumentParser
import ServiceLifecycle

@main
struct IngesterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ingester",
        abstract: "Turns emails holding story URLs into tasks on the broker.",
        discussion: "Connects to the broker, declares the topology and runs until SIGTERM or SIGINT."
    )

    @OptionGroup var options: CommonOptions

    func run() async throws {
        try await RoleRunner.run(role: "ingester", options: options) { _, _, logger in
            logger.info("ready; this role's processing is not built yet, waiting for shutdown")
            try await gracefulShutdown()
        }
    }
}
