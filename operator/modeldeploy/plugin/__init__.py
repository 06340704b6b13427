"""`kubectl modeldeploy`: one ModelDeployment as a person reads it (`get`, `--watch`), and the
decisions of modeldeploy.gitops as kubectl subcommands."""
