"""The REST v2 control plane of whole cycles (monitor/pipeline/control.py) against the
simulator over loopback: which v2 calls a cycle makes when the quota is tight (a crash
storm at start) and when RunPod cannot be reached."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
from conftest import SimClient

from monitor.config import load_settings
from monitor.pipeline.control import NO_HINTS, Call, ControlPlane
from monitor.pipeline.cycle import Pipeline, build_pipeline
from monitor.runpod.client import RunPodClient
from monitor.simulator import Scenario

KEY = "control-v2-test-key-0123456789"
INTERVAL = 30.0
T0 = 1_767_225_600.0  # the simulator's default v2 epoch: 2026-01-01T00:00:00Z
QUOTA = {"minute": 60, "hour": None, "day": None}  # benchmarks/run.py's v2 cycle


def endpoint(i: int) -> dict[str, Any]:
    eid = f"ctl{i:09d}"
    item: dict[str, Any] = {
        "id": eid, "name": f"ctl-{i}", "gpuIds": "ADA_24", "workersMin": 0, "workersMax": 3,
        "idleTimeout": 5, "version": 1,
        "template": {"id": f"ctltpl{i:06d}", "name": f"w-{i}", "imageName": "example/w:1",
                     "dockerArgs": "", "containerDiskInGb": 60, "env": []},
        "health": {"jobs": {"completed": 1000 + i, "failed": 2}, "workers": {"idle": 1}},
    }
    if i % 10 == 0:  # busy: jobs in flight
        item["health"] = {"jobs": {"completed": 1000 + i, "inProgress": 1, "inQueue": 2},
                          "workers": {"running": 1}}
        item["jobs"] = [{"id": f"{eid}-p0", "status": "IN_PROGRESS"},
                        {"id": f"{eid}-q0", "status": "IN_QUEUE"}]
    return item


def storm(n: int, crashing: list[int], cycles: int) -> Scenario:
    """`n` endpoints, every 10th busy; the `crashing` ones crash-loop as benchmarks/run.py's
    storm has them: a job queued that never starts, `running: 1` in every /health, a new
    worker id in the v2 records every 60 s."""
    items = [endpoint(i) for i in range(n)]
    for i in crashing:
        eid = items[i]["id"]
        items[i]["health"] = {"jobs": {"completed": 300 + i, "inQueue": 1},
                              "workers": {"running": 1}}
        items[i]["jobs"] = [{"id": f"{eid}-q0", "status": "IN_QUEUE"}]
        items[i]["v2"] = {"workers": [{"id": f"{eid[-6:]}w000", "status": "RUNNING",
                                       "started_s": 0}]}
    steps = [{"cycles": 2, "endpoints": {
        items[i]["id"]: {"v2": {"workers": [{"id": f"{items[i]['id'][-6:]}w{j:03d}",
                                             "status": "RUNNING", "started_s": 60 * j}]}}
        for i in crashing}} for j in range(1, (cycles + 1) // 2 + 1)]
    return Scenario.from_dict({
        "name": "control-storm", "interval_s": INTERVAL, "v2": {"quota": QUOTA},
        "account": {"clientBalance": 5000.0, "currentSpendPerHr": 1.2},
        "endpoints": items, "steps": [{"cycles": 1}, *steps],
    })


@pytest.fixture
def sim(sim_client: SimClient) -> SimClient:
    """A simulator (timeouts held 5 s) and a client with a 1 s timeout."""
    return partial(sim_client, api_key=KEY, server={"timeout_hold_s": 5.0}, timeout_s=1.0)


def pipeline_for(client: RunPodClient, control_plane: str = "auto", **runpod: Any
                 ) -> Pipeline:
    settings = load_settings(None, env={}, overrides={
        "interval_s": INTERVAL, "runpod": {"control_plane": control_plane, **runpod}})
    return build_pipeline(settings, client, sinks=[], interval_s=INTERVAL)


def control_of(pipeline: Pipeline) -> ControlPlane:
    control = pipeline.prober.control
    assert control is not None
    return control


@pytest.mark.parametrize("control_plane", ["auto", "rest"])
async def test_crash_storm_gives_every_trouble_endpoint_workers_from_cycle_1(
    sim: Any, control_plane: str
) -> None:
    """200 endpoints (2 pages), 10 crash-looping from the start, 60 v2 calls a minute: the
    first cycle lists, then the 10 endpoints' /workers come before the slow facts (a queue
    nothing works on, seen for the first time, is trouble); every cycle, no 429."""
    n, cycles = 200, 6
    crashing = [20 * k + 7 for k in range(10)]
    server, client = await sim(storm(n, crashing, cycles))
    pipeline = pipeline_for(client, control_plane)
    control = control_of(pipeline)
    ids = [f"ctl{i:09d}" for i in crashing]
    fresh: list[int] = []
    for k in range(1, cycles + 1):
        server.set_cycle(k)
        t = T0 + (k - 1) * INTERVAL
        await pipeline.cycle(k, t)
        fresh.append(sum(control.planner.workers_seen.get(e) == t for e in ids))
    assert fresh == [10] * cycles
    assert server.v2.throttled == 0
    assert control.budget.throttled == 0
    # the slow facts were read too, once the trouble had its share
    assert control.budget.calls["balance"] >= 1
    assert control.budget.calls["pods"] >= 1



async def test_a_sample_holds_worker_records_only_in_the_cycle_that_read_them(
    sim: Any,
) -> None:
    """Quiet endpoints get their /workers round-robin, one cycle in several: the cycles
    after a read carry no worker records for them (an unchanged sample is not last
    cycle's when that one held v2 answers), so a record is never seen again as new."""
    server, client = await sim(storm(40, [], 8))
    pipeline = pipeline_for(client)
    control = control_of(pipeline)
    carried = 0
    read = set()
    for k in range(1, 9):
        server.set_cycle(k)
        t = T0 + (k - 1) * INTERVAL
        obs = (await pipeline.cycle(k, t)).observation
        for eid, s in obs.endpoints.items():
            if s.workers is not None:
                read.add(eid)
                carried += control.planner.workers_seen.get(eid) != t
    assert read  # the round-robin reached some quiet endpoints
    assert carried == 0


async def test_a_paged_list_spends_each_page_once(sim: Any) -> None:
    """300 endpoints are 3 pages, 3 calls: the last page's RateLimit already counts the
    two before it, so the budget has 57 of 60 left, as the server says (not 55)."""
    server, client = await sim(storm(300, [], 2))
    control = control_of(pipeline_for(client, "rest"))
    server.set_cycle(1)
    calls: list[Call] = []
    await control.list_first(T0, INTERVAL, NO_HINTS, calls)
    assert [c.probe for c in calls] == ["v2_endpoints"]
    assert control.listing is not None
    assert len(control.listing) == 300
    assert control.budget.calls["list"] == 3
    assert control.budget.remaining(T0) == 57
    [minute] = control.budget.reading(T0).windows
    assert (minute.name, minute.quota, minute.spent) == ("minute", 60, 3)


def small(fault: str, quota: dict[str, int | None] | None = None) -> Scenario:
    """Three endpoints (one busy), RunPod answering for 2 cycles, then unreachable for 3
    (every API: `fault`), then answering again."""
    items = [endpoint(i) for i in range(3)]
    down = {"graphql": fault, "endpoints": {e["id"]: {"rest": fault} for e in items}}
    up = {"graphql": "ok", "endpoints": {e["id"]: {"rest": "ok"} for e in items}}
    return Scenario.from_dict({
        "name": "control-unreachable", "interval_s": INTERVAL,
        **({"v2": {"quota": quota}} if quota else {}),
        "account": {"clientBalance": 500.0, "currentSpendPerHr": 1.2},
        "endpoints": items,
        "steps": [{"cycles": 2}, {"cycles": 3, **down}, {"cycles": 2, **up}],
    })


V2_KINDS = ("v2_", "graphql")


# the list read every cycle before the data plane (1 page, cheap), or only when due (3
# pages of 1 against 20 calls a minute: not cheap), so the plan's first call finds out
LISTS = {"cheap": ({}, None), "due": ({"v2_pagination": {"page_size": 1}}, {"minute": 20})}


@pytest.mark.parametrize(("fault", "kind"), [("reset", "connect"), ("timeout", "timeout")])
@pytest.mark.parametrize("control_plane", ["auto", "rest"])
@pytest.mark.parametrize("lists", ["cheap", "due"])
async def test_unreachable_runpod_costs_one_v2_call_a_cycle(
    sim: Any, fault: str, kind: str, control_plane: str, lists: str
) -> None:
    """When the cycle's first v2 call cannot reach RunPod (connection reset, or a
    timeout), the rest of the cycle's control-plane calls are held back, counted as
    skipped, and tried again the next cycle; the outage raises nothing but itself."""
    runpod, quota = LISTS[lists]
    server, client = await sim(small(fault, quota))
    pipeline = pipeline_for(client, control_plane, **runpod)
    control = control_of(pipeline)
    sent: list[list[str]] = []
    raised: list[str] = []
    held: list[int] = []
    for k in range(1, 8):
        server.set_cycle(k)
        before = sum(pipeline.prober.skipped.values())
        result = await pipeline.cycle(k, T0 + (k - 1) * INTERVAL)
        sent.append([c.probe for c in result.calls if c.probe.startswith(V2_KINDS)])
        raised += [i.key[0] for i in result.changes.raised]
        held.append(sum(pipeline.prober.skipped.values()) - before)
        if k in (3, 4, 5):
            v2 = [c for c in result.calls if c.probe.startswith("v2_")]
            assert len(v2) <= 1, (k, sent[-1])
            assert {c.outcome for c in v2} <= {kind}
    # while unreachable: the one v2 call that found it out (and GraphQL's spend query in
    # auto, when no v2 call went before it); the rest held back and counted as skipped
    assert all(len([p for p in s if p.startswith("v2_")]) <= 1 for s in sent[2:5])
    assert all(len(s) <= 2 for s in sent[2:5])
    assert all(h > 0 for h in held[2:5]), held
    # answering again: the list and the facts held back are asked the first cycle back
    assert "v2_endpoints" in sent[5]
    assert {"v2_balance", "v2_pods"} <= set(sent[5])
    assert "v2_workers" in sent[5]
    assert control.listing is not None
    assert set(raised) <= {"runpod_api_errors"}


async def test_auto_spend_query_backs_off_while_only_graphql_fails(sim: Any) -> None:
    """auto, GraphQL answering 500 for 6 cycles while v2 answers: the one-field spend query
    goes behind GraphQL's gate as `myself` does (sent, then backed off: not every cycle),
    the spend per hour comes from v2 meanwhile, and the query is asked again once due."""
    items = [endpoint(i) for i in range(3)]
    server, client = await sim(Scenario.from_dict({
        "name": "graphql-down", "interval_s": INTERVAL,
        "account": {"clientBalance": 500.0, "currentSpendPerHr": 1.2},
        "endpoints": items,
        "steps": [{"cycles": 1}, {"cycles": 6, "graphql": "500"},
                  {"cycles": 6, "graphql": "ok"}],
    }))
    pipeline = pipeline_for(client, "auto")
    asked: list[int] = []
    sources: list[str | None] = []
    for k in range(1, 14):
        server.set_cycle(k)
        result = await pipeline.cycle(k, T0 + (k - 1) * INTERVAL)
        if any(c.probe == "graphql" for c in result.calls):
            asked.append(k)
        sources.append(result.observation.sources.get("spend_per_hr"))
    down = [k for k in asked if 2 <= k <= 7]
    assert down[:2] == [2, 3]  # the first failures are asked, then the back-off holds
    assert len(down) < 6, asked
    assert pipeline.prober.skipped.get("graphql", 0) >= 6 - len(down)
    assert sources[0] == "graphql"
    assert all(s == "rest" for s in sources[1:7]), sources  # derived from v2 meanwhile
    assert sources[-1] == "graphql"  # asked again once GraphQL answers
