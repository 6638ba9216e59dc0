import AppSupport
import ArgumentParser
import CoordinatorService

public struct CoordinatorCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "coordinator",
        abstract: "Routes each site's tasks to one worker at a time.",
        discussion: """
            Connects to the broker and becomes the active coordinator, or a standby while another \
            one is active (any number may run; one holds the lock). Runs until SIGTERM or SIGINT.
            """
    )

    @OptionGroup var options: CommonOptions

    public init() {}

    public func run() async throws {
        try await RoleRunner.run(role: "coordinator", options: options) { bus, configuration, logger in
            Coordinator.services(bus: bus, settings: Coordinator.Settings(configuration: configuration), logger: logger)
        }
    }
}
