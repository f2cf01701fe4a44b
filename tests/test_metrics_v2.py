"""The REST v2 facts in the metrics (issue 14 parts 2-3, issue 15): the budget, the v2 call
kinds in the probe metrics, worker restarts, stale workers, the endpoint version, GPU
availability and the billed spend, from scenarios replayed over the simulator (real HTTP)
and from observations built here."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from model.observation import (
    OK,
    RETIRED,
    SKIPPED,
    EndpointConfig,
    EndpointSample,
    GpuStock,
    Health,
    Observation,
    Worker,
    Workers,
)
from monitor.commands.replay import epoch_of
from monitor.config import load_settings
from monitor.metrics import CycleFacts, MonitorMetrics
from monitor.metrics.v2facts import MAX_GPU_SERIES, gpu_series
from monitor.pipeline.cycle import Pipeline, build_pipeline
from monitor.pipeline.probes import ProbeCall
from monitor.runpod.client import RunPodClient
from monitor.simulator import SimulatorServer, load_scenario
from rules import worker_records

SCENARIOS = Path(__file__).parent / "scenarios"
KEY = "sim-key-metrics-v2"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(m: MonitorMetrics) -> Samples:
    """Every sample of the exposition (checked equal to generate_latest's first)."""
    body = m.render()[0]
    assert body == generate_latest(m.registry)
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for f in text_string_to_metric_families(body.decode())
        for s in f.samples
    }


