import RoleCommands

await WorkerCommand.main()
