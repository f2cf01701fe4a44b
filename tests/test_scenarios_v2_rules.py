"""The v2 rule scenarios (tests/scenarios/v2/), read straight from the simulator's world.

Until the prober reads REST v2, `test_scenarios.py` leaves tests/scenarios/v2/ out. These
tests build each cycle's observation from the simulator's own views (the /health and
/requests bodies, the GraphQL items, the v2 /workers and /releases bodies, at the
scenario's times), run the rules and the incident tracker over them, and check the
scenario's `expect:` blocks, so the scenarios are known to say what the rules do. The
v2 bodies are read by a small local reader, not the client's parsers (another branch).
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from remedykit import curls

from model.history import History, Memory
from model.observation import (
    OK,
    EndpointSample,
    Observation,
    Release,
    ReleaseChange,
    Releases,
    Worker,
    Workers,
)
from monitor.commands.replay import EPOCH
from monitor.runpod.parse import parse_endpoint_config, parse_health, parse_jobs, parse_myself
from monitor.simulator import load_scenario
from monitor.simulator.world import Moment, World
from monitor.simulator.world_v2 import V2World
from monitor.state.incidents import Incident, IncidentTracker
from rules.engine import evaluate
from rules.thresholds import Thresholds

V2_DIR = Path(__file__).resolve().parent / "scenarios" / "v2"
OURS = sorted(p for p in V2_DIR.glob("*.yaml") if p.stem != "graphql-retired-midrun")
TH = Thresholds.model_validate({})


def _t(text: str | None) -> float | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _workers(body: dict[str, Any]) -> Workers:
    return Workers(body["endpointVersion"], tuple(
        Worker(w["id"], w["status"], stale=bool(w["isStale"]), version=w.get("version"),
               started_at=_t(w.get("startedAt")), uptime_s=w.get("uptimeSeconds"),
               gpu_type=w.get("gpuTypeId"), datacenter=w.get("dataCenterId"),
               gpu_count=w.get("gpuCount", 1), image=w.get("image"))
        for w in body["workers"]))


def _releases(body: dict[str, Any]) -> Releases:
    return Releases(body["endpointVersion"], tuple(
        Release(r["version"], _t(r.get("createdAt")), r.get("source", ""), r.get("buildId"),
                r.get("workerCount"),
                tuple(ReleaseChange(d["field"], _compact(d["old"]), _compact(d["new"]))
                      for d in r.get("diff") or ()))
        for r in body["releases"]),
        body["rollout"]["inProgress"], body["rollout"]["percentOnLatest"])


@cache
def run(path: Path) -> tuple[list[set[tuple[str, str | None]]], list[Incident]]:
    """Every cycle's active incident keys, and every incident raised, in order."""
    sc = load_scenario(path)
    world = World(sc)
    v2 = V2World(world)
    assert _t(sc.v2.epoch) == EPOCH  # v2 times and the cycles' times share one clock
    tracker = IncidentTracker()
    observations: list[Observation] = []
    memory = Memory()
    active: list[set[tuple[str, str | None]]] = []
    raised: list[Incident] = []
    for k in range(1, sc.total_cycles + 1):
        m = Moment(k, (k - 1) * sc.interval_s)
        myself = world.myself(m)
        account = parse_myself({"data": {"myself": myself}})
        samples = {}
        for item in myself["endpoints"]:
            eid = item["id"]
            workers, releases = v2.workers(eid, m), v2.releases(eid, m)
            samples[eid] = EndpointSample(
                eid, OK, 200, parse_health(world.health(eid, m)),
                parse_jobs({"requests": world.jobs(eid, m)}), True,
                parse_endpoint_config(item),
                _workers(workers) if workers is not None else None,
                _releases(releases) if releases is not None else None,
            )
        obs = Observation(k, EPOCH + m.now_s, OK, 200,
                          account.account if account is not None else None,
                          frozenset(samples), samples, control_plane="rest")
        observations.append(obs)
        memory = memory.updated(obs)
        changes = tracker.update(obs, evaluate(History(tuple(observations), memory), TH))
        raised += changes.raised
        active.append(set(tracker.active))
    return active, raised


def _matches(item: dict[str, Any], keys: set[tuple[str, str | None]]) -> bool:
    return any(code == item["code"] and item.get("endpoint_id") in (None, eid)
               for code, eid in keys)


@pytest.mark.parametrize("path", OURS, ids=lambda p: p.stem)
def test_v2_scenario_expectations_hold_on_the_rules(path: Path) -> None:
    """Each `expect:` block of the scenario holds for the rules over the simulator's views."""
    active, _ = run(path)
    expect = load_scenario(path).expect
    assert any("cycle" in b for b in expect)
    assert any("never" in b for b in expect)
    for block in expect:
        if "cycle" in block:
            keys = active[block["cycle"] - 1]
            for item in block.get("active", ()):
                assert _matches(item, keys), (block["cycle"], item, keys)
            for item in block.get("inactive", ()):
                assert not _matches(item, keys), (block["cycle"], item, keys)
        for item in block.get("never", ()):
            assert not any(_matches(item, keys) for keys in active), item


@pytest.mark.parametrize("name", ["declared-long-init", "restart-after-execution-timeout",
                                  "standby-flapping-no-jobs"])
def test_v2_traps_raise_nothing_at_all(name: str) -> None:
    """A declared long start-up, one restart after a timeout and a flapping standby worker
    raise no incident of any code."""
    _, raised = run(V2_DIR / f"{name}.yaml")
    assert raised == []


def _raised(name: str, code: str) -> Incident:
    _, raised = run(V2_DIR / f"{name}.yaml")
    (incident,) = [i for i in raised if i.diagnosis.code == code]
    return incident


def test_crash_loop_from_records_is_raised_with_numbers() -> None:
    d = _raised("crash-loop-worker-records", "crash_loop").diagnosis
    assert ("the worker records show 2 restarts in 2 min (one every 60 s), none seen alive "
            "past 30 s") in d.summary
    assert d.evidence["restarted_workers"] == ["wka0001", "wkb0002"]


def test_ghost_scenario_names_the_ghost_and_the_capacity_remedy() -> None:
    d = _raised("ghost-initializing-worker", "crash_loop").diagnosis
    assert "worker wghost01 has been INITIALIZING for 15 min" in d.summary
    assert "AMPERE_48,ADA_48_PRO,AMPERE_80,ADA_80_PRO" in d.remedy


def test_release_then_crash_loop_names_the_release_and_offers_the_rollback() -> None:
    d = _raised("release-then-crash-loop", "crash_loop").diagnosis
    assert d.summary.endswith(
        "It began 3 min after release 2, which changed env MODEL_ID org/model-a -> "
        "org/model-b.")
    assert d.evidence["release"]["version"] == 2
    rollback = d.remedy[d.remedy.index("Or roll back release 2"):]
    patches = [json.loads(a[a.index("-d") + 1]) for a in curls(rollback) if "PATCH" in a]
    assert patches == [{"env": {"MODEL_ID": "org/model-a"}}]


def test_stale_release_scenarios_say_which_reading() -> None:
    stuck = _raised("stuck-rollout", "stale_release").diagnosis
    assert "rollout is stuck: 1 worker still serves release 1 (release 2 came 30 min ago)" \
        in stuck.summary
    drift = _raised("template-edit-not-released", "stale_release").diagnosis
    assert "names image acme/tts-worker:5.0, but the workers on its current release 4 run " \
        "acme/tts-worker:4.2" in drift.summary
