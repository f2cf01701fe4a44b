"""The Prometheus exposition of spec/metrics.md: what the last probe cycle saw, and counts.

The daemon polls RunPod in the background, on its own schedule; a scrape only renders what
the last cycle left here and never triggers a RunPod call. Two kinds of metric:

- snapshot gauges (account, endpoints, active diagnoses) come from `SnapshotCollector`,
  which yields from an immutable snapshot replaced once per cycle, so the series of an
  endpoint that is no longer watched vanish with the cycle that stopped watching it;
- counters and histograms (probes, cycles, jobs, diagnoses raised, alerts) accumulate in
  ordinary client_python metrics; the job histograms of an unwatched endpoint are removed.

Label values come only from ids, names and configuration (endpoint ids and names, `gpuIds`,
volume ids and datacenters, diagnosis codes, probe and sink names); never from a job's
output or error, a template's environment, or a diagnosis's text or evidence.

Every update is O(endpoints + jobs in this cycle's sample): nothing is rescanned from history.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

from model.observation import (
    OK,
    SKIPPED,
    TERMINAL_JOB_STATUSES,
    Account,
    EndpointConfig,
    Health,
    Job,
    Observation,
)
from monitor import __version__
from rules.catalog import CATALOG
from rules.diagnosis import Diagnosis

__all__ = [
    "CYCLE_BUCKETS",
    "ENDPOINT_JOB_STATES",
    "ENDPOINT_WORKER_STATES",
    "ERROR_REASONS",
    "EXTENSIONS",
    "JOB_BUCKETS",
    "PROBE_BUCKETS",
    "SEEN_JOBS_MAX",
    "CycleFacts",
    "EndpointState",
    "MonitorMetrics",
    "ProbeTiming",
    "Snapshot",
    "SnapshotCollector",
    "error_reason",
]

# `delayTime` and `executionTime`: a warm worker answers in a second, a cold start or a long
# job takes minutes to hours.
JOB_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)
# One HTTP call to RunPod; the client's timeouts are tens of seconds.
PROBE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# One whole cycle: the calls run concurrently, so about the slowest one plus the rules.
CYCLE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# How many job ids the job histograms remember, to observe each job once.
SEEN_JOBS_MAX = 50_000

ENDPOINT_WORKER_STATES = ("idle", "initializing", "ready", "running", "throttled", "unhealthy")
ENDPOINT_JOB_STATES = ("in_queue", "in_progress", "completed", "failed", "retried")

# Probe failure kinds (model.observation.FAILURE_KINDS) to the bounded `reason` label.
ERROR_REASONS: Mapping[str, str] = {
    "timeout": "timeout",
    "connect": "connect",
    "http_401": "auth",
    "http_403": "auth",
    "http_404": "http_4xx",
    "http_429": "http_429",
    "http_4xx": "http_4xx",
    "http_5xx": "http_5xx",
    "malformed": "malformed",
    "graphql_error": "malformed",
}
_REASONS = ("timeout", "connect", "http_4xx", "http_429", "http_5xx", "malformed", "auth")

# Metrics the daemon exposes beyond spec/metrics.md (MonitorMetrics(extensions=True)).
EXTENSIONS = ("runpod_monitor_cycles_skipped_total",)

_POLLED = "Polled in the background; a scrape never calls RunPod."


def error_reason(outcome: str) -> str:
    """The `reason` label of a failed probe outcome; unknown kinds fold into a bounded one."""
    reason = ERROR_REASONS.get(outcome)
    if reason is not None:
        return reason
    if outcome.startswith("http_5"):
        return "http_5xx"
    if outcome.startswith("http_4"):
        return "http_4xx"
    return "malformed"


def _esc(value: str) -> str:
    """A label value escaped as client_python's text format escapes it."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


def _go(value: float) -> str:
    """A sample value as client_python writes it."""
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


_INT_TEXT: dict[int, str] = {}


