"""The metrics of spec/metrics.md as collectors: the label vocabulary and buckets, and the
snapshot gauges (account, endpoints, active diagnoses) yielded from an immutable snapshot
replaced once per cycle, so the series of an endpoint no longer watched vanish with the
cycle that stopped watching it.

Label values come only from ids, names and configuration (endpoint ids and names, `gpuIds`,
volume ids and datacenters, diagnosis codes, probe and sink names); never from a job's
output or error, a template's environment, or a diagnosis's text or evidence.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from model.observation import (
    WORKER_STATES,
    Account,
    Health,
)

# `delayTime` and `executionTime`: a warm worker answers in a second, a cold start or a long
# job takes minutes to hours.
JOB_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)

# One HTTP call to RunPod; the client's timeouts are tens of seconds.
PROBE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# One whole cycle: the calls run concurrently, so about the slowest one plus the rules.
CYCLE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

# How many job ids the job histograms remember, to observe each job once.
SEEN_JOBS_MAX = 50_000

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

# The `probe` label: the contract's four, then one per REST v2 call kind
# (monitor/pipeline/control.py `Call.probe`); any other name folds into "other", so the
# label stays bounded.
PROBES = (
    "graphql", "health", "requests", "status",
    "v2_endpoints", "v2_workers", "v2_releases", "v2_logs", "v2_balance",
    "v2_account_limits", "v2_billing", "v2_network_volumes", "v2_pods", "v2_catalog",
)
_PROBE_SET = frozenset(PROBES)


def probe_label(probe: str) -> str:
    """The bounded `probe` label of a call."""
    return probe if probe in _PROBE_SET else "other"

# Metrics the daemon exposes beyond spec/metrics.md (MonitorMetrics(extensions=True)).
EXTENSIONS = (
    "runpod_monitor_cycles_skipped_total",
    "runpod_monitor_v2_budget_quota",
    "runpod_monitor_v2_budget_remaining",
    "runpod_monitor_v2_budget_spent",
    "runpod_monitor_v2_budget_allowance",
    "runpod_monitor_v2_budget_exempt",
    "runpod_monitor_v2_budget_calls_total",
    "runpod_monitor_v2_budget_throttled_total",
    "runpod_monitor_v2_budget_malformed_headers_total",
    "runpod_endpoint_workers_seen_timestamp_seconds",
    # monitor/metrics/v2facts.py
    "runpod_endpoint_worker_restarts_total",
    "runpod_endpoint_workers_stale",
    "runpod_endpoint_version",
    "runpod_gpu_availability",
    # monitor/metrics/costs.py
    "runpod_job_cost_estimated_usd",
    "runpod_jobs_cost_estimated_usd_total",
    "runpod_endpoint_billed_usd_per_hour",
)

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

    def update(self, snapshot: Snapshot) -> None:
        """Replace the snapshot (one reference swap: a concurrent scrape sees old or new)."""
        self.snapshot = snapshot

    def describe(self) -> Iterable[Metric]:
        return self.families(Snapshot())

    def collect(self) -> Iterable[Metric]:
        return self.families(self.snapshot)

    @staticmethod
    def families(snap: Snapshot) -> list[Metric]:
        """The families of `snap`, in the order the exposition writes them."""
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
                for state in WORKER_STATES:
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


@dataclass(frozen=True, slots=True)
class BudgetSnapshot:
    """The REST v2 budget families' content (docs/metrics.md), replaced once per cycle."""

    windows: tuple[tuple[str, int, int, int], ...] = ()  # (window, quota, remaining, spent)
    allowance: int = 0
    exempt: bool = False
    calls: tuple[tuple[str, int], ...] = ()  # (kind, calls since start)
    throttled: int = 0
    malformed_headers: int = 0
    # (endpoint_id, endpoint, unix time of its freshest /workers answer), watched ones only
    workers_seen: tuple[tuple[str, str, float], ...] = ()


