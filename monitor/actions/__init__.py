"""Guarded fixes, opt-in (docs/actions.md): proposals derived from incidents, approved
through the API or by `auto`, checked against a fresh read before each write, audited.

`model` and `policy` are pure; `engine` keeps the book and does the I/O through a `Port`
(`runpod_port.RunPodPort` over the RunPod client)."""

from monitor.actions.engine import ActionEngine, Port
from monitor.actions.model import KINDS, AuditEntry, Call, Proposal

__all__ = ["KINDS", "ActionEngine", "AuditEntry", "Call", "Port", "Proposal"]
