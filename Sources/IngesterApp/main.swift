import AppSupport
import IngesterRole

await CommandEntry.run(IngesterCommand.self)
