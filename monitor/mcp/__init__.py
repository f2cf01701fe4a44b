"""`runpod-monitor mcp`: the monitor's diagnoses, history and silences as Model Context
Protocol tools, for coding agents (stdio transport; see `monitor.mcp.server`)."""
