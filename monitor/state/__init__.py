"""What the monitor keeps between cycles: incidents, episodes, the SQLite store."""
