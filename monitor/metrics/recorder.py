"""MonitorMetrics: every metric of spec/metrics.md, fed by the pipeline and the alert outbox.

The daemon polls RunPod in the background, on its own schedule; a scrape only renders what
the last cycle left here and never triggers a RunPod call. Counters and histograms (probes,
cycles, jobs, diagnoses raised, alerts) accumulate in ordinary client_python metrics; the
job histograms of an unwatched endpoint are removed.

Every update is O(endpoints + jobs in this cycle's sample): nothing is rescanned from history.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from model.observation import (
    OK,
    RETIRED,
    SKIPPED,
    TERMINAL_JOB_STATUSES,
    Account,
    EndpointConfig,
    Health,
    Job,
    Observation,
    queued_wait_ms,
)
from monitor import __version__
from monitor.metrics.collectors import (
    _POLLED,
    _REASONS,
    CYCLE_BUCKETS,
    JOB_BUCKETS,
    PROBE_BUCKETS,
    SEEN_JOBS_MAX,
    BudgetCollector,
    BudgetSnapshot,
    EndpointState,
    Snapshot,
    SnapshotCollector,
    error_reason,
    probe_label,
)
from monitor.metrics.costs import JobCosts
from monitor.metrics.renderer import BudgetText, JobHistogram, SnapshotText
from monitor.metrics.v2facts import V2Facts
from rules.catalog import CATALOG
from rules.diagnosis import Diagnosis


class ProbeTiming(Protocol):
    """One API call of a cycle, as the probe metrics read it
    (`monitor.pipeline.probes.ProbeCall`)."""

    @property
    def probe(self) -> str: ...
    @property
    def outcome(self) -> str: ...
    @property
    def elapsed_s(self) -> float: ...


class BudgetWindowView(Protocol):
    """One rate-limit window (`monitor.pipeline.budget.WindowReading`)."""

    @property
    def name(self) -> str: ...
    @property
    def quota(self) -> int: ...
    @property
    def remaining(self) -> int: ...
    @property
    def spent(self) -> int: ...


class BudgetView(Protocol):
    """The REST v2 budget as the metrics read it (`monitor.pipeline.budget.BudgetReading`)."""

    @property
    def windows(self) -> Sequence[BudgetWindowView]: ...
    @property
    def allowance(self) -> int: ...
    @property
    def exempt(self) -> bool: ...
    @property
    def calls(self) -> Sequence[tuple[str, int]]: ...
    @property
    def throttled(self) -> int: ...
    @property
    def malformed_headers(self) -> int: ...
    @property
    def workers_seen(self) -> Mapping[str, float]: ...


@dataclass(frozen=True, slots=True)
class CycleFacts:
    """What one cycle hands the metrics, built by the pipeline (`CycleResult.facts`): the
    metrics read the cycle's facts and import nothing of the pipeline."""

    observation: Observation
    active: Sequence[Diagnosis] = ()
    raised: Sequence[Diagnosis] = ()  # the diagnoses that became incidents this cycle
    calls: Sequence[ProbeTiming] = ()
    listed: tuple[EndpointConfig, ...] | None = None  # what GraphQL listed; None: failed
    duration_s: float = 0.0
    budget: BudgetView | None = None  # the REST v2 budget after the cycle's calls


