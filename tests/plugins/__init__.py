"""A task and an evaluation suite that live only under tests/: they register through entry points (the groups
`harness.tasks` and `harness.suites`), as a user's own package would, with no edit to the harness."""
