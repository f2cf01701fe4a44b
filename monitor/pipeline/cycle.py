"""The pipeline: one probe cycle, from the probes to the state on disk. One builder
(`build_pipeline`) for the daemon, `check`, `replay`, `demo` and the tests.

    probe     GraphQL, /health and /requests per watched endpoint, /status per tracked job
    observe   -> Observation (immutable; tracked jobs included)
    history   -> HistoryBuffer (window + memory)
    rules     -> [Diagnosis] (pure; account-scope ones on shard 0 only)
    incidents -> raised / held / resolved
    actions   -> guarded fixes proposed, approved ones read again and run (monitor/actions;
                 all off by default); the open proposals' lines go into the alerts
    route     -> notifications queued in the outbox (delivery runs apart: a slow Slack
                 never delays a probe)
    metrics   -> MonitorMetrics (jobs tracked through /status, then the cycle's facts)
    persist   -> Store.save_cycle + prune (when the pipeline has a store)
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import structlog

from model.history import History
from model.observation import (
    SKIPPED,
    TERMINAL_JOB_STATUSES,
    EndpointConfig,
    Observation,
    WorkerLogs,
)
from monitor.actions import ActionEngine
from monitor.actions.runpod_port import RunPodPort
from monitor.alerts.model import Sink
from monitor.alerts.outbox import MemoryOutboxStore
from monitor.alerts.router import AlertRouter, Notification
from monitor.alerts.setup import build_router, build_sinks
from monitor.config import Settings
from monitor.metrics import CycleFacts, MonitorMetrics
from monitor.pipeline.budget import BudgetReading, Planner, V2Budget
from monitor.pipeline.control import ControlPlane, Hints
from monitor.pipeline.history import HistoryBuffer
from monitor.pipeline.jobs import JobTracker
from monitor.pipeline.probes import ProbeCall, Prober
from monitor.runpod.client import RunPodClient
from monitor.state.episodes import MAX_EPISODES, Episode, EpisodeLog
from monitor.state.incidents import Changes, Incident, IncidentTracker, Key
from monitor.state.store import PipelineState, Store
from rules.diagnosis import Diagnosis
from rules.engine import evaluate
from rules.log_evidence import by_endpoint, keep_logs, logs_wanted, read_workers
from rules.thresholds import Thresholds

log = structlog.get_logger("monitor.pipeline.cycle")

# sent notifications are kept at least this long, to dedupe a restart's re-decisions
OUTBOX_KEEP_S = 86400.0


@dataclass(frozen=True, slots=True)
class CycleResult:
    observation: Observation
    changes: Changes
    active: list[Diagnosis]
    notifications: list[Notification]
    calls: list[ProbeCall] = field(default_factory=list)
    listed: tuple[EndpointConfig, ...] | None = None
    duration_s: float = 0.0
    # the REST v2 budget after the cycle's calls (None: GraphQL mode keeps none)
    budget: BudgetReading | None = None

    @property
    def facts(self) -> CycleFacts:
        """What the metrics read of this cycle."""
        return CycleFacts(
            self.observation, self.active, [i.diagnosis for i in self.changes.raised],
            self.calls, self.listed, self.duration_s, self.budget,
        )


@dataclass
class Pipeline:
    """Everything one cycle needs, kept between cycles."""

    prober: Prober
    thresholds: Thresholds
    history: HistoryBuffer
    tracker: IncidentTracker
    router: AlertRouter
    account_rules: bool = True  # only shard 0 raises account-scope diagnoses
    metrics: MonitorMetrics = field(default_factory=MonitorMetrics)
    # the incident history (status page); bounded by its cap when no retention is given
    episodes: EpisodeLog = field(default_factory=lambda: EpisodeLog(math.inf))
    store: Store | None = None  # None: nothing is persisted (check, replay)
    outbox_keep_s: float = OUTBOX_KEEP_S
    last_cycle: int = 0  # the number of the last cycle run or restored
    # the worker-log snapshots each active incident keeps (persisted with the cycle)
    incident_logs: dict[Key, tuple[WorkerLogs, ...]] = field(default_factory=dict)
    actions: ActionEngine | None = None  # guarded fixes (None: none at all)

    @property
    def jobs(self) -> JobTracker:
        """The jobs the user's app registered, polled in the probe step."""
        return self.prober.jobs

    async def cycle(self, cycle: int, t: float) -> CycleResult:
        """Run one probe cycle at time `t` (unix seconds; simulated in replay): every step
        from the probes to the store; delivery of what it queued is the caller's loop."""
        started = time.perf_counter()
        report = await self.prober.probe(cycle, t, self.hints())
        obs = report.observation
        self.history.append(obs)
        history = replace(self.history.view(), kept_logs=by_endpoint(self.incident_logs))
        found = evaluate(history, self.thresholds)
        if not self.account_rules:
            found = [d for d in found if d.scope != "account"]
        changes = self.tracker.update(obs, found)
        self.incident_logs = keep_logs(
            self.incident_logs, {k: i.since for k, i in self.tracker.active.items()},
            obs, history,
        )
        if self.actions is not None:
            changes = await self.actions.step(obs, changes, self.tracker.incidents(), t)
        notifications = await self.router.route(changes, t, cycle)
        if self.actions is not None and self.actions.fresh:
            told = {n.incident.key for n in notifications}
            for incident, n in self.actions.late(changes, told):
                notifications += self.router.tell_again(incident, t, cycle, n)
        duration = time.perf_counter() - started
        control = self.prober.control  # None in GraphQL mode: no v2 budget
        budget = None if control is None else control.budget.reading(
            t, control.planner.workers_seen)
        result = CycleResult(
            obs, changes, self.tracker.diagnoses(), notifications, report.calls,
            report.listed, duration, budget,
        )
        _log_cycle(result, cycle, t, len(self.tracker.active), report.held_back)
        _log_incidents(changes, cycle, t)
        self._observe(result, history)
        self.persist(obs, self.episodes.update(changes, t, cycle))
        self.last_cycle = cycle
        return result

    def hints(self) -> Hints:
        """What the last cycle's diagnoses ask of this cycle's REST v2 calls: the endpoints
        with an active incident, and the workers whose logs would explain one."""
        active = frozenset(eid for _code, eid in self.tracker.active if eid is not None)
        return Hints(active_endpoints=active, wanted_logs=tuple(self.logs_wanted()))

    def logs_wanted(self) -> list[tuple[str, str]]:
        """(endpoint id, worker id) whose logs the next probe should read: the failing
        workers of the active incidents the logs explain, not read yet in them."""
        return logs_wanted(self.tracker.diagnoses(), self.history.view(),
                           read_workers(self.incident_logs))

    def _observe(self, result: CycleResult, history: History) -> None:
        """Feed the metrics: the tracked jobs that ended, then the cycle's facts."""
        for tracked in result.observation.tracked_jobs:
            j = tracked.job
            if j.status not in TERMINAL_JOB_STATUSES:
                continue
            eid = tracked.endpoint_id
            self.metrics.observe_job(
                eid, history.endpoint_name(eid),
                None if j.delay_ms is None else j.delay_ms / 1000,
                None if j.execution_ms is None else j.execution_ms / 1000,
                job_id=j.id,
            )
        self.metrics.observe_cycle(result.facts)

    def persist(self, obs: Observation, episodes: Sequence[Episode] = ()) -> None:
        """Save the cycle that saw `obs` (and the `episodes` it changed) in one
        transaction, then bound the file."""
        if self.store is None:
            return
        self.store.save_cycle(obs, self.history.memory, self.tracker.snapshot(),
                              self.router.snapshot(), episodes, self.incident_logs)
        horizon = obs.t - self.history.retention_s
        self.store.prune(horizon)
        self.store.prune_episodes(horizon, MAX_EPISODES)
        self.store.prune_outbox(obs.t - self.outbox_keep_s)

    def snapshot(self) -> PipelineState:
        """What this pipeline carries to the next cycle, each part from its own component."""
        view = self.history.view()
        return PipelineState(
            observations=list(view.observations), memory=view.memory,
            active=self.tracker.snapshot(), announced=set(self.router.snapshot()),
            last_cycle=self.last_cycle, episodes=self.episodes.episodes(),
            incident_logs=dict(self.incident_logs),
        )

    def restore(self, state: PipelineState, now: float) -> None:
        """Take `state` (`Store.load()` after a restart); observations older than the
        history's window at `now` are dropped."""
        horizon = now - self.history.retention_s
        self.history.restore([o for o in state.observations if o.t >= horizon], state.memory)
        self.tracker.restore(state.active)
        self.incident_logs = {k: v for k, v in state.incident_logs.items() if k in state.active}
        self.router.restore(state.announced)
        self.episodes.restore(state.episodes)
        self.episodes.prune(horizon)
        self.last_cycle = state.last_cycle
        if self.actions is not None:
            self.actions.restore()


