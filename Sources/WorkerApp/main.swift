import AppSupport
import WorkerRole

await CommandEntry.run(WorkerCommand.self)
