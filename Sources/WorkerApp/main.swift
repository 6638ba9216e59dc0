import WorkerRole

await WorkerCommand.main()