def _num(value: float) -> str:
    """`_go`, memoized for ints (worker and job counts, statuses)."""
    if type(value) is not int:
        return _go(value)
    text = _INT_TEXT.get(value)
    if text is None:
        text = _go(value)
        if len(_INT_TEXT) < 4096:
            _INT_TEXT[value] = text
    return text


def _header(family: Metric) -> str:
    """`# HELP` and `# TYPE` of a gauge or histogram family, as generate_latest writes them."""
    doc = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {family.name} {doc}\n# TYPE {family.name} {family.type}\n"


@dataclass(frozen=True, slots=True)
class EndpointState:
    """One watched endpoint as the snapshot gauges show it (last known values kept)."""

    endpoint_id: str
    endpoint: str
    gpu_ids: str = ""
    network_volume_id: str = ""
    datacenter: str = ""
    workers_min: int | None = None
    workers_max: int | None = None
    health: Health | None = None
    queue_delay_s: float | None = None
    up: bool = False
    http_status: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the snapshot gauges render: replaced whole once per cycle, never mutated."""

    account: Account | None = None
    endpoints: tuple[EndpointState, ...] = ()
    # (endpoint_id, endpoint, code, severity); empty endpoint labels for account scope
    diagnoses: tuple[tuple[str, str, str, str], ...] = ()


class SnapshotCollector:
    """The gauges of the latest cycle's snapshot: account, endpoints, active diagnoses.

    Yields nothing the snapshot lacks: no account series before any account data, no runway
    while spend is 0, no worker or job series before the endpoint's first `/health` data,
    and no series at all for an endpoint the cycle no longer watched (long label sets
    wrapped here)::

        # HELP runpod_account_balance_usd Account balance in USD (clientBalance). ...
        # TYPE runpod_account_balance_usd gauge
        runpod_account_balance_usd 42.5
        # TYPE runpod_account_spend_usd_per_hour gauge
        runpod_account_spend_usd_per_hour 1.25
        # TYPE runpod_account_runway_seconds gauge
        runpod_account_runway_seconds 122400.0
        # TYPE runpod_endpoint_info gauge
        runpod_endpoint_info{datacenter="EU-RO-1",endpoint="sdxl",endpoint_id="e1",
                             gpu_ids="AMPERE_48",network_volume_id="vol1"} 1.0
        # TYPE runpod_endpoint_workers gauge
        runpod_endpoint_workers{endpoint="sdxl",endpoint_id="e1",state="idle"} 1.0
        runpod_endpoint_workers{endpoint="sdxl",endpoint_id="e1",state="running"} 2.0
        ...
        # TYPE runpod_endpoint_workers_max gauge
        runpod_endpoint_workers_max{endpoint="sdxl",endpoint_id="e1"} 3.0
        # TYPE runpod_endpoint_workers_min gauge
        runpod_endpoint_workers_min{endpoint="sdxl",endpoint_id="e1"} 0.0
        # TYPE runpod_endpoint_jobs gauge
        runpod_endpoint_jobs{endpoint="sdxl",endpoint_id="e1",state="in_queue"} 4.0
        ...
        # TYPE runpod_endpoint_queue_delay_seconds gauge
        runpod_endpoint_queue_delay_seconds{endpoint="sdxl",endpoint_id="e1"} 95.0
        # TYPE runpod_endpoint_up gauge
        runpod_endpoint_up{endpoint="sdxl",endpoint_id="e1"} 1.0
        # TYPE runpod_endpoint_http_status gauge
        runpod_endpoint_http_status{endpoint="sdxl",endpoint_id="e1"} 200.0
        # TYPE runpod_diagnosis_active gauge
        runpod_diagnosis_active{code="queue_backlog",endpoint="sdxl",endpoint_id="e1",
                                severity="warning"} 1.0
        runpod_diagnosis_active{code="low_balance",endpoint="",endpoint_id="",
                                severity="warning"} 1.0
    """

    def __init__(self) -> None:
        self.snapshot = Snapshot()
        self._headers = [_header(f) for f in self._families(Snapshot())]
        # the text of the last snapshot rendered, and each endpoint's lines by state
        self._text: tuple[Snapshot, str] | None = None
        self._lines: dict[EndpointState, tuple[str, ...]] = {}

    def update(self, snapshot: Snapshot) -> None:
        """Replace the snapshot (one reference swap: a concurrent scrape sees old or new)."""
        self.snapshot = snapshot

    def exposition(self) -> str:
        """What generate_latest writes for `collect()`, without its per-sample cost.

        Rendered once per snapshot; an endpoint whose state did not change since the last
        render reuses its lines. Byte for byte the same text.
        """
        snap = self.snapshot
        if self._text is not None and self._text[0] is snap:
            return self._text[1]
        h = self._headers
        out = [h[0]]
        account = snap.account
        if account is not None:
            out.append(f"runpod_account_balance_usd {_num(account.balance)}\n")
        out.append(h[1])
        if account is not None:
            out.append(f"runpod_account_spend_usd_per_hour {_num(account.spend_per_hr)}\n")
        out.append(h[2])
        if account is not None and account.spend_per_hr > 0:
            runway = account.balance / account.spend_per_hr * 3600
            out.append(f"runpod_account_runway_seconds {_num(runway)}\n")
        lines: dict[EndpointState, tuple[str, ...]] = {}
        columns: list[list[str]] = [[] for _ in range(8)]
        for e in snap.endpoints:
            per = lines.get(e) or self._lines.get(e) or _endpoint_lines(e)
            lines[e] = per
            for column, text in zip(columns, per, strict=True):
                column.append(text)
        self._lines = lines
        for header, column in zip(h[3:11], columns, strict=True):
            out.append(header)
            out.append("".join(column))
        out.append(h[11])
        for eid, name, code, severity in snap.diagnoses:
            out.append(
                f'runpod_diagnosis_active{{code="{_esc(code)}",endpoint="{_esc(name)}",'
                f'endpoint_id="{_esc(eid)}",severity="{_esc(severity)}"}} 1.0\n'
            )
        text = "".join(out)
        self._text = (snap, text)
        return text

    def describe(self) -> Iterable[Metric]:
        return self._families(Snapshot())

    def collect(self) -> Iterable[Metric]:
        return self._families(self.snapshot)

    @staticmethod
    def _families(snap: Snapshot) -> list[Metric]:
        ep = ["endpoint_id", "endpoint"]
        balance = GaugeMetricFamily(
            "runpod_account_balance_usd",
            f"Account balance in USD (clientBalance); the last known value. {_POLLED}",
        )
        spend = GaugeMetricFamily(
            "runpod_account_spend_usd_per_hour",
            f"Account spend in USD per hour (currentSpendPerHr); the last known value. {_POLLED}",
        )
        runway = GaugeMetricFamily(
            "runpod_account_runway_seconds",
            f"Seconds until the balance runs out at the current spend (balance / spend); "
            f"absent while spend is 0. "
            f"{_POLLED}",
        )
        info = GaugeMetricFamily(
            "runpod_endpoint_info",
            f"Configuration of a watched endpoint (always 1). {_POLLED}",
            labels=[*ep, "gpu_ids", "network_volume_id", "datacenter"],
        )
        workers = GaugeMetricFamily(
            "runpod_endpoint_workers",
            f"Workers by state from /health; the last known values. {_POLLED}",
            labels=[*ep, "state"],
        )
        workers_max = GaugeMetricFamily(
            "runpod_endpoint_workers_max",
            f"Configured maximum workers (workersMax). {_POLLED}",
            labels=ep,
        )
        workers_min = GaugeMetricFamily(
            "runpod_endpoint_workers_min",
            f"Configured minimum workers (workersMin). {_POLLED}",
            labels=ep,
        )
        jobs = GaugeMetricFamily(
            "runpod_endpoint_jobs",
            f"RunPod's job counts by state from /health; the last known values. {_POLLED}",
            labels=[*ep, "state"],
        )
        queue_delay = GaugeMetricFamily(
            "runpod_endpoint_queue_delay_seconds",
            f"How long the oldest queued job has waited (0 with none queued). {_POLLED}",
            labels=ep,
        )
        up = GaugeMetricFamily(
            "runpod_endpoint_up",
            f"1 when the last data-plane probe (/health) got a valid answer. {_POLLED}",
            labels=ep,
        )
        http_status = GaugeMetricFamily(
            "runpod_endpoint_http_status",
            f"Last HTTP status of /health (0: no answer). {_POLLED}",
            labels=ep,
        )
        active = GaugeMetricFamily(
            "runpod_diagnosis_active",
            f"1 while a diagnosis is active (account scope: empty endpoint labels). {_POLLED}",
            labels=[*ep, "code", "severity"],
        )

        if snap.account is not None:
            balance.add_metric([], snap.account.balance)
            spend.add_metric([], snap.account.spend_per_hr)
            if snap.account.spend_per_hr > 0:
                runway.add_metric([], snap.account.balance / snap.account.spend_per_hr * 3600)
        for e in snap.endpoints:
            ids = [e.endpoint_id, e.endpoint]
            info.add_metric([*ids, e.gpu_ids, e.network_volume_id, e.datacenter], 1)
            if e.health is not None:
                for state in ENDPOINT_WORKER_STATES:
                    workers.add_metric([*ids, state], getattr(e.health, state))
                for state in ENDPOINT_JOB_STATES:
                    jobs.add_metric([*ids, state], getattr(e.health, state))
            if e.workers_max is not None:
                workers_max.add_metric(ids, e.workers_max)
            if e.workers_min is not None:
                workers_min.add_metric(ids, e.workers_min)
            if e.queue_delay_s is not None:
                queue_delay.add_metric(ids, e.queue_delay_s)
            up.add_metric(ids, 1 if e.up else 0)
            http_status.add_metric(ids, e.http_status)
        for labels in snap.diagnoses:
            active.add_metric(list(labels), 1)
        return [
            balance, spend, runway, info, workers, workers_max, workers_min, jobs,
            queue_delay, up, http_status, active,
        ]


def _endpoint_lines(e: EndpointState) -> tuple[str, ...]:
    """One endpoint's lines of the 8 endpoint families, in `_families`' order."""
    ids = f'endpoint="{_esc(e.endpoint)}",endpoint_id="{_esc(e.endpoint_id)}"'
    info = (
        f'runpod_endpoint_info{{datacenter="{_esc(e.datacenter)}",{ids},'
        f'gpu_ids="{_esc(e.gpu_ids)}",network_volume_id="{_esc(e.network_volume_id)}"}} 1.0\n'
    )
    workers = jobs = ""
    if e.health is not None:
        h = e.health
        workers = "".join(
            f'runpod_endpoint_workers{{{ids},state="{state}"}} {_num(getattr(h, state))}\n'
            for state in ENDPOINT_WORKER_STATES
        )
        jobs = "".join(
            f'runpod_endpoint_jobs{{{ids},state="{state}"}} {_num(getattr(h, state))}\n'
            for state in ENDPOINT_JOB_STATES
        )
    return (
        info,
        workers,
        "" if e.workers_max is None
        else f"runpod_endpoint_workers_max{{{ids}}} {_num(e.workers_max)}\n",
        "" if e.workers_min is None
        else f"runpod_endpoint_workers_min{{{ids}}} {_num(e.workers_min)}\n",
        jobs,
        "" if e.queue_delay_s is None
        else f"runpod_endpoint_queue_delay_seconds{{{ids}}} {_num(e.queue_delay_s)}\n",
        f"runpod_endpoint_up{{{ids}}} {'1.0' if e.up else '0.0'}\n",
        f"runpod_endpoint_http_status{{{ids}}} {_num(e.http_status)}\n",
    )


class _JobHistogram:
    """A job histogram (labels endpoint_id, endpoint) with its text kept beside it.

    Every change goes through here: the client_python histogram (what `collect()` and the
    registry show) and a copy of each series' counts, from which `text()` writes what
    generate_latest would, re-rendering only the series observed since the last call.
    """

    def __init__(self, histogram: Histogram, name: str, buckets: Sequence[float]) -> None:
        self.histogram = histogram
        self.name = name
        self.bounds = [*buckets, float("inf")]
        self.le = [f'le="{_go(b)}"' for b in self.bounds]
        self.header = "".join(_header(f) for f in histogram.describe())
        # (endpoint_id, endpoint) -> [count per bucket..., sum], in the histogram's order
        self.series: dict[tuple[str, str], list[float]] = {}
        self.blocks: dict[tuple[str, str], str] = {}
        self._data: bytes | None = None  # the whole family's text, until the next change

    def labels(self, eid: str, name: str) -> None:
        """Create the series (at 0) when it does not exist yet."""
        self.histogram.labels(eid, name)
        key = (str(eid), str(name))
        if key not in self.series:
            self.series[key] = [0.0] * (len(self.bounds) + 1)
            self._data = None

    def observe(self, eid: str, name: str, value: float) -> None:
        self.histogram.labels(eid, name).observe(value)
        key = (str(eid), str(name))
        counts = self.series.get(key)
        if counts is None:
            counts = self.series[key] = [0.0] * (len(self.bounds) + 1)
        counts[-1] += value  # as client_python: the sum first, then the first bucket that fits
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                counts[i] += 1
                break
        self.blocks.pop(key, None)
        self._data = None

    def remove(self, eid: str, name: str) -> None:
        self.histogram.remove(eid, name)
        self.series.pop((str(eid), str(name)), None)
        self.blocks.pop((str(eid), str(name)), None)
        self._data = None

    def data(self) -> bytes:
        """The family's exposition, UTF-8."""
        if self._data is None:
            out = [self.header]
            for key, counts in self.series.items():
                block = self.blocks.get(key)
                if block is None:
                    block = self.blocks[key] = self._block(key, counts)
                out.append(block)
            self._data = "".join(out).encode()
        return self._data

    def _block(self, key: tuple[str, str], counts: list[float]) -> str:
        ids = f'endpoint="{_esc(key[1])}",endpoint_id="{_esc(key[0])}"'
        lines = []
        total = 0.0
        for le, n in zip(self.le, counts, strict=False):
            total += n
            lines.append(f"{self.name}_bucket{{{ids},{le}}} {_go(total)}\n")
        lines.append(f"{self.name}_count{{{ids}}} {_go(total)}\n")
        lines.append(f"{self.name}_sum{{{ids}}} {_go(counts[-1])}\n")
        return "".join(lines)


