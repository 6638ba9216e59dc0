import AppSupport
import ArgumentParser
import Foundation
import RoleCommands

/// One binary for every role: called through a link named `coordinator`, `ingester` or
/// `worker` it is that role, else the `fanfic` CLI. The Docker images ship only this binary
/// (each static Swift executable carries its own copy of the runtime and Foundation's ICU data).
@main
enum FanficMain {
    static func main() async {
        switch CommandLine.arguments.first.map({ URL(fileURLWithPath: $0).lastPathComponent }) {
        case "coordinator": await CoordinatorCommand.main()
        case "ingester": await IngesterCommand.main()
        case "worker": await WorkerCommand.main()
        default: await FanficCommand.main()
        }
    }
}

struct FanficCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fanfic",
        abstract: "AutomatedFanfic: every story URL you send ends up as a current EPUB in Calibre.",
        subcommands: [
            RunCommand.self, SubmitCommand.self, StatusCommand.self, FailedCommand.self, ConfigCommand.self,
            TopologyCommand.self,
        ]
    )
}
