"""Rate limits and backpressure: Retry-After, exponential back-off, RunPod's per-endpoint
limits (measured by the simulator), and cycles that skip instead of piling up."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SimClient
from prometheus_client.parser import text_string_to_metric_families

from model.observation import SKIPPED
from monitor.commands.daemon import Daemon
from monitor.config import settings_from_dict
from monitor.metrics import CycleFacts, MonitorMetrics
from monitor.pipeline.jobs import JobTracker
from monitor.pipeline.probes import BACKOFF_CAP_S, Prober, ProbeReport, backoff_jitter, backoff_s
from monitor.runpod.client import RUNPOD_LIMITS, RunPodClient
from monitor.simulator import Scenario, SimulatorServer
from monitor.simulator.server import RATE_LIMITS

KEY = "bp-test-key-0123456789abcdef"
EP = "bpendpoint01"
INTERVAL = 30.0
T0 = 1_767_225_600.0

HEALTHY = {"jobs": {"inProgress": 1, "completed": 5},
           "workers": {"running": 1, "idle": 0}}


def endpoint(eid: str = EP, **extra: Any) -> dict[str, Any]:
    return {"id": eid, "name": f"name-{eid}", "gpuIds": "AMPERE_48,ADA_48_PRO", "workersMin": 0,
            "workersMax": 3, "template": {"id": "tpl", "name": "w", "imageName": "u/w:1",
                                          "dockerArgs": "", "containerDiskInGb": 50, "env": []},
            "health": HEALTHY, **extra}


def scenario(steps: list[dict[str, Any]], *, endpoints: int = 1, **top: Any) -> Scenario:
    eps = [endpoint(EP if i == 0 else f"bpendpoint{i + 1:02d}") for i in range(endpoints)]
    return Scenario.from_dict({
        "name": "backpressure", "interval_s": INTERVAL,
        "account": {"clientBalance": 500.0, "currentSpendPerHr": 0.5},
        "endpoints": eps, "steps": steps, **top,
    })


Drive = Callable[[Scenario], Awaitable[tuple[SimulatorServer, Prober]]]


@pytest.fixture
def drive(sim_client: SimClient) -> Drive:
    """Factory: a simulator on loopback for `scenario` and a Prober with a real client."""

    async def start(sc: Scenario) -> tuple[SimulatorServer, Prober]:
        server, client = await sim_client(sc, KEY, server={"timeout_hold_s": 5.0},
                                          timeout_s=1.0)
        return server, Prober(client)

    return start


async def run_cycles(
    server: SimulatorServer, prober: Prober, cycles: int, target: tuple[str, str]
) -> tuple[list[int], list[ProbeReport]]:
    """Run `cycles` probe cycles; the cycles in which the server received `target`."""
    called: list[int] = []
    reports: list[ProbeReport] = []
    for k in range(1, cycles + 1):
        server.set_cycle(k)
        before = server.request_counts[target]
        reports.append(await prober.probe(k, T0 + (k - 1) * INTERVAL))
        if server.request_counts[target] > before:
            called.append(k)
    return called, reports


# ---------------------------------------------------------------- Retry-After


async def test_rest_retry_after_blocks_the_endpoint_until_it_passes(drive: Drive) -> None:
    """A REST 429 with Retry-After: 100 s blocks the endpoint's data plane until then, exactly."""
    sc = scenario([
        {"cycles": 1},
        {"cycles": 1, "endpoints": {EP: {"rest": {"code": 429, "retry_after": 100}}}},
        {"cycles": 6, "endpoints": {EP: {"rest": "ok"}}},
    ])
    server, prober = await drive(sc)
    called, reports = await run_cycles(server, prober, 8, (EP, "health"))
    assert called == [1, 2, 6, 7, 8]  # 30 + 100 = 130 s: cycle 6 (150 s) is the first after
    for k in (3, 4, 5):  # not sent: no outcome, no status, nothing known
        sample = reports[k - 1].observation.endpoints[EP]
        assert sample.health_outcome == SKIPPED
        assert sample.http_status == 0
        assert sample.health is None
        assert sample.jobs is None
    assert server.request_counts[(EP, "requests")] == 4  # not after the 429 of /health
    assert reports[5].observation.endpoints[EP].health_outcome == "ok"