class _WithoutCreated:
    """Client_python metrics without their `_created` series, which the contract lacks.

    Exposes, for example::

        # HELP runpod_alerts_sent_total Notifications delivered, by sink and kind.
        # TYPE runpod_alerts_sent_total counter
        runpod_alerts_sent_total{kind="firing",sink="slack"} 3.0
        # HELP runpod_job_delay_seconds delayTime of jobs as they leave the queue. ...
        # TYPE runpod_job_delay_seconds histogram
        runpod_job_delay_seconds_bucket{endpoint="sdxl",endpoint_id="e1",le="0.5"} 0.0
        ...
        runpod_job_delay_seconds_count{endpoint="sdxl",endpoint_id="e1"} 12.0
        runpod_job_delay_seconds_sum{endpoint="sdxl",endpoint_id="e1"} 341.2
    """

    def __init__(self, metrics: Sequence[MetricWrapperBase]) -> None:
        self.metrics = list(metrics)

    def describe(self) -> Iterable[Metric]:
        for m in self.metrics:
            yield from m.describe()

    def collect(self) -> Iterable[Metric]:
        for m in self.metrics:
            for family in m.collect():
                created = family.name + "_created"
                family.samples = [s for s in family.samples if s.name != created]
                yield family


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


class ProbeTiming(Protocol):
    """One API call of a cycle, as the probe metrics read it (`monitor.probes.ProbeCall`)."""

    @property
    def probe(self) -> str: ...
    @property
    def outcome(self) -> str: ...
    @property
    def elapsed_s(self) -> float: ...


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
        self._account: Account | None = None
        self._known: dict[str, _Known] = {}
        # endpoint_id -> the `endpoint` label its job histogram series carry
        self._job_series: dict[str, str] = {}
        self._delay_seen = _SeenIds(seen_jobs_max)
        self._execution_seen = _SeenIds(seen_jobs_max)
        self._probes_seen: set[str] = set()

        # Metrics live in no registry of their own: `_WithoutCreated` exposes them.
        ep = ["endpoint_id", "endpoint"]
        self.diagnoses_raised = Counter(
            "runpod_diagnoses_raised_total",
            "Diagnoses raised since the monitor started, by code and severity.",
            ["code", "severity"], registry=None,
        )
        self.probe_duration = Histogram(
            "runpod_probe_duration_seconds",
            "Latency of the background calls to RunPod by probe: graphql, health, requests, "
            "status.",
            ["probe"], buckets=PROBE_BUCKETS, registry=None,
        )
        self.probe_errors = Counter(
            "runpod_probe_errors_total",
            "Failed calls to RunPod by probe and reason: timeout, connect, http_4xx, "
            "http_429, http_5xx, malformed, auth.",
            ["probe", "reason"], registry=None,
        )
        self.probe_last_success = Gauge(
            "runpod_probe_last_success_timestamp_seconds",
            "Unix time of the last good answer of each probe: how fresh the data is. "
            f"{_POLLED}",
            ["probe"], registry=None,
        )
        self.cycle_duration = Histogram(
            "runpod_monitor_cycle_duration_seconds",
            "Duration of one whole background probe cycle (probes, rules, alerts).",
            buckets=CYCLE_BUCKETS, registry=None,
        )
        self.job_delay = Histogram(
            "runpod_job_delay_seconds",
            "delayTime of jobs as they leave the queue, each job once. "
            f"{_POLLED}",
            ep, buckets=JOB_BUCKETS, registry=None,
        )
        self.job_execution = Histogram(
            "runpod_job_execution_seconds",
            "executionTime of finished jobs, each job once. "
            f"{_POLLED}",
            ep, buckets=JOB_BUCKETS, registry=None,
        )
        self.alerts_sent = Counter(
            "runpod_alerts_sent_total",
            "Notifications delivered, by sink and kind: firing, resolved, reminder.",
            ["sink", "kind"], registry=None,
        )
        self.alerts_failed = Counter(
            "runpod_alerts_failed_total",
            "Notification deliveries that failed (and will be retried), by sink.",
            ["sink"], registry=None,
        )
        self.alerts_pending = Gauge(
            "runpod_alerts_pending",
            "Notifications waiting in the outbox, by sink.",
            ["sink"], registry=None,
        )
        self.build_info = Gauge(
            "runpod_monitor_build_info",
            "The monitor's version (always 1).",
            ["version"], registry=None,
        )
        self.build_info.labels(__version__).set(1)
        self._delay_text = _JobHistogram(self.job_delay, "runpod_job_delay_seconds", JOB_BUCKETS)
        self._execution_text = _JobHistogram(
            self.job_execution, "runpod_job_execution_seconds", JOB_BUCKETS
        )
        self.cycles_skipped = Counter(
            "runpod_monitor_cycles_skipped",
            "Probe cycles not started because the previous one was still running (a slow "
            "RunPod) or the schedule fell behind. An addition beyond spec/metrics.md.",
            registry=None,
        )
        # Known series start at 0 so that rate() and increase() see their first rise.
        for info in CATALOG.values():
            self.diagnoses_raised.labels(info.code, info.severity)

        self.registry.register(self.snapshot)
        self.registry.register(
            _WithoutCreated([
                self.diagnoses_raised, self.probe_duration, self.probe_errors,
                self.probe_last_success, self.cycle_duration, self.job_delay,
                self.job_execution, self.alerts_sent, self.alerts_failed,
                self.alerts_pending, self.build_info,
            ])
        )
        if extensions:
            self.registry.register(_WithoutCreated([self.cycles_skipped]))

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
            states.append(self._state(eid, name, k))
            if sample.jobs is not None:
                self._observe_jobs(eid, name, sample.jobs)
        self._known = known
        for eid in [e for e in self._job_series if e not in known]:
            self._remove_job_series(eid)

        self.snapshot.update(
            Snapshot(self._account, tuple(states), self._diagnosis_labels(result.active))
        )

        for d in result.raised:
            self.diagnoses_raised.labels(d.code, d.severity).inc()
        for call in result.calls:
            if call.probe not in self._probes_seen:
                self._probes_seen.add(call.probe)
                for reason in _REASONS:
                    self.probe_errors.labels(call.probe, reason)
            self.probe_duration.labels(call.probe).observe(call.elapsed_s)
            if call.outcome == OK:
                self.probe_last_success.labels(call.probe).set(obs.t)
            else:
                self.probe_errors.labels(call.probe, error_reason(call.outcome)).inc()
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
        text = self.snapshot.exposition()
        if self._snapshot_data is None or self._snapshot_data[0] is not text:
            self._snapshot_data = (text, text.encode())
        parts = [
            self._snapshot_data[1],
            generate_latest(_WithoutCreated([
                self.diagnoses_raised, self.probe_duration, self.probe_errors,
                self.probe_last_success, self.cycle_duration,
            ])),
            self._delay_text.data(),
            self._execution_text.data(),
            generate_latest(_WithoutCreated([
                self.alerts_sent, self.alerts_failed, self.alerts_pending, self.build_info,
            ])),
        ]
        if self._extensions:
            parts.append(generate_latest(_WithoutCreated([self.cycles_skipped])))
        return b"".join(parts), CONTENT_TYPE_PLAIN_0_0_4

    # -- internals -----------------------------------------------------------------------

    def _state(self, eid: str, name: str, k: _Known) -> EndpointState:
        config = k.config
        volume = (config.network_volume_id or "") if config is not None else ""
        return EndpointState(
            endpoint_id=eid,
            endpoint=name,
            gpu_ids=config.gpu_ids if config is not None else "",
            network_volume_id=volume,
            datacenter=self._datacenter(volume),
            workers_min=config.workers_min if config is not None else None,
            workers_max=config.workers_max if config is not None else None,
            health=k.health,
            queue_delay_s=k.queue_delay_s,
            up=k.up,
            http_status=k.http_status,
        )

    def _datacenter(self, volume_id: str) -> str:
        if not volume_id or self._account is None:
            return ""
        for v in self._account.network_volumes:
            if v.id == volume_id:
                return v.datacenter or ""
        return ""

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


def _queue_delay_s(jobs: Sequence[Job], last: float | None) -> float | None:
    """The oldest queued job's wait: 0 with none queued, `last` when none tells its delay."""
    queued = [j for j in jobs if j.status == "IN_QUEUE"]
    delays = [j.delay_ms for j in queued if j.delay_ms is not None]
    if delays:
        return max(delays) / 1000
    return 0.0 if not queued else last
