"""Turns incident changes into notifications: what to say, to which sink, and when.

Driven by the time `t` it is handed (simulated in replay, the wall clock in the daemon); it
never reads a clock. For the message sinks (Slack, the log):

- group_wait (default 30 s): a new incident waits before it is announced; one that
  resolves within the wait sends nothing. The incidents of one endpoint (or of the
  account) that are waiting when the first one's wait is over go out in one message.
- Every announced incident gets exactly one resolved message; nothing that was not
  announced ever gets one. A symptom that ends because its cause took over says so.
- repeat_interval (default 4 h): a reminder while an announced incident stays active,
  the n-th at since + n·repeat_interval; reminders of one endpoint due together go
  out together.
- Inhibition: `auth_invalid` mutes everything else; `balance_exhausted` mutes the other
  diagnoses of its endpoint. Silences (config and API) mute by code and/or endpoint until
  they expire. A muted incident is neither announced nor reminded; when the mute ends and
  it is still active, it is announced then.
- min_severity per sink.
- Escalation: an announced incident whose severity rises (warning to critical) is
  announced again, at once.

State that survives a restart: the announced keys (saved with each cycle by the Store);
what waits in group_wait is recomputed from the active incidents (active and not
announced) and their `since`; reminders are numbered from `since`, and their outbox
dedupe keys make a re-decided reminder a no-op.

State sinks (Alertmanager) get the whole active, unmuted set every cycle instead, and a
resolved notification for each incident that ends; Alertmanager does its own grouping.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence

import structlog

from monitor.alerts.message import message_text
from monitor.alerts.model import (
    SEVERITY_RANK,
    DeliveryError,
    Message,
    Notification,
    Sink,
    severe_enough,
)
from monitor.alerts.outbox import MemoryOutboxStore, Outbox
from monitor.alerts.silences import SilenceBook
from monitor.state.incidents import Changes, Incident, Key
from rules.inhibit import muted_by

__all__ = [
    "AlertRouter",
    "DeliveryError",
    "LogSink",
    "Message",
    "Notification",
    "RecordingSink",
    "Sink",
]


class RecordingSink(Sink):
    """Keeps what would have been sent: replay's and the tests' sink."""

    mode = "messages"

    def __init__(self, name: str = "slack", min_severity: str = "info") -> None:
        self.name = name
        self.min_severity = min_severity
        self.sent: list[Notification] = []
        self.messages: list[Message] = []

    async def send(self, message: Message) -> None:
        self.messages.append(message)
        self.sent.extend(message.notifications)


class LogSink(Sink):
    """Writes each message to the log: what `run` does when no other sink is set."""

    name = "log"
    mode = "messages"

    def __init__(self, min_severity: str = "info") -> None:
        self.min_severity = min_severity
        self._log = structlog.get_logger("monitor.alerts")

    async def send(self, message: Message) -> None:
        for n in message.notifications:
            d = n.incident.diagnosis
            self._log.info("alert", kind=n.kind, code=d.code, severity=d.severity,
                           endpoint_id=d.endpoint_id, batch=n.batch, t=n.t, text=n.text)


def inhibitors(active: Iterable[Incident]) -> dict[Key, str]:
    """Which active incidents a cause mutes, and the cause (rules/inhibit.py's table:
    auth_invalid mutes everything else, balance_exhausted its endpoint's other codes)."""
    active = list(active)
    keys = {i.key for i in active}
    return {i.key: cause for i in active if (cause := muted_by(i.key, keys)) is not None}


class AlertRouter:
    """Decides which incident changes become notifications and queues them in the outbox.

    `route` decides and queues; `outbox.deliver(now)` sends (the daemon in a background
    loop, replay right after each cycle).
    """

    def __init__(
        self,
        sinks: Sequence[Sink] = (),
        *,
        outbox: Outbox | None = None,
        group_wait_s: float = 30.0,
        repeat_interval_s: float = 14400.0,
        silences: SilenceBook | None = None,
    ) -> None:
        if outbox is not None and sinks:
            raise ValueError("give the sinks to the Outbox, not to the router too")
        self.outbox = outbox if outbox is not None else Outbox(MemoryOutboxStore(), sinks)
        self.group_wait_s = group_wait_s
        self.repeat_interval_s = repeat_interval_s
        self.silences = silences if silences is not None else SilenceBook()
        self.announced: set[Key] = set()
        self._reminded: dict[Key, int] = {}
        self._severity: dict[Key, str] = {}  # the severity each announced incident last had

    @property
    def sinks(self) -> list[Sink]:
        return list(self.outbox.sinks.values())

    def snapshot(self) -> frozenset[Key]:
        """The announced keys, to persist (what group_wait and reminders rebuild from)."""
        return frozenset(self.announced)

    def restore(self, announced: Iterable[Key]) -> None:
        """Take the announced keys saved before a restart."""
        self.announced = set(announced)
        self._reminded.clear()
        self._severity.clear()

    def muted_by(self, incident: Incident, t: float, inhibited: dict[Key, str]) -> str | None:
        """Why `incident` is muted at `t` ('inhibited by X', 'silenced'), or None."""
        cause = inhibited.get(incident.key)
        if cause is not None:
            return f"inhibited by {cause}"
        if self.silences.silencing(incident.key, t) is not None:
            return "silenced"
        return None

    async def route(self, changes: Changes, t: float, cycle: int) -> list[Notification]:
        """Decide this cycle's notifications and queue them; return the newly queued ones."""
        active = {i.key: i for i in (*changes.raised, *changes.held)}
        inhibited = inhibitors(active.values())
        messages = [s for s in self.sinks if s.mode == "messages"]
        out: list[Notification] = []

        # resolved: for every announced incident, and only those
        ended: dict[str | None, list[Incident]] = defaultdict(list)
        for incident in changes.resolved:
            if incident.key in self.announced:
                self.announced.discard(incident.key)
                self._reminded.pop(incident.key, None)
                self._severity.pop(incident.key, None)
                ended[incident.key[1]].append(incident)
        # a key can leave the active set only through `resolved`; drop any stale one
        self.announced &= set(active)
        for eid, incidents in ended.items():
            notes = {i.key: _cause(i, active) for i in incidents}
            for sink in messages:
                out += self._queue(sink, "resolved", eid, incidents, t, cycle, notes=notes)

        # firing: a group of waiting incidents goes out once its oldest has waited
        waiting: dict[str | None, list[Incident]] = defaultdict(list)
        for incident in active.values():
            if incident.key in self.announced or self.muted_by(incident, t, inhibited):
                continue
            if any(severe_enough(incident.diagnosis.severity, s.min_severity) for s in messages):
                waiting[incident.key[1]].append(incident)
        announced_now: set[Key] = set()
        for eid, incidents in waiting.items():
            if t < min(i.since for i in incidents) + self.group_wait_s:
                continue
            incidents.sort(key=_order)
            for sink in messages:
                chosen = [i for i in incidents
                          if severe_enough(i.diagnosis.severity, sink.min_severity)]
                out += self._queue(sink, "firing", eid, chosen, t, cycle)
            for incident in incidents:
                self.announced.add(incident.key)
                announced_now.add(incident.key)
                self._severity[incident.key] = incident.diagnosis.severity
                self._reminded[incident.key] = self._reminder_no(incident, t)

        # escalation: an announced incident whose severity rose (warning -> critical) is
        # announced again at once; its `n` is minus the new rank, so the outbox key differs
        # from the first announcement and from every reminder (numbered from 0)
        rose: dict[str | None, list[Incident]] = defaultdict(list)
        for key in sorted(self.announced - announced_now, key=lambda k: (k[1] or "", k[0])):
            incident = active[key]
            severity = incident.diagnosis.severity
            was = self._severity.setdefault(key, severity)  # after a restart: as it is now
            self._severity[key] = severity
            if SEVERITY_RANK[severity] > SEVERITY_RANK[was] and not self.muted_by(
                incident, t, inhibited
            ):
                rose[key[1]].append(incident)
        for eid, incidents in rose.items():
            for sink in messages:
                chosen = [i for i in incidents
                          if severe_enough(i.diagnosis.severity, sink.min_severity)]
                out += self._queue(sink, "firing", eid, chosen, t, cycle, numbers={
                    i.key: -SEVERITY_RANK[i.diagnosis.severity] for i in chosen
                })

        # reminders, numbered from `since`
        due: dict[str | None, list[tuple[Incident, int]]] = defaultdict(list)
        for key in sorted(self.announced - announced_now, key=lambda k: (k[1] or "", k[0])):
            incident = active[key]
            n = self._reminder_no(incident, t)
            last = self._reminded.get(key)
            if last is None:  # after a restart: re-decide the latest; the outbox dedupes
                last = max(0, n - 1)
            self._reminded[key] = n
            if n > last and not self.muted_by(incident, t, inhibited):
                due[key[1]].append((incident, n))
        for eid, pairs in due.items():
            pairs.sort(key=lambda p: _order(p[0]))
            for sink in messages:
                picked = [p for p in pairs
                          if severe_enough(p[0].diagnosis.severity, sink.min_severity)]
                out += self._queue(sink, "reminder", eid, [p[0] for p in picked], t, cycle,
                                   numbers={p[0].key: p[1] for p in picked})

        # state sinks: the whole active, unmuted set
        unmuted = [i for i in active.values() if not self.muted_by(i, t, inhibited)]
        for sink in self.sinks:
            if sink.mode != "state":
                continue
            for note in sink.observe(unmuted, changes.resolved, t, cycle):
                if self.outbox.enqueue(note, t):
                    out.append(note)
        return out

    def tell_again(self, incident: Incident, t: float, cycle: int, n: int) -> list[Notification]:
        """Queue a reminder of an announced, unmuted incident now, numbered `n` (negative
        past the escalations, so its outbox key is its own): a guarded fix proposed after
        the first announcement reaches the messages sinks this way."""
        if incident.key not in self.announced:
            return []
        if self.muted_by(incident, t, inhibitors([incident])) is not None:
            return []
        out: list[Notification] = []
        for sink in self.sinks:
            if sink.mode == "messages" and severe_enough(incident.diagnosis.severity,
                                                         sink.min_severity):
                out += self._queue(sink, "reminder", incident.key[1], [incident], t, cycle,
                                   numbers={incident.key: n})
        return out

    def _reminder_no(self, incident: Incident, t: float) -> int:
        return max(0, math.floor((t - incident.since) / self.repeat_interval_s))

    def _queue(
        self,
        sink: Sink,
        kind: str,
        eid: str | None,
        incidents: Sequence[Incident],
        t: float,
        cycle: int,
        *,
        notes: dict[Key, str | None] | None = None,
        numbers: dict[Key, int] | None = None,
    ) -> list[Notification]:
        """Queue one batch for `sink`; return the notifications that were new."""
        if not incidents:
            return []
        batch = f"{kind}:{eid or '-'}:{cycle}:{t!r}"
        queued = []
        for incident in incidents:
            n = Notification(
                kind, incident, t, cycle, sink=sink.name, batch=batch,
                n=(numbers or {}).get(incident.key, 0),
                note=(notes or {}).get(incident.key),
            )
            if self.outbox.enqueue(n, t):
                queued.append(n)
        text = message_text(kind, queued, t)
        return [
            Notification(n.kind, n.incident, n.t, n.cycle, text, n.sink, n.batch, n.n, n.note)
            for n in queued
        ]


def _order(incident: Incident) -> tuple[int, float, str]:
    rank = -SEVERITY_RANK.get(incident.diagnosis.severity, -1)  # most severe first
    return (rank, incident.since, incident.key[0])


def _cause(incident: Incident, active: dict[Key, Incident]) -> str | None:
    """The cause now active that explains why `incident` ended, if any."""
    return muted_by(incident.key, active.keys())
