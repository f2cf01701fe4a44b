"""The rules engine: pure functions from a history of observations to diagnoses."""
