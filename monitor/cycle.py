"""The pipeline: probe, remember, diagnose, diff, alert. One function for daemon and replay."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import structlog

from monitor.alerts.router import AlertRouter, Notification
from monitor.history import HistoryBuffer
from monitor.incidents import Changes, Incident, IncidentTracker
from monitor.probes import ProbeCall, Prober
from rules.engine import evaluate
from rules.model import SKIPPED, Diagnosis, EndpointConfig, Observation, Thresholds

log = structlog.get_logger("monitor.cycle")


@dataclass(frozen=True, slots=True)
class CycleResult:
    observation: Observation
    changes: Changes
    active: list[Diagnosis]
    notifications: list[Notification]
    calls: list[ProbeCall] = field(default_factory=list)
    listed: tuple[EndpointConfig, ...] | None = None
    duration_s: float = 0.0


@dataclass
class Pipeline:
    """Everything one cycle needs, kept between cycles."""

    prober: Prober
    thresholds: Thresholds
    history: HistoryBuffer
    tracker: IncidentTracker
    router: AlertRouter
    account_rules: bool = True  # only shard 0 raises account-scope diagnoses

    async def cycle(self, cycle: int, t: float) -> CycleResult:
        """Run one probe cycle at time `t` (unix seconds; simulated in replay)."""
        started = time.perf_counter()
        report = await self.prober.probe(cycle, t)
        self.history.append(report.observation)
        found = evaluate(self.history.view(), self.thresholds)
        if not self.account_rules:
            found = [d for d in found if d.scope != "account"]
        changes = self.tracker.update(report.observation, found)
        notifications = await self.router.route(changes, t, cycle)
        duration = time.perf_counter() - started
        failures = [c for c in report.calls if c.outcome != "ok"]
        obs = report.observation
        # probes the back-off or a Retry-After held back: not sent, so not failures
        skipped = (obs.graphql_outcome == SKIPPED) + sum(
            s.health_outcome == SKIPPED for s in obs.endpoints.values()
        )
        log.info(
            "cycle",
            cycle=cycle,
            t=t,
            endpoints=len(report.observation.endpoints),
            calls=len(report.calls),
            failures=len(failures),
            skipped=skipped,
            raised=_codes(changes.raised),
            resolved=_codes(changes.resolved),
            active=len(self.tracker.active),
            duration_s=round(duration, 4),
        )
        _log_incidents(changes, cycle, t)
        return CycleResult(
            report.observation,
            changes,
            self.tracker.diagnoses(),
            notifications,
            report.calls,
            report.listed,
            duration,
        )


def _codes(incidents: list[Incident]) -> list[str]:
    """The codes of `incidents` in first-seen order, 'code x N' for a code N share: a field
    as short at 1,000 endpoints as at one (the `incident` events name each)."""
    counts: dict[str, int] = {}
    for inc in incidents:
        counts[inc.key[0]] = counts.get(inc.key[0], 0) + 1
    return [code if n == 1 else f"{code} x{n}" for code, n in counts.items()]


def _log_incidents(changes: Changes, cycle: int, t: float) -> None:
    """One `incident` event per raised, escalated or resolved incident: short fields (the
    console draws the Diagnosis it carries as a block; the JSON log drops it)."""
    for change, incidents in (
        ("raised", changes.raised), ("escalated", changes.escalated),
        ("resolved", changes.resolved),
    ):
        for inc in incidents:
            d = inc.diagnosis
            lasted = None if inc.resolved_at is None else round(inc.resolved_at - inc.since, 1)
            log.info("incident", change=change, code=d.code, severity=d.severity,
                     endpoint_id=d.endpoint_id, cycle=cycle, t=t, since=inc.since,
                     lasted_s=lasted, diagnosis=d)
