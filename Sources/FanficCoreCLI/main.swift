import CLICommands
import CoordinatorRole

// The core image's binary: the CLI, and the coordinator when called through a link of that
// name. Without the ingester's and worker's code it needs neither libcurl nor SQLite, which
// keeps the image small.
switch MultiCall.invokedName {
case "coordinator": await CoordinatorCommand.main()
default: await FanficCommand.main()
}
