"""Diffs each cycle's diagnoses against the active ones: raised, held, resolved.

A diagnosis whose rule cannot see its data this cycle is held, never resolved: an API
outage does not end a crash loop. Causes suppress the symptoms they explain, and hold
them where the cause hides their data (rules/inhibit.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from model.observation import OK, Observation
from rules.catalog import CATALOG
from rules.diagnosis import SEVERITY_ORDER, Diagnosis
from rules.inhibit import holds, suppress

Key = tuple[str, str | None]


@dataclass(frozen=True, slots=True)
class Incident:
    """An active (or just resolved) diagnosis and when it started."""

    diagnosis: Diagnosis
    since: float
    raised_cycle: int
    resolved_at: float | None = None
    resolved_cycle: int | None = None

    @property
    def key(self) -> Key:
        return self.diagnosis.key


@dataclass(frozen=True, slots=True)
class Changes:
    """What one cycle changed: new incidents, ones still active, ones that ended; among the
    held, those whose severity rose (`escalated`)."""

    raised: list[Incident] = field(default_factory=list)
    held: list[Incident] = field(default_factory=list)
    resolved: list[Incident] = field(default_factory=list)
    escalated: list[Incident] = field(default_factory=list)


def data_unknown(code: str, endpoint_id: str | None, obs: Observation) -> bool:
    """True when the rule behind `code` could not see fresh data in `obs`."""
    source = CATALOG[code].source if code in CATALOG else "self"
    sample = obs.endpoints.get(endpoint_id) if endpoint_id is not None else None
    if source == "health":
        return sample is not None and sample.health is None and sample.health_outcome != "http_404"
    if source == "rest+graphql":
        rest_unknown = sample is not None and sample.health_outcome not in (OK, "http_404")
        return rest_unknown or not obs.control_ok
    if source == "graphql":
        return not obs.control_ok
    if source == "account":
        return obs.account is None
    if source == "v2":
        return sample is not None and sample.workers is None
    return False


class IncidentTracker:
    """Keeps the active incidents across cycles."""

    def __init__(self, active: Mapping[Key, Incident] | None = None) -> None:
        self.active: dict[Key, Incident] = dict(active or {})

    def snapshot(self) -> dict[Key, Incident]:
        """The active incidents, to persist (a copy)."""
        return dict(self.active)

    def restore(self, active: Mapping[Key, Incident]) -> None:
        """Take the active incidents saved before a restart."""
        self.active = dict(active)

    def update(self, obs: Observation, found: Iterable[Diagnosis]) -> Changes:
        """Apply one cycle's diagnoses; return what was raised, held and resolved."""
        current = {d.key: d for d in suppress(found)}
        changes = Changes()
        for key, diagnosis in current.items():
            incident = self.active.get(key)
            if incident is None:
                incident = Incident(diagnosis, since=obs.t, raised_cycle=obs.cycle)
                changes.raised.append(incident)
            else:
                was = incident.diagnosis.severity
                incident = replace(incident, diagnosis=diagnosis)
                changes.held.append(incident)
                if SEVERITY_ORDER[diagnosis.severity] > SEVERITY_ORDER[was]:
                    changes.escalated.append(incident)
            self.active[key] = incident
        for key in [k for k in self.active if k not in current]:
            incident = self.active[key]
            code, endpoint_id = key
            watched = endpoint_id is None or endpoint_id in obs.endpoints
            held = watched and (
                data_unknown(code, endpoint_id, obs) or holds(incident.diagnosis, current)
            )
            if held:
                changes.held.append(incident)
                continue
            del self.active[key]
            changes.resolved.append(replace(incident, resolved_at=obs.t, resolved_cycle=obs.cycle))
        return changes

    def incidents(self) -> list[Incident]:
        """The active incidents, most severe first, then oldest first."""
        return sorted(
            self.active.values(),
            key=lambda i: (
                -SEVERITY_ORDER[i.diagnosis.severity], i.since, i.key[0], i.key[1] or ""
            ),
        )

    def diagnoses(self) -> list[Diagnosis]:
        """The active diagnoses, most severe first."""
        return [i.diagnosis for i in self.incidents()]
