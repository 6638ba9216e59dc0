import AppSupport
import CLICommands
import CoordinatorRole

// The core image's binary: the CLI, and the coordinator when called through a link of that
// name. Without the ingester's and worker's code it needs neither libcurl nor SQLite, which
// keeps the image small.
switch CommandEntry.invokedName {
case "coordinator": await CommandEntry.run(CoordinatorCommand.self)
default: await CommandEntry.run(FanficCommand.self)
}