async def test_graphql_retry_after_blocks_graphql_only(drive: Drive) -> None:
    """A GraphQL 429 with Retry-After blocks GraphQL only; the data plane is probed every cycle."""
    sc = scenario([
        {"cycles": 1},
        {"cycles": 1, "graphql": {"code": 429, "retry_after": 65}},
        {"cycles": 4, "graphql": "ok"},
    ])
    server, prober = await drive(sc)
    called, reports = await run_cycles(server, prober, 6, ("graphql", "myself"))
    assert called == [1, 2, 5, 6]  # 30 + 65 = 95 s: cycle 5 (120 s)
    assert [r.observation.control_outcome for r in reports] == [
        "ok", "http_429", SKIPPED, SKIPPED, "ok", "ok"]
    assert server.request_counts[(EP, "health")] == 6


# ---------------------------------------------------------------- /requests only when useful


async def test_requests_is_asked_only_while_jobs_move(drive: Drive) -> None:
    """/requests (10 per 10 s per endpoint) is skipped while /health shows an idle endpoint."""
    idle = {"jobs": {"inQueue": 0, "inProgress": 0}, "workers": {"running": 0}}
    sc = scenario([
        {"cycles": 3, "endpoints": {EP: {"health": idle}}},
        {"cycles": 1, "endpoints": {EP: {"health": {"jobs": {"inQueue": 2}},
                                         "jobs": [{"id": "j1", "status": "IN_QUEUE"},
                                                  {"id": "j2", "status": "IN_QUEUE"}]}}},
        {"cycles": 1, "endpoints": {EP: {"health": {"jobs": {"inQueue": 0, "completed": 7}},
                                         "jobs": [{"id": "j1", "status": "COMPLETED"},
                                                  {"id": "j2", "status": "COMPLETED"}]}}},
        {"cycles": 3},
        {"cycles": 1, "endpoints": {EP: {"health": {"jobs": {"failed": 1}},
                                         "jobs": [{"id": "j3", "status": "FAILED",
                                                   "error": "boom"}]}}},
        {"cycles": 1},
    ])
    server, prober = await drive(sc)
    called, reports = await run_cycles(server, prober, 10, (EP, "requests"))
    # 1: nothing known yet; 4: jobs queued; 5: the queued ones finished (counter moved);
    # 9: a failure (its error is evidence for job_failures)
    assert called == [1, 4, 5, 9]
    jobs = [r.observation.endpoints[EP].jobs for r in reports]
    assert jobs[1] == jobs[2] == jobs[5] == ()  # idle: known empty, not unknown
    assert [j.id for j in jobs[3] or ()] == ["j1", "j2"]
    assert [(j.id, j.error) for j in jobs[8] or ()] == [("j3", "boom")]
    assert server.request_counts[(EP, "health")] == 10


async def test_requests_is_not_asked_when_health_failed(drive: Drive) -> None:
    """A failed /health leaves the jobs unknown without a second call to a failing endpoint."""
    sc = scenario([
        {"cycles": 1},
        {"cycles": 2, "endpoints": {EP: {"rest": 500}}},
    ])
    server, prober = await drive(sc)
    called, reports = await run_cycles(server, prober, 2, (EP, "requests"))
    assert called == [1]
    assert reports[1].observation.endpoints[EP].jobs is None