def build_pipeline(
    settings: Settings,
    client: RunPodClient,
    *,
    sinks: Sequence[Sink] | None = None,
    store: Store | None = None,
    metrics: MonitorMetrics | None = None,
    silences_file: Path | None = None,
    interval_s: float | None = None,
    dry_run: bool = False,
) -> Pipeline:
    """The pipeline `settings` describe, probing through `client`.

    `sinks`: where alerts go (None: those the settings configure; `[]`: none). `store`:
    the SQLite state the cycles persist to and the outbox lives in (None: nothing is
    written, the outbox is in memory). `interval_s`: the probe interval the back-off
    counts in, when not the settings' (replay's scenario). `dry_run`: guarded fixes are
    proposed and approved but never called (`check`, `run --dry-run`)."""
    shard = settings.shard_spec
    account_rules = shard is None or shard[0] == 0
    if metrics is None:
        metrics = MonitorMetrics(extensions=True, account=account_rules)
    router = build_router(
        settings, store if store is not None else MemoryOutboxStore(),
        build_sinks(settings) if sinks is None else sinks,
        metrics=metrics, silences_file=silences_file,
    )
    runpod = settings.runpod
    budget = runpod.v2_budget
    control = ControlPlane(
        client, runpod.control_plane,
        budget=V2Budget(budget.assumed, exempt_after=budget.exempt_after,
                        exempt_per_minute=budget.exempt_per_minute,
                        shrink=budget.shrink_on_429),
        planner=Planner(list_period_s=budget.list_period_s,
                        fact_periods_s=budget.fact_periods_s),
        page_size=runpod.v2_pagination.page_size, log_reserve=budget.reserve,
        prices=settings.rules,
    )
    prober = Prober(
        client,
        configured=settings.endpoints,
        track_requests=runpod.track_requests,
        shard=shard,
        interval_s=settings.interval_s if interval_s is None else interval_s,
        jobs=JobTracker(max_jobs=settings.api.max_jobs,
                        sample_per_endpoint=settings.runpod.sample_completions),
        control=control,
    )
    actions = ActionEngine(
        settings.actions, store=store,
        port=None if dry_run else RunPodPort(client), dry_run=dry_run,
        base_url=f"http://{settings.http.listen}",
        retention_s=max(settings.state.retention_s, settings.actions.expire_s),
    )
    return Pipeline(
        prober=prober,
        thresholds=settings.rules,
        history=HistoryBuffer(settings.state.retention_s),
        tracker=IncidentTracker(),
        router=router,
        account_rules=account_rules,
        metrics=metrics,
        episodes=EpisodeLog(settings.state.retention_s),
        store=store,
        outbox_keep_s=max(2 * settings.alerts.repeat_interval_s, OUTBOX_KEEP_S),
        actions=actions,
    )


def _log_cycle(result: CycleResult, cycle: int, t: float, active: int,
               held_back: int = 0) -> None:
    """The one `cycle` event: counts, and the codes raised and resolved."""
    obs = result.observation
    failures = [c for c in result.calls if c.outcome != "ok"]
    # probes the back-off or a Retry-After held back, and control-plane calls held back
    # while RunPod is unreachable: not sent, so not failures
    skipped = (obs.control_outcome == SKIPPED) + held_back + sum(
        s.health_outcome == SKIPPED for s in obs.endpoints.values()
    )
    log.info(
        "cycle",
        cycle=cycle,
        t=t,
        endpoints=len(obs.endpoints),
        calls=len(result.calls),
        failures=len(failures),
        skipped=skipped,
        raised=_codes(result.changes.raised),
        resolved=_codes(result.changes.resolved),
        active=active,
        duration_s=round(result.duration_s, 4),
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
