import AppSupport
import CoordinatorRole

await CommandEntry.run(CoordinatorCommand.self)
