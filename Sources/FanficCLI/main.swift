import AppSupport
import CLICommands
import CoordinatorRole
import DashboardRole
import IngesterRole
import WorkerRole

// Every role in one binary: called through a link named `coordinator`, `dashboard`, `ingester` or
// `worker` it is that role, else the `fanfic` CLI. The ingester and worker images ship only this binary
// (each static Swift executable carries its own runtime and Foundation's ICU data, ~58 MB).
switch CommandEntry.invokedName {
case "coordinator": await CommandEntry.run(CoordinatorCommand.self)
case "dashboard": await CommandEntry.run(DashboardCommand.self)
case "ingester": await CommandEntry.run(IngesterCommand.self)
case "worker": await CommandEntry.run(WorkerCommand.self)
default: await CommandEntry.run(FanficCommand.self)
}
