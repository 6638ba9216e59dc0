import IngesterRole

await IngesterCommand.main()
