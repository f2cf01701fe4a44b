"""The pipeline as one cycle: tracked jobs in the observation, snapshot and restore through
the store, and the sink interface the pipeline and the outbox call (over the simulator)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytest
from conftest import SimClient
from prometheus_client.parser import text_string_to_metric_families

from model.observation import Job, TrackedJob
from monitor.alerts.model import Message, Sink
from monitor.config import load_settings
from monitor.pipeline.cycle import Pipeline, build_pipeline
from monitor.simulator import Scenario
from monitor.state.store import Store

KEY = "pipeline-test-key-0123456789"
EP = "plendpoint01"
INTERVAL = 30.0
T0 = 1_767_225_600.0


def scenario(steps: list[dict[str, Any]]) -> Scenario:
    return Scenario.from_dict({
        "name": "pipeline", "interval_s": INTERVAL,
        "account": {"clientBalance": 500.0, "currentSpendPerHr": 0.5},
        "endpoints": [{
            "id": EP, "name": "pl-endpoint", "gpuIds": "AMPERE_48", "workersMin": 0,
            "workersMax": 1, "idleTimeout": 5,
            "template": {"id": "tpl-pl", "name": "pl", "imageName": "u/pl:1",
                         "dockerArgs": "", "containerDiskInGb": 50, "env": []},
            "health": {"workers": {"idle": 1}},
        }],
        "steps": steps,
    })


@pytest.fixture
def client_for(sim_client: SimClient) -> SimClient:
    """Factory: a simulator on loopback for a scenario, and a real client to it."""
    return partial(sim_client, api_key=KEY, timeout_s=2.0)


async def test_tracked_jobs_reach_the_observation_the_history_and_the_metrics(
    client_for: Any,
) -> None:
    """A registered job's `/status` answers are in each cycle's observation (the history the
    rules read holds them); once it ended it is forgotten and its times are in the job
    histograms, counted once."""
    sc = scenario([
        {"cycles": 1, "endpoints": {EP: {"jobs": [{"id": "job-1", "status": "IN_QUEUE"}]}}},
        {"cycles": 2, "endpoints": {EP: {"jobs": [
            {"id": "job-1", "status": "COMPLETED", "delayTime": 2000, "executionTime": 30000},
        ]}}},
    ])
    server, client = await client_for(sc)
    pipeline = build_pipeline(load_settings(None, env={}), client, sinks=[])
    assert pipeline.jobs.register(EP, "job-1", T0)
    seen = []
    for k in (1, 2, 3):
        server.set_cycle(k)
        result = await pipeline.cycle(k, T0 + (k - 1) * INTERVAL)
        assert pipeline.history.view().observations[-1] is result.observation
        seen.append(result.observation.tracked_jobs)
    assert [tuple((t.endpoint_id, t.job.id, t.job.status) for t in s) for s in seen] == [
        ((EP, "job-1", "IN_QUEUE"),), ((EP, "job-1", "COMPLETED"),), (),
    ]
    assert seen[1][0].job.execution_ms == 30000
    assert pipeline.jobs.tracked() == []
    body, _ = pipeline.metrics.render()
    counts = {s.labels["endpoint_id"]: s.value
              for f in text_string_to_metric_families(body.decode()) for s in f.samples
              if s.name == "runpod_job_execution_seconds_count"}
    assert counts[EP] == 1  # the /status answer; /requests saw the same job: not again


async def test_snapshot_survives_the_store_and_restore_drops_what_fell_out(
    client_for: Any, tmp_path: Path,
) -> None:
    """What a pipeline persisted each cycle, a new pipeline restores whole (history with its
    tracked jobs, memory, incidents, announced keys, cycle number); the window is cut at
    `now`, the incidents are kept."""
    busy = {"jobs": {"inQueue": 2}, "workers": {"idle": 0, "throttled": 1, "unhealthy": 1}}
    queued = [{"id": "job-2", "status": "IN_QUEUE"}]
    sc = scenario([
        {"cycles": 1, "endpoints": {EP: {"jobs": queued}}},
        {"cycles": 5, "endpoints": {EP: {"health": busy}}},
    ])
    server, client = await client_for(sc)
    settings = load_settings(None, env={}, overrides={"state": {"path": str(tmp_path / "s.db")}})
    store = Store(settings.state.path)
    first = build_pipeline(settings, client, sinks=[Quiet()], store=store)
    first.jobs.register(EP, "job-2", T0)
    for k in range(1, 7):
        server.set_cycle(k)
        await first.cycle(k, T0 + (k - 1) * INTERVAL)
    before = first.snapshot()
    assert before.active
    assert before.announced
    assert before.last_cycle == 6
    tracked = before.observations[-1].tracked_jobs
    assert tracked == (TrackedJob(EP, Job("job-2", "IN_QUEUE", delay_ms=5 * 30_000)),)
    store.close()

    store = Store(settings.state.path)
    again = build_pipeline(settings, client, sinks=[Quiet()], store=store)
    now = T0 + 5 * INTERVAL
    again.restore(store.load(), now)
    assert again.snapshot() == before

    later: Pipeline = build_pipeline(settings, client, sinks=[], store=None)
    later.restore(store.load(), now + settings.state.retention_s + 3 * INTERVAL)
    state = later.snapshot()
    assert state.observations == []
    assert state.active == before.active
    assert state.memory == before.memory
    assert state.last_cycle == 6
    store.close()


class Quiet(Sink):
    """A message sink that keeps nothing and declares only `send`: the Protocol's defaults
    (observe, refresh, close) are what the router, the outbox and shutdown call."""

    name = "quiet"
    min_severity = "info"
    mode = "messages"

    def __init__(self) -> None:
        self.sent = 0

    async def send(self, message: Message) -> None:
        self.sent += len(message.notifications)


async def test_a_sink_declaring_only_send_goes_through_route_deliver_and_close(
    client_for: Any,
) -> None:
    """The sink interface is the Protocol's: a sink without observe/refresh/close of its own
    takes a whole cycle, a delivery round (which calls refresh) and shutdown."""
    busy = {"jobs": {"inQueue": 2}, "workers": {"idle": 0, "throttled": 1, "unhealthy": 1}}
    sc = scenario([{"cycles": 1}, {"cycles": 3, "endpoints": {EP: {"health": busy}}}])
    server, client = await client_for(sc)
    sink = Quiet()
    pipeline = build_pipeline(load_settings(None, env={}, overrides={
        "alerts": {"group_wait_s": 0}}), client, sinks=[sink])
    for k in range(1, 5):
        server.set_cycle(k)
        t = T0 + (k - 1) * INTERVAL
        await pipeline.cycle(k, t)
        await pipeline.router.outbox.deliver(t)
    assert sink.sent >= 1
    await sink.close()
