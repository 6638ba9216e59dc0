import ArgumentParser
import Foundation

/// `fanfic`: the CLI's subcommands.
public struct FanficCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "fanfic",
        abstract: "AutomatedFanfic: every story URL you send ends up as a current EPUB in Calibre.",
        subcommands: [
            RunCommand.self, SubmitCommand.self, StatusCommand.self, FailedCommand.self, ConfigCommand.self,
            TopologyCommand.self, SweepCommand.self,
        ]
    )

    public init() {}
}
