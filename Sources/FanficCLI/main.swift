import CLICommands
import CoordinatorRole
import IngesterRole
import WorkerRole

// Every role in one binary: called through a link named `coordinator`, `ingester` or `worker`
// it is that role, else the `fanfic` CLI. The ingester and worker images ship only this binary
// (each static Swift executable carries its own runtime and Foundation's ICU data, ~58 MB).
switch MultiCall.invokedName {
case "coordinator": await CoordinatorCommand.main()
case "ingester": await IngesterCommand.main()
case "worker": await WorkerCommand.main()
default: await FanficCommand.main()
}