def of(got: Samples, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    return {k: v for (n, k), v in got.items()
            if n == name and set(labels.items()) <= set(k)}


class Run:
    """A scenario played by the simulator to a real pipeline over loopback HTTP."""

    def __init__(self, name: str, mode: str) -> None:
        self.scenario = load_scenario(SCENARIOS / name)
        overrides = {**self.scenario.monitor, "runpod": {
            **self.scenario.monitor.get("runpod", {}), "control_plane": mode}}
        self.settings = load_settings(None, env={}, overrides=overrides)
        self.server = SimulatorServer(self.scenario, KEY)
        self.epoch = epoch_of(self.scenario)
        self.pipeline: Pipeline | None = None
        self.cycle = 0

    async def start(self) -> RunPodClient:
        url = await self.server.start()
        client = RunPodClient(api_key=KEY, graphql_url=f"{url}/graphql",
                              rest_url=f"{url}/v2", timeout_s=5.0)
        await client.__aenter__()
        self.pipeline = build_pipeline(self.settings, client, sinks=[],
                                       interval_s=self.scenario.interval_s)
        return client

    async def to(self, cycle: int) -> MonitorMetrics:
        assert self.pipeline is not None
        while self.cycle < cycle:
            self.cycle += 1
            self.server.set_cycle(self.cycle)
            await self.pipeline.cycle(
                self.cycle, self.epoch + (self.cycle - 1) * self.scenario.interval_s)
        return self.pipeline.metrics


async def played(name: str, mode: str) -> AsyncIterator[Run]:
    run = Run(name, mode)
    client = await run.start()
    try:
        yield run
    finally:
        await client.__aexit__(None, None, None)
        await run.server.stop()


@pytest.fixture
async def crash_loop(request: pytest.FixtureRequest) -> AsyncIterator[Run]:
    async for run in played("v2/crash-loop-worker-records.yaml", request.param):
        yield run


@pytest.fixture
async def bad_release() -> AsyncIterator[Run]:
    async for run in played("v2-bad-release-unhealthy.yaml", "auto"):
        yield run


# -- over the simulator ------------------------------------------------------------------

EID = "c4r8w2k6m1x9zt"
EP = {"endpoint_id": EID, "endpoint": "whisper-large"}


@pytest.mark.parametrize("crash_loop", ["auto", "rest"], indirect=True)
async def test_restarts_counted_once_from_the_worker_records(crash_loop: Run) -> None:
    """Workers a, b, c, d die one after the other and e stays: 4 restarts, each counted
    once (the counter equals the rule's reading of all the records, cycle after cycle)."""
    m = await crash_loop.to(4)
    got = samples(m)
    assert of(got, "runpod_endpoint_worker_restarts_total", **EP) == {
        frozenset(EP.items()): 0.0}  # from 0 with the first record
    seen = []
    for k in range(5, crash_loop.scenario.total_cycles + 1):
        m = await crash_loop.to(k)
        value = one(samples(m), "runpod_endpoint_worker_restarts_total", **EP)
        assert crash_loop.pipeline is not None
        records = crash_loop.pipeline.history.view().worker_records(EID)
        assert value == len(worker_records.restarts(records)), k
        seen.append(value)
    assert seen[-1] == 4
    assert seen == sorted(seen)  # a counter
    got = samples(m)
    assert one(got, "runpod_endpoint_workers_stale", **EP) == 0
    assert one(got, "runpod_endpoint_version", **EP) >= 1


def one(got: Samples, name: str, **labels: str) -> float:
    found = of(got, name, **labels)
    assert len(found) == 1, (name, labels, found)
    return next(iter(found.values()))


@pytest.mark.parametrize("crash_loop", ["auto", "rest"], indirect=True)
async def test_budget_and_v2_probe_metrics_each_v2_cycle(crash_loop: Run) -> None:
    """In the v2 modes the budget families and the worker freshness appear; the v2 calls
    are in the probe metrics under their kinds."""
    m = await crash_loop.to(3)
    got = samples(m)
    v2 = "runpod_monitor_v2_budget"
    assert one(got, f"{v2}_quota", window="minute") == 60
    spent = one(got, f"{v2}_spent", window="minute")
    calls = sum(of(got, f"{v2}_calls_total").values())
    assert 0 < spent <= calls
    t = crash_loop.epoch + 2 * crash_loop.scenario.interval_s
    assert one(got, "runpod_endpoint_workers_seen_timestamp_seconds", **EP) <= t
    probes = {dict(k)["probe"] for k in of(got, "runpod_probe_duration_seconds_count")}
    assert {"health", "v2_endpoints", "v2_workers", "v2_balance"} <= probes
    assert one(got, "runpod_probe_last_success_timestamp_seconds", probe="v2_workers") == t


async def test_graphql_mode_has_no_v2_family() -> None:
    async for run in played("v2/crash-loop-worker-records.yaml", "graphql"):
        got = samples(await run.to(6))
        names = {n for n, _ in got}
        assert not any(n.startswith("runpod_monitor_v2_budget") for n in names)
        assert not {"runpod_endpoint_workers_seen_timestamp_seconds",
                    "runpod_endpoint_worker_restarts_total", "runpod_gpu_availability",
                    "runpod_endpoint_workers_stale"} & names


async def test_stale_workers_version_availability_and_billing(bad_release: Run) -> None:
    """Release 4 rolls out beside a stale release-3 worker; the rollback makes release 5
    on a fresh worker. The catalog has the 24 GB pool MEDIUM in US-TX-3, NONE in EU-RO-1."""
    eid = "r5b1a2d3e4l5zz"
    ep = {"endpoint_id": eid, "endpoint": "sdxl-prod"}
    got = samples(await bad_release.to(14))
    assert one(got, "runpod_endpoint_version", **ep) == 4
    assert one(got, "runpod_endpoint_workers_stale", **ep) == 1
    ada = of(got, "runpod_gpu_availability", pool="ADA_24")
    assert ada, "no ADA_24 availability"
    by_dc = {dict(k)["datacenter"]: v for k, v in ada.items()}
    assert by_dc[""] == 2
    assert by_dc["US-TX-3"] == 2
    assert by_dc.get("EU-RO-1", 0) == 0
    assert len(of(got, "runpod_gpu_availability")) <= MAX_GPU_SERIES
    assert one(got, "runpod_endpoint_billed_usd_per_hour", **ep) == pytest.approx(0.69)
    got = samples(await bad_release.to(bad_release.scenario.total_cycles))
    assert one(got, "runpod_endpoint_version", **ep) == 5
    assert one(got, "runpod_endpoint_workers_stale", **ep) == 0


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
async def test_v2_exposition_passes_promtool(bad_release: Run) -> None:
    body = (await bad_release.to(14)).render()[0]
    assert b"runpod_endpoint_workers_stale" in body
    assert b"runpod_gpu_availability" in body
    assert await asyncio.to_thread(promtool, body) == ""


def promtool(body: bytes) -> str:
    done = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                          timeout=30, check=False)
    return (done.stdout + done.stderr).decode().strip()


# -- from observations built here --------------------------------------------------------


def obs(t: float, workers: Workers | None = None, *, stock: tuple[GpuStock, ...] | None = None,
        ids: tuple[str, ...] = ("e1",)) -> Observation:
    return Observation(
        1, t, OK, listed_ids=frozenset(ids),
        endpoints={e: EndpointSample(e, OK, 200, Health(), None, True,
                                     EndpointConfig(e, f"name-{e}", gpu_ids="ADA_24"),
                                     workers=workers)
                   for e in ids},
        gpu_stock=stock,
    )


def w(*ids: str, started: float = 0.0, stale: bool = False) -> Workers:
    return Workers(3, tuple(Worker(i, "RUNNING", stale=stale, started_at=started) for i in ids))


