"""The completion sampler: COMPLETED jobs `/requests` listed, read once each through
`/status` (for empty_output), within a per-endpoint and per-cycle budget far inside RunPod's
data-plane limits; over the simulator for the calls actually sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from model.observation import Job
from monitor.config import load_settings
from monitor.pipeline.cycle import build_pipeline
from monitor.pipeline.jobs import SAMPLE_PER_ENDPOINT, JobTracker
from monitor.runpod.client import RUNPOD_LIMITS, RunPodClient
from monitor.simulator import Scenario, SimulatorServer

KEY = "sampler-test-key-0123456789"
EP = "smendpoint01"
INTERVAL = 30.0


def done(n: int, start: int = 0) -> list[Job]:
    return [Job(f"j{i}", "COMPLETED", 10, 1000) for i in range(start, start + n)]


def test_at_most_the_budget_per_endpoint_and_per_cycle_each_job_once() -> None:
    tracker = JobTracker(sample_per_endpoint=2, sample_per_cycle=3)
    assert tracker.sample_completed("a", done(5), 0.0) == 2
    assert tracker.sample_completed("b", done(5), 0.0) == 1  # the cycle's cap of 3
    assert tracker.sample_completed("c", done(5), 0.0) == 0
    assert len(tracker) == 3
    assert tracker.tracked() == []  # samples are not the user's registered jobs
    assert tracker.sample_completed("a", done(5), 30.0) == 2  # a new cycle: j2, j3
    assert sorted(j for e, j in tracker._jobs if e == "a") == ["j0", "j1", "j2", "j3"]


def test_only_completed_jobs_not_tracked_already() -> None:
    tracker = JobTracker()
    assert tracker.register("a", "j0", 0.0)
    jobs = [Job("q", "IN_QUEUE"), Job("r", "IN_PROGRESS"), Job("f", "FAILED"), *done(1)]
    assert tracker.sample_completed("a", jobs, 0.0) == 0  # j0 is registered
    assert tracker.tracked() == [("a", "j0")]


def test_the_sample_never_fills_the_tracker_or_exceeds_the_status_concurrency() -> None:
    full = JobTracker(max_jobs=1)
    assert full.sample_completed("a", done(3), 0.0) == 1
    assert full.sample_completed("a", done(3, 3), 30.0) == 0
    many = JobTracker(sample_per_endpoint=20)
    cap = RUNPOD_LIMITS["status"].concurrent
    for i in range(cap - 1):
        many.register("a", f"reg-{i}", 0.0)
    assert many.sample_completed("a", done(10), 0.0) == 1


def test_disabled_with_zero() -> None:
    assert JobTracker(sample_per_endpoint=0).sample_completed("a", done(3), 0.0) == 0


@pytest.fixture
async def sim() -> AsyncIterator[tuple[SimulatorServer, RunPodClient]]:
    jobs: list[dict[str, Any]] = [
        {"id": f"c{i}", "status": "COMPLETED", "delayTime": 100, "executionTime": 4000,
         **({"output": None} if i % 2 else {"output": {"text": "x" * i}})}
        for i in range(5)
    ]
    sc = Scenario.from_dict({
        "name": "sampler", "interval_s": INTERVAL,
        "account": {"clientBalance": 500.0, "currentSpendPerHr": 0.5},
        "endpoints": [{
            "id": EP, "name": "sm-endpoint", "gpuIds": "ADA_24", "workersMin": 0,
            "workersMax": 1, "idleTimeout": 5,
            "template": {"id": "tpl-sm", "name": "sm", "imageName": "u/sm:1",
                         "dockerArgs": "", "containerDiskInGb": 50, "env": []},
            "health": {"jobs": {"completed": 5}, "workers": {"idle": 1}},
        }],
        # the completed count moves every cycle, so /requests is read every cycle
        "steps": [{"cycles": 1, "endpoints": {EP: {"jobs": jobs, "health": {
            "jobs": {"completed": 5 + k}}}}} for k in range(5)],
    })
    server = SimulatorServer(sc, KEY)
    url = await server.start()
    client = RunPodClient(api_key=KEY, graphql_url=f"{url}/graphql", rest_url=f"{url}/v2",
                          timeout_s=2.0)
    yield server, client
    await client.aclose()
    await server.stop()


async def test_completions_are_read_once_within_budget_over_http(
    sim: tuple[SimulatorServer, RunPodClient],
) -> None:
    """5 completions /requests keeps listing: 2 /status reads a cycle, each job once; their
    answers reach the observation with the output's kind, never its content."""
    server, client = sim
    pipeline = build_pipeline(load_settings(None, env={}), client, sinks=[])
    per_cycle = []
    kinds: dict[str, tuple[str | None, int | None]] = {}
    for k in range(1, 6):
        server.set_cycle(k)
        before = server.request_counts[(EP, "status")]
        result = await pipeline.cycle(k, (k - 1) * INTERVAL)
        per_cycle.append(server.request_counts[(EP, "status")] - before)
        for t in result.observation.tracked_jobs:
            kinds[t.job.id] = (t.job.output_kind, t.job.output_bytes)
    assert per_cycle == [2, 2, 1, 0, 0]
    assert max(per_cycle) <= SAMPLE_PER_ENDPOINT
    assert kinds == {"c0": ("value", 11), "c1": ("null", None), "c2": ("value", 13),
                     "c3": ("null", None), "c4": ("value", 15)}
    assert pipeline.jobs.tracked() == []


async def test_simulator_serves_scripted_outputs_on_status_only_as_scripted() -> None:
    """The scenario keys: `output` as given (null included), none given -> a placeholder,
    `noOutput: true` -> no key; `noOutput` itself is never served."""
    jobs = [
        {"id": "given", "status": "COMPLETED", "output": {"a": 1}},
        {"id": "null", "status": "COMPLETED", "output": None},
        {"id": "default", "status": "COMPLETED"},
        {"id": "absent", "status": "COMPLETED", "noOutput": True},
        {"id": "running", "status": "IN_PROGRESS"},
    ]
    sc = Scenario.from_dict({
        "name": "outputs", "interval_s": INTERVAL, "account": {"clientBalance": 5.0},
        "endpoints": [{"id": EP, "name": "o", "gpuIds": "ADA_24", "workersMin": 0,
                       "workersMax": 1, "jobs": jobs}],
        "steps": [{"cycles": 1}],
    })
    server = SimulatorServer(sc, KEY)
    url = await server.start()
    try:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as http:
            async def status(jid: str) -> dict[str, Any]:
                body: dict[str, Any] = (await http.get(f"{url}/v2/{EP}/status/{jid}")).json()
                return body
            assert (await status("given"))["output"] == {"a": 1}
            null = await status("null")
            assert "output" in null
            assert null["output"] is None
            assert (await status("default"))["output"] == {"ok": True}
            absent = await status("absent")
            assert "output" not in absent
            assert "noOutput" not in absent
            assert "output" not in await status("running")
            listed = (await http.get(f"{url}/v2/{EP}/requests")).json()["requests"]
            assert all("noOutput" not in j for j in listed)
    finally:
        await server.stop()
