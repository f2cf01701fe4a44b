"""The incident history: each incident from raised to resolved, kept for the retention window.

The tracker (monitor/state/incidents.py) forgets an incident once it resolves; this keeps a short
record of it (what, where, when raised, when its severity rose, when it ended) so the status
page can show what came and went. Bounded by time (`retention_s`) and count (`cap`); the
store persists the records a cycle changed, in the same transaction as the cycle.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any

from monitor.state.incidents import Changes, Incident, Key
from rules.diagnosis import SEVERITY_ORDER

# At most this many records are kept, the newest by `since`: a fleet of flapping
# endpoints cannot grow the history (or the SQLite table) without bound.
MAX_EPISODES = 2000


@dataclass(frozen=True, slots=True)
class Episode:
    """One incident's life: raised at `since`, escalated when its severity first reached
    `severity` (None when it never rose), ended at `ended_at` (None while active)."""

    code: str
    endpoint_id: str | None
    endpoint_name: str | None
    summary: str
    first_severity: str
    severity: str  # the highest it reached
    since: float
    raised_cycle: int
    escalated_at: float | None = None
    ended_at: float | None = None
    ended_cycle: int | None = None

    @property
    def key(self) -> Key:
        return (self.code, self.endpoint_id)

    @property
    def active(self) -> bool:
        return self.ended_at is None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Episode:
        return cls(**data)

    @classmethod
    def opened(cls, incident: Incident) -> Episode:
        d = incident.diagnosis
        return cls(
            code=d.code, endpoint_id=d.endpoint_id, endpoint_name=d.endpoint_name,
            summary=d.summary, first_severity=d.severity, severity=d.severity,
            since=incident.since, raised_cycle=incident.raised_cycle,
        )


class EpisodeLog:
    """The episodes of the last `retention_s` seconds: the active ones and the ended ones."""

    def __init__(self, retention_s: float, cap: int = MAX_EPISODES) -> None:
        self.retention_s = retention_s
        self.cap = cap
        self._open: dict[Key, Episode] = {}
        self._ended: list[Episode] = []  # in the order they ended

    def restore(self, episodes: Iterable[Episode]) -> None:
        """Load persisted episodes (any order), e.g. after a restart."""
        self._open, self._ended = {}, []
        for e in sorted(episodes, key=lambda e: (e.ended_at or 0.0, e.since)):
            if e.active:
                self._open[e.key] = e
            else:
                self._ended.append(e)

    def update(self, changes: Changes, t: float, cycle: int) -> list[Episode]:
        """Apply one cycle's changes at time `t`; return the episodes that changed."""
        changed: list[Episode] = []
        active = {i.key for i in (*changes.raised, *changes.held)}
        for incident in (*changes.raised, *changes.held):
            e = self._open.get(incident.key)
            if e is None or e.since != incident.since:
                # raised, or active before this log existed (a file from an older version)
                e = Episode.opened(incident)
            elif SEVERITY_ORDER[incident.diagnosis.severity] > SEVERITY_ORDER[e.severity]:
                d = incident.diagnosis
                e = replace(e, severity=d.severity, escalated_at=t, summary=d.summary,
                            endpoint_name=d.endpoint_name or e.endpoint_name)
            else:
                continue
            self._open[incident.key] = e
            changed.append(e)
        for incident in changes.resolved:
            e = self._open.pop(incident.key, None) or Episode.opened(incident)
            ended_at = incident.resolved_at if incident.resolved_at is not None else t
            e = replace(e, ended_at=ended_at, ended_cycle=incident.resolved_cycle or cycle)
            self._ended.append(e)
            changed.append(e)
        # an episode the tracker no longer holds, and did not resolve (it cannot happen
        # within one process; a state file edited or mixed between versions could) ends now
        for key in [k for k in self._open if k not in active]:
            e = replace(self._open.pop(key), ended_at=t, ended_cycle=cycle)
            self._ended.append(e)
            changed.append(e)
        self.prune(t - self.retention_s)
        return changed

    def prune(self, horizon: float) -> None:
        """Forget the episodes that ended before `horizon`, and past the cap those that ended
        first."""
        self._ended = [e for e in self._ended if e.ended_at is None or e.ended_at >= horizon]
        excess = len(self._ended) + len(self._open) - self.cap
        if excess > 0:
            self._ended = self._ended[min(excess, len(self._ended)):]

    def episodes(self) -> list[Episode]:
        """Every kept episode, the newest raised first."""
        return sorted([*self._open.values(), *self._ended], key=lambda e: -e.since)