class BudgetCollector:
    """The REST v2 budget (monitor.pipeline.budget): the windows as the monitor reads them,
    calls and 429s, and per endpoint when its worker data last arrived. Extensions: registered only
    with `MonitorMetrics(extensions=True)`; no family before the first reading.
    """

    def __init__(self) -> None:
        self.snapshot: BudgetSnapshot | None = None

    def update(self, snapshot: BudgetSnapshot) -> None:
        self.snapshot = snapshot

    def describe(self) -> Iterable[Metric]:
        return self.families(None)

    def collect(self) -> Iterable[Metric]:
        # nothing before the first reading: a monitor that keeps no budget (GraphQL mode)
        # shows no empty families
        return [] if self.snapshot is None else self.families(self.snapshot)

    @staticmethod
    def families(snap: BudgetSnapshot | None) -> list[Metric]:
        """The families of `snap`, in the order the exposition writes them."""
        v2 = "runpod_monitor_v2_budget"
        quota = GaugeMetricFamily(
            f"{v2}_quota",
            "REST v2 calls RunPod allows per window (RateLimit-Policy; the schema example "
            "until the first answer; the pacing ceiling while the key is exempt). An addition "
            "beyond spec/metrics.md.",
            labels=["window"],
        )
        remaining = GaugeMetricFamily(
            f"{v2}_remaining",
            "REST v2 calls the monitor may still make in the current window: the stricter of "
            "RateLimit's remaining and its own count. An addition beyond spec/metrics.md.",
            labels=["window"],
        )
        spent = GaugeMetricFamily(
            f"{v2}_spent",
            "REST v2 calls the monitor sent in the current window. An addition beyond "
            "spec/metrics.md.",
            labels=["window"],
        )
        allowance = GaugeMetricFamily(
            f"{v2}_allowance",
            "REST v2 calls the last cycle was allowed (the windows paced evenly over the "
            "cycles left in them). An addition beyond spec/metrics.md.",
        )
        exempt = GaugeMetricFamily(
            f"{v2}_exempt",
            "1 while RunPod's answers carry no RateLimit headers (a rate-limit-exempt key, "
            "paced at a configured ceiling). An addition beyond spec/metrics.md.",
        )
        calls = CounterMetricFamily(
            f"{v2}_calls",
            "REST v2 calls sent, by kind: workers, releases, list, balance, account_limits, "
            "billing, network_volumes, pods, catalog, logs, other. An addition beyond "
            "spec/metrics.md.",
            labels=["kind"],
        )
        throttled = CounterMetricFamily(
            f"{v2}_throttled",
            "REST v2 answers 429 (the per-user quota). An addition beyond spec/metrics.md.",
        )
        malformed = CounterMetricFamily(
            f"{v2}_malformed_headers",
            "RateLimit / RateLimit-Policy headers ignored as malformed. An addition beyond "
            "spec/metrics.md.",
        )
        seen = GaugeMetricFamily(
            "runpod_endpoint_workers_seen_timestamp_seconds",
            "Unix time of the endpoint's freshest REST v2 worker data (/workers); its age is "
            "time() minus this. Absent before the first. An addition beyond spec/metrics.md. "
            f"{_POLLED}",
            labels=["endpoint_id", "endpoint"],
        )
        if snap is not None:
            for name, q, left, used in snap.windows:
                quota.add_metric([name], q)
                remaining.add_metric([name], left)
                spent.add_metric([name], used)
            allowance.add_metric([], snap.allowance)
            exempt.add_metric([], 1 if snap.exempt else 0)
            for kind, n in snap.calls:
                calls.add_metric([kind], n)
            throttled.add_metric([], snap.throttled)
            malformed.add_metric([], snap.malformed_headers)
            for eid, endpoint, t in snap.workers_seen:
                seen.add_metric([eid, endpoint], t)
        return [quota, remaining, spent, allowance, exempt, calls, throttled, malformed, seen]
