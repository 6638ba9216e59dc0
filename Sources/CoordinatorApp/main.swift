import RoleCommands

await CoordinatorCommand.main()
