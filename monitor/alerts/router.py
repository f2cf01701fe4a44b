"""Turns incident changes into notifications and hands them to the sinks.

Every raised incident is announced once, and only an announced incident gets a resolved
message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from monitor.alerts.message import firing_text, resolved_text
from monitor.incidents import Changes, Incident, Key


@dataclass(frozen=True, slots=True)
class Notification:
    kind: str  # firing, resolved, reminder
    incident: Incident
    t: float
    cycle: int
    text: str


class Sink(Protocol):
    name: str

    async def send(self, notification: Notification) -> None:
        """Deliver one notification (or queue it for delivery)."""


class RecordingSink:
    """Keeps what would have been sent: replay's and the tests' sink."""

    def __init__(self, name: str = "slack") -> None:
        self.name = name
        self.sent: list[Notification] = []

    async def send(self, notification: Notification) -> None:
        self.sent.append(notification)


class AlertRouter:
    """Decides which incident changes become notifications, and sends them."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = list(sinks)
        self.announced: set[Key] = set()

    async def route(self, changes: Changes, t: float, cycle: int) -> list[Notification]:
        """Notify for this cycle's changes; return what was sent."""
        out: list[Notification] = []
        for incident in changes.raised:
            self.announced.add(incident.key)
            out.append(Notification("firing", incident, t, cycle, firing_text(incident.diagnosis)))
        for incident in changes.resolved:
            if incident.key not in self.announced:
                continue
            self.announced.discard(incident.key)
            text = resolved_text(incident.diagnosis, t - incident.since)
            out.append(Notification("resolved", incident, t, cycle, text))
        for notification in out:
            for sink in self.sinks:
                await sink.send(notification)
        return out


class LogSink:
    """Writes each notification to the log: what `run` does when no other sink is set."""

    name = "log"

    def __init__(self) -> None:
        self._log = structlog.get_logger("monitor.alerts")

    async def send(self, notification: Notification) -> None:
        d = notification.incident.diagnosis
        self._log.info("alert", kind=notification.kind, code=d.code, severity=d.severity,
                       endpoint_id=d.endpoint_id, text=notification.text)