def test_restart_counted_once_when_records_repeat() -> None:
    """The same record seen again adds nothing; a replaced id adds one; a restart in place
    (startedAt moved) adds one; an endpoint no longer watched loses its series."""
    m = MonitorMetrics(extensions=True)
    name = "runpod_endpoint_worker_restarts_total"
    ep = {"endpoint_id": "e1", "endpoint": "name-e1"}
    for t, record, want in [
        (0.0, w("a"), 0), (30.0, w("a"), 0), (60.0, w("b"), 1), (90.0, None, 1),
        (120.0, w("b"), 1), (150.0, w("b", started=140.0), 2),
    ]:
        m.observe_cycle(CycleFacts(obs(t, record)))
        assert one(samples(m), name, **ep) == want, t
    m.observe_cycle(CycleFacts(obs(180.0, ids=("e2",))))
    assert of(samples(m), name) == {}


def test_stale_counts_serving_workers_only() -> None:
    m = MonitorMetrics(extensions=True)
    record = Workers(7, (Worker("a", "RUNNING", stale=True), Worker("b", "IDLE", stale=True),
                         Worker("c", "INITIALIZING", stale=True), Worker("d", "RUNNING")))
    m.observe_cycle(CycleFacts(obs(0.0, record)))
    got = samples(m)
    assert one(got, "runpod_endpoint_workers_stale", endpoint_id="e1") == 2
    assert one(got, "runpod_endpoint_version", endpoint_id="e1") == 7


def test_availability_levels_and_bound() -> None:
    stock = (
        GpuStock("NVIDIA L4", "ADA_24", "LOW", (("US-TX-3", "HIGH"), ("EU-RO-1", "NONE"))),
        GpuStock("NVIDIA A40", "AMPERE_48", "SOMETIMES", (("US-KS-2", "MEDIUM"),)),
    )
    m = MonitorMetrics(extensions=True)
    m.observe_cycle(CycleFacts(obs(0.0, stock=stock)))
    got = of(samples(m), "runpod_gpu_availability")
    assert {(dict(k)["gpu_type"], dict(k)["datacenter"]): v for k, v in got.items()} == {
        ("NVIDIA L4", ""): 1, ("NVIDIA L4", "US-TX-3"): 3, ("NVIDIA L4", "EU-RO-1"): 0,
        ("NVIDIA A40", "US-KS-2"): 2,  # an unknown word is left out
    }
    # not read this cycle: the last read stands while it is recent (the catalog is read
    # every 15 min), then no availability series (unknown is not the last value)
    m.observe_cycle(CycleFacts(obs(30.0)))
    assert len(of(samples(m), "runpod_gpu_availability")) == 4
    m.observe_cycle(CycleFacts(obs(1830.0)))
    assert of(samples(m), "runpod_gpu_availability") == {}
    many = tuple(GpuStock(f"g{i}", "P", "HIGH", tuple((f"dc{j}", "LOW") for j in range(40)))
                 for i in range(40))
    mine = GpuStock("mine", "ADA_24", "HIGH")
    series = gpu_series((*many, mine), {"ADA_24"})
    assert len(series) == MAX_GPU_SERIES
    assert series[0] == ("mine", "ADA_24", "", 3)  # the watched pools first


@pytest.mark.parametrize(("outcome", "errors", "success"), [
    (OK, 0, True), ("http_5xx", 1, False), (RETIRED, 0, False), (SKIPPED, 0, False),
])
def test_v2_probe_kinds_retired_and_skipped(outcome: str, errors: int, success: bool) -> None:
    """A v2 call kind is its own probe label; an unknown name folds into "other"; retired
    counts no error (a state, not a failure) and a skipped call is not observed at all."""
    m = MonitorMetrics()
    calls = [ProbeCall("v2_catalog", outcome, 0, 0.2), ProbeCall("v2_new_kind", OK, 200, 0.1)]
    m.observe_cycle(CycleFacts(obs(100.0), calls=calls))
    got = samples(m)
    assert sum(of(got, "runpod_probe_errors_total", probe="v2_catalog").values()) == errors
    assert not of(got, "runpod_probe_errors_total", reason="retired")
    assert bool(of(got, "runpod_probe_last_success_timestamp_seconds",
                   probe="v2_catalog")) is success
    count = of(got, "runpod_probe_duration_seconds_count", probe="v2_catalog")
    assert sum(count.values()) == (0 if outcome == SKIPPED else 1)
    assert of(got, "runpod_probe_duration_seconds_count", probe="other")
    assert not of(got, "runpod_probe_duration_seconds_count", probe="v2_new_kind")
