import AppSupport
import ArgumentParser
import FanficCore

struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Check or print the configuration.",
        subcommands: [Check.self, Show.self]
    )

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate config.toml and the FANFIC_* environment; exit 78 with every problem if invalid.")

        @OptionGroup var options: CommonOptions

        func run() async throws {
            let configuration = try Bootstrap.configuration(options)
            _ = try Bootstrap.broker(configuration, role: "cli")
            print("configuration is valid (\(options.config ?? ConfigurationLoader.defaultPath))")
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the effective configuration (file + environment + defaults), secrets masked.")

        @OptionGroup var options: CommonOptions

        func run() async throws {
            print(try Bootstrap.configuration(options).redactedTOML, terminator: "")
        }
    }
}