async def test_job_polling_waits_out_the_endpoints_retry_after(drive: Drive) -> None:
    """/status of tracked jobs honours the endpoint's Retry-After, seen by /health or by itself."""
    job = [{"id": "job-1", "status": "IN_QUEUE"}]
    sc = scenario([
        {"cycles": 1, "endpoints": {EP: {"jobs": job}}},
        {"cycles": 1, "endpoints": {EP: {"rest": {"code": 429, "retry_after": 100}}}},
        {"cycles": 6, "endpoints": {EP: {"rest": "ok"}}},
    ])
    server, prober = await drive(sc)
    tracker = JobTracker()
    tracker.register(EP, "job-1", T0)
    for with_probe in (True, False):  # the gate closed by /health, then by /status alone
        called = []
        for k in range(1, 9):
            server.set_cycle(k)
            t = T0 + (k - 1) * INTERVAL + (1000 if not with_probe else 0)
            if with_probe:
                await prober.probe(k, t)
            before = server.request_counts[(EP, "status")]
            await tracker.poll(prober.client, t, prober)
            if server.request_counts[(EP, "status")] > before:
                called.append(k)
        # 30 + 100 s: cycle 6 (150 s) is the first after; without probes /status saw the 429
        assert called == ([1, 6, 7, 8] if with_probe else [1, 2, 6, 7, 8])
        assert tracker.tracked() == [(EP, "job-1")]


# ---------------------------------------------------------------- exponential back-off


def test_backoff_schedule_and_jitter() -> None:
    """The pause doubles from one interval to 5 min; jitter is in [0.5, 1) and deterministic."""
    assert [backoff_s(30, k) for k in range(7)] == [0, 30, 60, 120, 240, 300, 300]
    assert backoff_s(1, 40) == BACKOFF_CAP_S
    values = [backoff_jitter(f"ep{i}", 3, 1000.0) for i in range(500)]
    assert all(0.5 <= v < 1 for v in values)
    assert backoff_jitter("ep1", 3, 1000.0) == backoff_jitter("ep1", 3, 1000.0)
    assert len(set(values)) == 500
    assert min(values) < 0.55
    assert max(values) > 0.95


async def test_persistent_5xx_backs_off_exponentially_then_recovers(drive: Drive) -> None:
    """A lasting 5xx is probed ever more rarely (within the formula), then every cycle again."""
    sc = scenario([
        {"cycles": 1},
        {"cycles": 80, "endpoints": {EP: {"rest": 500}}, "graphql": 503},
        {"cycles": 20, "endpoints": {EP: {"rest": "ok"}}, "graphql": "ok"},
    ])
    server, prober = await drive(sc)
    called, reports = await run_cycles(server, prober, 101, (EP, "health"))
    failing = [k for k in called if 2 <= k <= 81]
    gaps = [(b - a) * INTERVAL for a, b in itertools.pairwise(failing)]
    assert gaps, failing
    for k, gap in enumerate(gaps, start=1):  # the gap after the k-th consecutive failure
        pause = backoff_s(INTERVAL, k)
        assert max(INTERVAL, 0.5 * pause - INTERVAL / 2) <= gap <= pause + INTERVAL / 2, (k, gaps)
    assert max(gaps) <= BACKOFF_CAP_S + INTERVAL / 2
    assert len(failing) < 25  # 80 failing cycles, far fewer calls
    # a skipped cycle sent nothing: its sample is unknown, not another failure
    skipped = [k for k in range(2, 82) if k not in called]
    assert skipped
    for k in skipped:
        assert reports[k - 1].observation.endpoints[EP].health_outcome == SKIPPED
    for k in called:
        assert reports[k - 1].observation.endpoints[EP].health_outcome != SKIPPED
    # GraphQL backed off too, on its own schedule
    assert prober.skipped.get("graphql", 0) > 40
    # after the outage: the first due probe succeeds, then every cycle is probed
    first_ok = next(k for k in called if k > 81)
    assert first_ok <= 81 + math.ceil(BACKOFF_CAP_S / INTERVAL)
    assert [k for k in called if k >= first_ok] == list(range(first_ok, 102))


