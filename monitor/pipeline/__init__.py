"""The pipeline: one cycle from probes to sinks, and what it plans and budgets."""
