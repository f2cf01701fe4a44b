"""The estimated cost of finished jobs, per endpoint and in all, and the hourly billing it is
reconciled with (metrics beyond spec/metrics.md: docs/metrics.md).

Each finished job with an `executionTime` is costed once (rules/spend.py `job_cost`: its
execution time, plus the idle timeout when its endpoint had nothing else queued or running,
times the worker's GPU price per second). Estimates, not RunPod's bill:
`runpod_endpoint_billed_usd_per_hour` is that, where REST v2 billing was read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from model.observation import (
    TERMINAL_JOB_STATUSES,
    EndpointConfig,
    EndpointSample,
    GpuStock,
    Job,
    Observation,
    Workers,
)
from monitor.metrics.renderer import JobHistogram
from rules.spend import job_cost, worker_price

# USD per job: a second on a 16 GB GPU is $0.00016, an hour on an H200 $5.58
COST_BUCKETS = (0.0001, 0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 50.0)
COST_FAMILIES = (
    "runpod_job_cost_estimated_usd",
    "runpod_jobs_cost_estimated_usd_total",
    "runpod_endpoint_billed_usd_per_hour",
)


class _Billed:
    """`runpod_endpoint_billed_usd_per_hour`: the family only once billing was read (a
    monitor that never reads it exposes no empty family), always at its registered place."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], float] = {}

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for (eid, name), value in self.values.items():
            family.add_metric([eid, name], value)
        return [family] if self.values else []

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "runpod_endpoint_billed_usd_per_hour",
            "What RunPod billed the endpoint in the last complete hour (REST v2 "
            "billing), to reconcile the estimates with. Beyond spec/metrics.md.",
            labels=["endpoint_id", "endpoint"],
        )


class JobCosts:
    """The cost families; the recorder feeds it each cycle and writes its text."""

    def __init__(
        self, registry: CollectorRegistry | None, first_time: Callable[[object], bool]
    ) -> None:
        """`registry`: where the families are registered (None: kept out of the exposition);
        `first_time(key)`: True the first time a job key is offered (bounded memory)."""
        ep = ["endpoint_id", "endpoint"]
        self._first_time = first_time
        self.histogram = Histogram(
            "runpod_job_cost_estimated_usd",
            "Estimated cost of each finished job (USD): execution time plus the idle "
            "timeout when its worker idled after it, at the GPU's serverless list price. "
            "An estimate beyond spec/metrics.md.",
            ep, buckets=COST_BUCKETS, registry=registry,
        )
        self.total = Counter(
            "runpod_jobs_cost_estimated_usd",
            "Estimated cost of every finished job seen since start, all endpoints (USD). "
            "An estimate beyond spec/metrics.md.",
            registry=registry,
        )
        self.billed = _Billed()
        if registry is not None:
            registry.register(self.billed)
        self._text = JobHistogram(self.histogram, "runpod_job_cost_estimated_usd", COST_BUCKETS)
        self._stock: tuple[GpuStock, ...] | None = None
        self._workers: dict[str, Workers] = {}

    def observe(
        self,
        obs: Observation,
        eid: str,
        name: str,
        sample: EndpointSample,
        config: EndpointConfig | None,
        tracked: Sequence[Job],
    ) -> None:
        """Cost the endpoint's jobs this cycle finished (each once) and set its billing."""
        if obs.gpu_stock is not None:
            self._stock = obs.gpu_stock
        if sample.workers is not None:
            self._workers[eid] = sample.workers
        if obs.endpoint_spend is not None and eid in obs.endpoint_spend:
            self.billed.values[(eid, name)] = obs.endpoint_spend[eid]
        h = sample.health
        idles_after = h is not None and h.in_queue == 0 and h.in_progress == 0
        idle = config.idle_timeout if config is not None else None
        for job in (*(sample.jobs or ()), *tracked):
            if job.status not in TERMINAL_JOB_STATUSES or job.execution_ms is None:
                continue
            if not self._first_time(("cost", eid, job.id)):
                continue
            price = worker_price(config, self._workers.get(eid), self._stock, job.worker_id)
            if price is None:
                continue
            cost = job_cost(job.execution_ms, idle, price, idles_after=idles_after)
            self._text.observe(eid, name, cost.usd)
            self.total.inc(cost.usd)

    def remove(self, eid: str, name: str) -> None:
        """Drop an endpoint's series (no longer watched, or renamed)."""
        self._text.remove(eid, name)
        self._workers.pop(eid, None)
        self.billed.values.pop((eid, name), None)

    def data(self) -> bytes:
        """The families' exposition, in their registration order."""
        text = self._text.data() + generate_latest(self.total)
        if not self.billed.values:
            return text
        return text + generate_latest(self.billed)