async def test_skipped_probes_are_not_counted_as_failures_in_metrics(drive: Drive) -> None:
    """runpod_probe_errors_total counts the /health calls sent and failed, not the cycles
    skipped by the back-off; the status gauges keep the last probe that was sent."""
    sc = scenario([
        {"cycles": 1},
        {"cycles": 30, "endpoints": {EP: {"rest": 500}}},
    ])
    server, prober = await drive(sc)
    metrics = MonitorMetrics()
    sent_500 = 0
    skipped = 0
    for k in range(1, 32):
        server.set_cycle(k)
        before = server.request_counts[(EP, "health")]
        report = await prober.probe(k, T0 + (k - 1) * INTERVAL)
        metrics.observe_cycle(CycleFacts(report.observation, calls=report.calls,
                                         listed=report.listed))
        if server.request_counts[(EP, "health")] > before:
            sent_500 += k > 1
        else:
            skipped += 1
            assert k > 2  # the first failure never skips a cycle
            # a cycle that sent nothing still shows the last answer: 500, down
            assert _gauge(metrics, "runpod_endpoint_http_status") == 500
            assert _gauge(metrics, "runpod_endpoint_up") == 0
    assert skipped > 10
    assert prober.skipped[EP] == skipped
    assert _gauge(metrics, "runpod_probe_errors_total", probe="health",
                  reason="http_5xx") == sent_500


def _gauge(m: MonitorMetrics, name: str, **labels: str) -> float:
    body, _ = m.render()
    found = [s.value for f in text_string_to_metric_families(body.decode()) for s in f.samples
             if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) == 1, (name, labels, found)
    return found[0]


async def test_retry_after_from_job_polls_leaves_health_unknown(drive: Drive) -> None:
    """A /status Retry-After closes the data plane: the next /health is skipped and its
    sample is unknown, not the endpoint's last failure (an old 404) replayed as news."""
    job = [{"id": "job-1", "status": "IN_QUEUE"}]
    sc = scenario([
        {"cycles": 1, "endpoints": {EP: {"rest": 404}}},
        {"cycles": 1, "endpoints": {EP: {"rest": "ok", "jobs": job}}},
        {"cycles": 1, "endpoints": {EP: {"rest": {"code": 429, "retry_after": 100}}}},
    ])
    server, prober = await drive(sc)
    tracker = JobTracker()
    tracker.register(EP, "job-1", T0)
    outcomes = []
    for k in (1, 2, 3):
        server.set_cycle(k)
        t = T0 + (k - 1) * INTERVAL
        if k == 3:  # the poll between two cycles meets the 429 first
            await tracker.poll(prober.client, t, prober)
        outcomes.append((await prober.probe(k, t)).observation.endpoints[EP])
    assert [s.health_outcome for s in outcomes] == ["http_404", "ok", SKIPPED]
    assert server.request_counts[(EP, "health")] == 2
    assert outcomes[2].http_status == 0
    assert not outcomes[2].health_known


async def test_auth_and_404_answers_do_not_back_off(drive: Drive) -> None:
    """401 and 404 are answers, not overload: they are probed every cycle."""
    sc = scenario([
        {"cycles": 1},
        {"cycles": 5, "endpoints": {EP: {"rest": 401}}},
        {"cycles": 5, "endpoints": {EP: {"rest": 404}}},
    ])
    server, prober = await drive(sc)
    called, _ = await run_cycles(server, prober, 11, (EP, "health"))
    assert called == list(range(1, 12))


# ---------------------------------------------------------------- the client's limiter


async def test_client_limiter_keeps_requests_within_runpod_limits() -> None:
    """25 /requests at once: 10 sent (<= 2 in flight), 15 refused at once without being sent."""
    sc = scenario([{"cycles": 1}])
    server = SimulatorServer(sc, KEY)
    url = await server.start()
    try:
        async with RunPodClient(api_key=KEY, graphql_url=f"{url}/graphql",
                                rest_url=f"{url}/v2", timeout_s=0.5,
                                limits=RUNPOD_LIMITS) as client:
            started = time.monotonic()
            results = await asyncio.gather(*(client.requests(EP) for _ in range(25)))
            elapsed = time.monotonic() - started
    finally:
        await server.stop()
    kinds = [getattr(r, "kind", "ok") for r in results]
    assert kinds.count("ok") == 10
    assert kinds.count("http_429") == 15
    assert server.request_counts[(EP, "requests")] == 10
    assert server.rate_peaks[(EP, "requests")] == 10
    assert server.concurrency_peaks[(EP, "requests")] <= 2
    assert elapsed < 2.0  # refused calls do not wait out the window


# ---------------------------------------------------------------- the daemon


