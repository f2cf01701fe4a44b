"""The command line: one module per verb, and the daemon it starts."""