class _SeenIds:
    """A bounded memory of keys, least recently seen evicted first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._keys: OrderedDict[Hashable, None] = OrderedDict()

    def first_time(self, key: Hashable) -> bool:
        """True the first time `key` is offered (while remembered); refreshes it either way."""
        if key in self._keys:
            self._keys.move_to_end(key)
            return False
        self._keys[key] = None
        if len(self._keys) > self.limit:
            self._keys.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._keys)


@dataclass(slots=True)
class _Known:
    """What is remembered of one watched endpoint between cycles."""

    name: str = ""
    config: EndpointConfig | None = None
    health: Health | None = None
    queue_delay_s: float | None = None
    # the last /health probe sent (a skipped probe is no answer and no failure)
    up: bool = False
    http_status: int = 0


class MonitorMetrics:
    """Every metric of spec/metrics.md, fed by the pipeline and the alert outbox.

    `observe_cycle` once per probe cycle; `observe_job` for jobs followed through `/status`;
    `alert_sent`, `alert_failed` and `set_alerts_pending` from the alert sinks; `render` for
    the `/metrics` handler. Uses its own registry unless given one.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        seen_jobs_max: int = SEEN_JOBS_MAX,
        extensions: bool = False,
        account: bool = True,
    ) -> None:
        """`extensions`: also expose the daemon's metrics beyond spec/metrics.md
        (`EXTENSIONS`); off by default so the exposition is exactly the contract.
        `account`: expose the account gauges (balance, spend, runway); only shard 0 does,
        so replicas behind one Prometheus give one series each."""
        self.registry = registry if registry is not None else CollectorRegistry()
        # a caller's registry may hold other collectors: render it with generate_latest
        self._own_registry = registry is None
        self._extensions = extensions
        self._account_gauges = account
        self._snapshot_data: tuple[str, bytes] | None = None  # the snapshot text, encoded
        self.snapshot = SnapshotCollector()
        self._snapshot_text = SnapshotText()
        self._account: Account | None = None
        self._known: dict[str, _Known] = {}
        # each endpoint's last state and the config it was made of: most endpoints of a
        # large account show the same state every cycle, and a frozen one costs 4.5 us
        self._states: dict[str, tuple[EndpointConfig | None, EndpointState]] = {}
        self._volume_dcs: tuple[Account, dict[str, str]] | None = None  # per account read
        # endpoint_id -> the `endpoint` label its job histogram series carry
        self._job_series: dict[str, str] = {}
        self._delay_seen = _SeenIds(seen_jobs_max)
        self._execution_seen = _SeenIds(seen_jobs_max)
        # per probe label its series (never removed): ~1100 calls a cycle at 1000 endpoints,
        # where prometheus_client's labels() costs more than the observation
        self._probe_durations: dict[str, Histogram] = {}
        self._probe_successes: dict[str, Gauge] = {}
        self.budget = BudgetCollector()
        self._budget_text = BudgetText()
        self._budget_view: BudgetView | None = None

        # The contract has no `_created` series: client_python's own switch, process-wide
        # (as PROMETHEUS_DISABLE_CREATED_SERIES=True), read when a metric is collected.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        # registered first: generate_latest(registry) writes the collectors in this order
        self.registry.register(self.snapshot)
        ep = ["endpoint_id", "endpoint"]
        self.diagnoses_raised = Counter(
            "runpod_diagnoses_raised_total",
            "Diagnoses raised since the monitor started, by code and severity.",
            ["code", "severity"], registry=self.registry,
        )
        self.probe_duration = Histogram(
            "runpod_probe_duration_seconds",
            "Latency of the background calls to RunPod by probe: graphql, health, requests, "
            "status, and v2_<kind> for each REST v2 call kind.",
            ["probe"], buckets=PROBE_BUCKETS, registry=self.registry,
        )
        self.probe_errors = Counter(
            "runpod_probe_errors_total",
            "Failed calls to RunPod by probe and reason: timeout, connect, http_4xx, "
            "http_429, http_5xx, malformed, auth.",
            ["probe", "reason"], registry=self.registry,
        )
        self.probe_last_success = Gauge(
            "runpod_probe_last_success_timestamp_seconds",
            "Unix time of the last good answer of each probe: how fresh the data is. "
            f"{_POLLED}",
            ["probe"], registry=self.registry,
        )
        self.cycle_duration = Histogram(
            "runpod_monitor_cycle_duration_seconds",
            "Duration of one whole background probe cycle (probes, rules, alerts).",
            buckets=CYCLE_BUCKETS, registry=self.registry,
        )
        self.job_delay = Histogram(
            "runpod_job_delay_seconds",
            "delayTime of jobs as they leave the queue, each job once. "
            f"{_POLLED}",
            ep, buckets=JOB_BUCKETS, registry=self.registry,
        )
        self.job_execution = Histogram(
            "runpod_job_execution_seconds",
            "executionTime of finished jobs, each job once. "
            f"{_POLLED}",
            ep, buckets=JOB_BUCKETS, registry=self.registry,
        )
        self.alerts_sent = Counter(
            "runpod_alerts_sent_total",
            "Notifications delivered, by sink and kind: firing, resolved, reminder.",
            ["sink", "kind"], registry=self.registry,
        )
        self.alerts_failed = Counter(
            "runpod_alerts_failed_total",
            "Notification deliveries that failed (and will be retried), by sink.",
            ["sink"], registry=self.registry,
        )
        self.alerts_pending = Gauge(
            "runpod_alerts_pending",
            "Notifications waiting in the outbox, by sink.",
            ["sink"], registry=self.registry,
        )
        self.build_info = Gauge(
            "runpod_monitor_build_info",
            "The monitor's version (always 1).",
            ["version"], registry=self.registry,
        )
        self.build_info.labels(__version__).set(1)
        self._delay_text = JobHistogram(self.job_delay, "runpod_job_delay_seconds", JOB_BUCKETS)
        self._execution_text = JobHistogram(
            self.job_execution, "runpod_job_execution_seconds", JOB_BUCKETS
        )
        self.cycles_skipped = Counter(
            "runpod_monitor_cycles_skipped",
            "Probe cycles not started because the previous one was still running (a slow "
            "RunPod) or the schedule fell behind. An addition beyond spec/metrics.md.",
            registry=self.registry if extensions else None,
        )
        # The extensions below are registered now, so the exposition keeps one order
        # (render writes them in it); each family appears with its first sample.
        if extensions:
            self.registry.register(self.budget)
        self._cost_seen = _SeenIds(seen_jobs_max)
        self.costs = JobCosts(self.registry if extensions else None, self._cost_seen.first_time)
        self.v2 = V2Facts()
        if extensions:
            self.registry.register(self.v2.collector)
        # Known series start at 0 so that rate() and increase() see their first rise.
        for info in CATALOG.values():
            self.diagnoses_raised.labels(info.code, info.severity)


    # -- the pipeline ------------------------------------------------------------------

    def observe_cycle(self, result: CycleFacts) -> None:
        """Take one cycle's facts: new snapshot, probe and diagnosis counts, job times."""
        obs = result.observation
        if obs.account is not None and self._account_gauges:
            self._account = obs.account
        listed = {c.id: c for c in result.listed or () if c.id in obs.endpoints}
        diag_names = {
            d.endpoint_id: d.endpoint_name
            for d in result.active
            if d.endpoint_id is not None and d.endpoint_name
        }

        known: dict[str, _Known] = {}
        states: list[EndpointState] = []
        tracked: dict[str, list[Job]] = {}
        for tj in obs.tracked_jobs:
            tracked.setdefault(tj.endpoint_id, []).append(tj.job)
        for eid, sample in obs.endpoints.items():
            k = self._known.get(eid) or _Known()
            config = sample.config or listed.get(eid)
            if config is not None:
                k.config = config
                if config.name:
                    k.name = config.name
            if not k.name:
                k.name = diag_names.get(eid, "")
            if sample.health is not None:
                k.health = sample.health
            if sample.health_outcome != SKIPPED:
                k.up, k.http_status = sample.health is not None, sample.http_status
            if sample.jobs is not None:
                k.queue_delay_s = _queue_delay_s(sample.jobs, k.queue_delay_s)
            known[eid] = k
            name = k.name or eid
            # the job histograms start at 0, so that rate() sees the very first job
            label = self._job_label(eid, name)
            self._delay_text.labels(eid, label)
            self._execution_text.labels(eid, label)
            if self._extensions:  # cost series appear with the endpoint's first costed job
                self.costs.observe(obs, eid, label, sample, k.config, tracked.get(eid, ()))
            states.append(self._state(eid, name, k))
            if sample.jobs is not None:
                self._observe_jobs(eid, name, sample.jobs)
        self._known = known
        if len(self._states) > len(known):
            self._states = {e: v for e, v in self._states.items() if e in known}
        for eid in [e for e in self._job_series if e not in known]:
            self._remove_job_series(eid)
        if self._extensions:
            self.v2.observe(
                obs.t,
                {eid: s.workers for eid, s in obs.endpoints.items() if s.workers is not None},
                {eid: k.name or eid for eid, k in known.items()},
                obs.gpu_stock,
                (tier for k in known.values() if k.config is not None
                 for tier in k.config.gpu_tiers),
            )
        if result.budget is not None:
            self._budget_view = result.budget
        if self._budget_view is not None:
            self._update_budget()

        self.snapshot.update(
            Snapshot(self._account, tuple(states), self._diagnosis_labels(result.active))
        )

        for d in result.raised:
            self.diagnoses_raised.labels(d.code, d.severity).inc()
        durations, successes = self._probe_durations, self._probe_successes
        succeeded: dict[str, None] = {}  # in the order of first success, as before
        for call in result.calls:
            if call.outcome == SKIPPED:
                continue  # never sent: no latency, no answer, no failure
            probe = probe_label(call.probe)
            duration = durations.get(probe)
            if duration is None:  # the probe's first call: its error series start at 0
                for reason in _REASONS:
                    self.probe_errors.labels(probe, reason)
                duration = durations[probe] = self.probe_duration.labels(probe)
            duration.observe(call.elapsed_s)
            if call.outcome == OK:
                succeeded[probe] = None
            elif call.outcome != RETIRED:
                # a retired GraphQL is a known state of RunPod's API, not a failure
                # (Observation.graphql_state says it): neither an error nor a success
                self.probe_errors.labels(probe, error_reason(call.outcome)).inc()
        for probe in succeeded:  # the series appears with the probe's first success
            success = successes.get(probe)
            if success is None:
                success = successes[probe] = self.probe_last_success.labels(probe)
            success.set(obs.t)
        self.cycle_duration.observe(result.duration_s)

    def observe_job(
        self,
        endpoint_id: str,
        endpoint: str,
        delay_s: float | None,
        execution_s: float | None,
        *,
        job_id: str | None = None,
    ) -> None:
        """Record a job the user registered through the API (followed through `/status`).

        With `job_id`, each time is observed once per job, also across the `/requests`
        samples; without it the caller must call once per time. A watched endpoint's series
        carry the name the cycles know it by, so that it keeps one series.
        """
        name = self._known[endpoint_id].name if endpoint_id in self._known else ""
        name = self._job_label(endpoint_id, name or endpoint or endpoint_id)
        key = (endpoint_id, job_id)
        if delay_s is not None and (job_id is None or self._delay_seen.first_time(key)):
            self._delay_text.observe(endpoint_id, name, delay_s)
        if execution_s is not None and (job_id is None or self._execution_seen.first_time(key)):
            self._execution_text.observe(endpoint_id, name, execution_s)

    def observe_budget(self, budget: BudgetView) -> None:
        """Take the REST v2 budget (`monitor.pipeline.budget.BudgetReading`), once per cycle after
        `observe_cycle` (or as `CycleFacts.budget`): endpoint series only of watched ones."""
        self._budget_view = budget
        self._update_budget()

    def _update_budget(self) -> None:
        b = self._budget_view
        if b is None or not self._extensions:
            return
        seen = tuple(
            (eid, self._known[eid].name or eid, t)
            for eid, t in b.workers_seen.items()
            if eid in self._known
        )
        self.budget.update(BudgetSnapshot(
            tuple((w.name, w.quota, w.remaining, w.spent) for w in b.windows),
            b.allowance, b.exempt, tuple(b.calls), b.throttled, b.malformed_headers, seen,
        ))

    # -- the alert outbox ----------------------------------------------------------------

    def init_sink(self, sink: str) -> None:
        """Create a sink's alert series at 0, so a healthy sink shows zeros, not no data."""
        for kind in ("firing", "resolved", "reminder"):
            self.alerts_sent.labels(sink, kind)
        self.alerts_failed.labels(sink)
        self.alerts_pending.labels(sink).set(0)

    def cycle_skipped(self) -> None:
        """The scheduler skipped one cycle (`runpod_monitor_cycles_skipped_total`)."""
        self.cycles_skipped.inc()

    def alert_sent(self, sink: str, kind: str) -> None:
        """One notification delivered by `sink`; kind: firing, resolved or reminder."""
        self.alerts_sent.labels(sink, kind).inc()

    def alert_failed(self, sink: str) -> None:
        """One delivery attempt by `sink` failed (it will be retried)."""
        self.alerts_failed.labels(sink).inc()

    def set_alerts_pending(self, sink: str, n: int) -> None:
        """How many notifications wait in `sink`'s outbox."""
        self.alerts_pending.labels(sink).set(n)

    # -- the scrape ----------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type, for the `/metrics` handler.

        The text format with legacy (underscore) names, which every Prometheus parses: the
        type client_python's own handler sends when the scraper negotiates nothing.

        Exactly generate_latest's output; with the monitor's own registry the per-endpoint
        families (the snapshot, the job histograms) are written by faster code that only
        re-renders what changed: a scrape of 1000 endpoints costs milliseconds, not a
        second (benchmarks/README.md).
        """
        if not self._own_registry:
            return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4
        text = self._snapshot_text.render(self.snapshot.snapshot)
        if self._snapshot_data is None or self._snapshot_data[0] is not text:
            self._snapshot_data = (text, text.encode())
        # in the registry's order (the constructor's), the job histograms by hand
        parts = [
            self._snapshot_data[1],
            *map(generate_latest, (
                self.diagnoses_raised, self.probe_duration, self.probe_errors,
                self.probe_last_success, self.cycle_duration,
            )),
            self._delay_text.data(),
            self._execution_text.data(),
            *map(generate_latest, (
                self.alerts_sent, self.alerts_failed, self.alerts_pending, self.build_info,
            )),
        ]
        if self._extensions:  # in the order __init__ registered them
            parts.append(generate_latest(self.cycles_skipped))
            parts.append(self._budget_text.render(self.budget.snapshot))
            parts.append(self.costs.data())
            parts.append(self.v2.data())
        return b"".join(parts), CONTENT_TYPE_PLAIN_0_0_4

    # -- internals -----------------------------------------------------------------------

    def _state(self, eid: str, name: str, k: _Known) -> EndpointState:
        config = k.config
        volume = (config.network_volume_id or "") if config is not None else ""
        datacenter = self._datacenter(volume)
        made = self._states.get(eid)
        if made is not None and made[0] is config:
            last = made[1]
            if (last.health is k.health and last.endpoint == name
                    and last.datacenter == datacenter and last.queue_delay_s == k.queue_delay_s
                    and last.up == k.up and last.http_status == k.http_status):
                return last
        state = EndpointState(
            endpoint_id=eid,
            endpoint=name,
            gpu_ids=config.gpu_ids if config is not None else "",
            network_volume_id=volume,
            datacenter=datacenter,
            workers_min=config.workers_min if config is not None else None,
            workers_max=config.workers_max if config is not None else None,
            health=k.health,
            queue_delay_s=k.queue_delay_s,
            up=k.up,
            http_status=k.http_status,
        )
        self._states[eid] = (config, state)
        return state

    def _datacenter(self, volume_id: str) -> str:
        account = self._account
        if not volume_id or account is None:
            return ""
        if self._volume_dcs is None or self._volume_dcs[0] is not account:
            where: dict[str, str] = {}
            for v in account.network_volumes:
                where.setdefault(v.id, v.datacenter or "")
            self._volume_dcs = (account, where)
        return self._volume_dcs[1].get(volume_id, "")

    def _diagnosis_labels(
        self, active: Sequence[Diagnosis]
    ) -> tuple[tuple[str, str, str, str], ...]:
        labels: dict[tuple[str, str, str, str], None] = {}
        for d in active:
            if d.scope == "account" or d.endpoint_id is None:
                eid, name = "", ""
            else:
                eid = d.endpoint_id
                k = self._known.get(eid)
                name = (k.name if k is not None else "") or d.endpoint_name or eid
            labels[(eid, name, d.code, d.severity)] = None
        return tuple(labels)

    def _observe_jobs(self, eid: str, name: str, jobs: Sequence[Job]) -> None:
        for job in jobs:
            key = (eid, job.id)
            if (
                job.status != "IN_QUEUE"
                and job.delay_ms is not None
                and self._delay_seen.first_time(key)
            ):
                self._delay_text.observe(eid, self._job_label(eid, name), job.delay_ms / 1000)
            if (
                job.status in TERMINAL_JOB_STATUSES
                and job.execution_ms is not None
                and self._execution_seen.first_time(key)
            ):
                self._execution_text.observe(
                    eid, self._job_label(eid, name), job.execution_ms / 1000
                )

    def _job_label(self, eid: str, name: str) -> str:
        """`name`, after dropping the endpoint's series under a previous name."""
        old = self._job_series.get(eid)
        if old is not None and old != name:
            self._remove_job_series(eid)
        self._job_series[eid] = name
        return name

    def _remove_job_series(self, eid: str) -> None:
        name = self._job_series.pop(eid, None)
        if name is not None:
            self._delay_text.remove(eid, name)
            self._execution_text.remove(eid, name)
            self.costs.remove(eid, name)


def _queue_delay_s(jobs: Sequence[Job], last: float | None) -> float | None:
    """The oldest queued job's wait: 0 with none queued, `last` when none tells its delay."""
    wait = queued_wait_ms(jobs)
    return last if wait is None else wait / 1000