def daemon_settings(url: str, tmp_path: Path, **runpod: Any) -> Any:
    return settings_from_dict({
        "interval_s": 1,
        "runpod": {"api_key": KEY, "graphql_url": f"{url}/graphql", "rest_url": f"{url}/v2",
                   **runpod},
        "http": {"listen": "127.0.0.1:0"},
        "state": {"path": str(tmp_path / "state.db")},
        "log": {"level": "warning"},
    }, env={})


async def test_daemon_at_1s_with_many_jobs_stays_within_runpod_limits(tmp_path: Path) -> None:
    """The daemon at interval_s=1 with 150 jobs stays within every published per-endpoint limit."""
    queued = {"jobs": {"inQueue": 0}, "workers": {"running": 0, "idle": 0}}
    sc = Scenario.from_dict({
        "name": "limits", "interval_s": 1,
        "account": {"clientBalance": 500.0, "currentSpendPerHr": 0.5},
        "endpoints": [endpoint(), endpoint("bpendpoint02", health=queued)],
        "steps": [{"cycles": 1000}],
    })
    server = SimulatorServer(sc, KEY, realtime=True)
    url = await server.start()
    daemon = Daemon(daemon_settings(url, tmp_path, timeout_s=2.0), sinks=[])
    try:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as submit:
            ids = []
            for _ in range(150):  # no worker on bpendpoint02: they stay queued, polled each cycle
                r = await submit.post(f"{url}/v2/bpendpoint02/run", json={"input": {}})
                ids.append(r.json()["id"])
        for job_id in ids:
            assert daemon.register_job("bpendpoint02", job_id)
        await daemon.start()
        await asyncio.sleep(12.5)
    finally:
        await daemon.stop(grace_s=3)
        await server.stop()
    peaks = dict(server.rate_peaks)
    concurrency = dict(server.concurrency_peaks)
    print("rate peaks per 10 s:", peaks, "concurrency peaks:", concurrency)
    # the run put real load on the limits (how much depends on the machine's load: the
    # bound only proves the traffic was substantial, the limits below are what is tested)
    assert peaks[("bpendpoint02", "status")] >= 300
    assert peaks[(EP, "requests")] >= 4
    for (eid, op), peak in peaks.items():
        if op in RATE_LIMITS:
            per_window, concurrent = RATE_LIMITS[op]
            assert peak <= per_window, (eid, op, peak)
            if concurrent is not None:
                assert concurrency[(eid, op)] <= concurrent, (eid, op)
    assert daemon.cycle_no >= 4


async def test_slow_runpod_makes_cycles_skip_not_pile_up(tmp_path: Path) -> None:
    """A RunPod slower than the interval makes cycles skip (counted, logged), one in flight."""
    sc = Scenario.from_dict({
        "name": "slow", "interval_s": 1,
        "account": {"clientBalance": 500.0, "currentSpendPerHr": 0.5},
        "endpoints": [endpoint()],
        "steps": [{"cycles": 1000, "graphql": "timeout", "endpoints": {EP: {"rest": "timeout"}}}],
    })
    server = SimulatorServer(sc, KEY, realtime=True, timeout_hold_s=10.0)
    url = await server.start()
    daemon = Daemon(daemon_settings(url, tmp_path, timeout_s=2.5), sinks=[])
    inflight = 0
    most = 0
    real_tick = daemon.tick

    async def tick() -> None:
        nonlocal inflight, most
        inflight += 1
        most = max(most, inflight)
        try:
            await real_tick()
        finally:
            inflight -= 1

    daemon.tick = tick  # type: ignore[method-assign]
    try:
        await daemon.start()
        await asyncio.sleep(6.5)
        body, _ = daemon.metrics_body()
    finally:
        await daemon.stop(grace_s=5)
        await server.stop()
    line = next(x for x in body.decode().splitlines()
                if x.startswith("runpod_monitor_cycles_skipped_total "))
    print(f"cycles run: {daemon.cycle_no}, skipped: {daemon.skipped}, at once: {most}")
    assert most == 1
    assert daemon.skipped >= 2
    assert float(line.split()[1]) == daemon.skipped
