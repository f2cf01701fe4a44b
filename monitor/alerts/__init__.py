"""Alerting: the router that decides what to send, message formatting, and sinks."""
