import AppSupport
import DashboardRole

await CommandEntry.run(DashboardCommand.self)
