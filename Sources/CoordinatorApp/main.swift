import CoordinatorRole

await CoordinatorCommand.main()
