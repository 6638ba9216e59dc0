import ArgumentParser
import Foundation

/// Entry points for executables that are not an `@main` command: the role executables and the
/// multi-call binaries (`fanfic`, `fanfic-core`), which are a role when called by its name.
public enum CommandEntry {
    /// The name the binary was called by (`coordinator` through a link of that name).
    public static var invokedName: String {
        CommandLine.arguments.first.map { URL(fileURLWithPath: $0).lastPathComponent } ?? "fanfic"
    }

    /// Parses the command line as `Command` and runs it, asynchronously. (`Command.main()` from
    /// top-level code resolves to ParsableCommand's synchronous `main`, which refuses an
    /// asynchronous command.)
    public static func run<Command: AsyncParsableCommand>(_: Command.Type) async {
        do {
            var command = try Command.parseAsRoot()
            if var asynchronous = command as? any AsyncParsableCommand {
                try await asynchronous.run()
            } else {
                try command.run()
            }
        } catch {
            Command.exit(withError: error)
        }
    }
}
