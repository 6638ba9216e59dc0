import RoleCommands

await IngesterCommand.main()
