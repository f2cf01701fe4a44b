"""Guarded fixes against the simulator over loopback: each action runs only after an
approval (or `auto`), reads the state again and refuses when it moved, and is audited;
an unapproved or disabled action makes no write call at all."""

from __future__ import annotations

import asyncio
import json
import time
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import yaml
from conftest import SimClient

from model.observation import Observation
from monitor.actions import ActionEngine
from monitor.alerts.message import plain_text, resolved_text
from monitor.alerts.router import RecordingSink
from monitor.commands.cli import main
from monitor.commands.daemon import Daemon
from monitor.config import load_settings, settings_from_dict
from monitor.pipeline.cycle import Pipeline, build_pipeline
from monitor.runpod.client import RUNPOD_LIMITS, RunPodClient
from monitor.simulator import BackgroundSimulator, Scenario, SimulatorServer
from monitor.simulator.scenario import deep_merge
from monitor.state.incidents import Changes, Incident
from monitor.state.store import Store
from rules.diagnosis import Diagnosis

KEY = "actions-test-key-0123456789"
EP = "acendpoint01"
INTERVAL = 30.0
T0 = 1_767_225_600.0
WRITES = (("v2", "update-endpoint"), (EP, "cancel"), (EP, "purge-queue"))
TOKEN = "wt-actions-0123456789-Right"


# REST v2 billing's USD/h for the endpoint, the spend guard's cost where v2 answers (the
# default control plane); GraphQL has no per-endpoint spend, so the guard falls back to
# GUARD's usd_per_worker_hr x the one running worker: the same 1 USD per second either way
BILLED_USD_PER_HR = 3600.0


def scenario(steps: list[dict[str, Any]] | None = None,
             workers: dict[str, int] | None = None) -> Scenario:
    return Scenario.from_dict({
        "name": "actions", "interval_s": INTERVAL,
        "account": {"clientBalance": 500.0, "currentSpendPerHr": 0.5},
        "endpoints": [{
            "id": EP, "name": "ac-endpoint", "gpuIds": "AMPERE_48", "workersMin": 0,
            "workersMax": 3,
            "template": {"id": "tpl-ac", "name": "ac", "imageName": "u/ac:1",
                         "dockerArgs": "", "containerDiskInGb": 50, "env": []},
            "health": {"jobs": {"completed": 100, "inQueue": 3, "inProgress": 1},
                       "workers": workers or {"running": 1}},
            "jobs": [{"id": "job-long", "status": "IN_PROGRESS"},
                     {"id": "job-done", "status": "COMPLETED"},
                     {"id": "job-q", "status": "IN_QUEUE"}],
            "v2": {"billing": BILLED_USD_PER_HR},
        }],
        **({"steps": steps} if steps else {}),
    })


# cycles 1-2 quiet, then a failure surge: job_failures (a spend_guard trigger) from cycle 3
SURGE = [{"cycles": 2},
         {"cycles": 10, "endpoints": {EP: {"health": {"jobs": {"failed": 8}}}}}]


def writes(server: SimulatorServer) -> int:
    return sum(server.request_counts[k] for k in WRITES)


@pytest.fixture
def sim(sim_client: SimClient) -> SimClient:
    return partial(sim_client, api_key=KEY, timeout_s=2.0, limits=RUNPOD_LIMITS)


def actions_config(**kinds: dict[str, Any]) -> dict[str, Any]:
    return {"actions": {k: v for k, v in kinds.items()}, "alerts": {"group_wait_s": 0}}


def pipeline_for(server: SimulatorServer, client: RunPodClient, overrides: dict[str, Any],
                 store: Store | None = None) -> Pipeline:
    settings = load_settings(None, env={}, overrides=overrides)
    pipeline = build_pipeline(settings, client, sinks=[], store=store)
    assert pipeline.actions is not None
    return pipeline


async def run_cycles(server: SimulatorServer, pipeline: Pipeline, first: int,
                     last: int, t0: float = T0) -> None:
    for k in range(first, last + 1):
        server.set_cycle(k)
        await pipeline.cycle(k, t0 + (k - 1) * INTERVAL)


async def v2_workers_max(server: SimulatorServer) -> int:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as http:
        r = await http.get(f"{server.url}/v2/serverless/{EP}")
        return int(r.json()["workers"]["max"])


# 1 USD per worker-second: one running worker costs 30 USD a cycle
GUARD = {"enabled": True, "max_usd": 20, "usd_per_worker_hr": 3600}


def engine_of(pipeline: Pipeline) -> ActionEngine:
    assert pipeline.actions is not None
    return pipeline.actions


# ---------------------------------------------------------------- spend_guard, end to end


@pytest.mark.parametrize(("control_plane", "cost_from"), [
    # proposed a cycle (30 s) after job_failures began
    # the rule's own figure from the billed spend (job_failures' cost_so_far_usd, whose
    # basis is v2 billing: what RunPod charged, so the guard takes it)
    ("auto", "evidence cost_so_far_usd"),
    ("graphql", "1 workers x 3600 USD/h x 0.01 h"),  # no billing: the estimate
])
async def test_spend_guard_runs_after_approval_and_the_simulator_shows_it(
    sim: Any, control_plane: str, cost_from: str
) -> None:
    server, client = await sim(scenario(SURGE))
    pipeline = pipeline_for(server, client, {**actions_config(spend_guard=GUARD),
                                             "runpod": {"control_plane": control_plane}})
    engine = engine_of(pipeline)
    await run_cycles(server, pipeline, 1, 5)
    [p] = engine.listing()
    assert p.kind == "spend_guard"
    assert p.extra["cost_from"] == cost_from
    assert p.state == "proposed"
    assert p.precondition == {"workers_max": 3, "workers_min": 0}
    assert p.call.text() == f'PATCH /v2/serverless/{EP} {{"workers":{{"min":0,"max":0}}}}'
    assert writes(server) == 0  # proposed is not approved: nothing was called
    status, _approved = engine.approve(p.id, "api:token", T0 + 200)
    assert status == 200
    await run_cycles(server, pipeline, 6, 6)
    assert engine.proposals[p.id].state == "executed"
    assert engine.proposals[p.id].result == "ok 200: workers min 0 max 0"
    assert server.request_counts[("v2", "update-endpoint")] == 1
    assert await v2_workers_max(server) == 0
    events = [(a.event, a.who) for a in engine.audit]
    assert events == [("proposed", "monitor"), ("approved", "api:token"),
                      ("executed", "api:token")]
    # the next cycles see the change; nothing is called twice
    await run_cycles(server, pipeline, 7, 8)
    assert writes(server) == 1
    obs = pipeline.history.latest
    assert obs is not None
    assert obs.endpoints[EP].config is not None
    assert obs.endpoints[EP].config.workers_max == 0


async def test_spend_guard_counts_every_billed_worker(sim: Any) -> None:
    """Without billing (GraphQL) the guard's estimate counts the workers RunPod bills
    (`Health.workers_billed`): idle and unhealthy ones hold a GPU too, throttled ones not."""
    server, client = await sim(scenario(SURGE, workers={"running": 1, "idle": 1,
                                                         "unhealthy": 1, "throttled": 2}))
    pipeline = pipeline_for(server, client, {**actions_config(spend_guard=GUARD),
                                             "runpod": {"control_plane": "graphql"}})
    await run_cycles(server, pipeline, 1, 4)
    [p] = engine_of(pipeline).listing()
    assert p.kind == "spend_guard"
    assert p.extra["cost_from"] == "3 workers x 3600 USD/h x 0.01 h"


async def test_an_unapproved_action_changes_nothing_on_the_simulator(sim: Any) -> None:
    server, client = await sim(scenario(SURGE))
    pipeline = pipeline_for(server, client, actions_config(
        spend_guard=GUARD, cancel_overrun={"enabled": True},
        purge_after_crash_loop={"enabled": True}))
    await run_cycles(server, pipeline, 1, 10)
    assert [p.state for p in engine_of(pipeline).listing()] == ["proposed"]
    assert writes(server) == 0
    assert await v2_workers_max(server) == 3


async def test_a_disabled_action_is_never_proposed_nor_called(sim: Any) -> None:
    server, client = await sim(scenario(SURGE))
    pipeline = pipeline_for(server, client, actions_config(
        spend_guard={**GUARD, "enabled": False}))
    await run_cycles(server, pipeline, 1, 8)
    assert engine_of(pipeline).listing() == []
    assert writes(server) == 0
    assert engine_of(pipeline).approve("spend-000000000000", "api:token", T0)[0] == 404


async def test_auto_mode_runs_without_an_approval(sim: Any) -> None:
    server, client = await sim(scenario(SURGE))
    pipeline = pipeline_for(server, client, actions_config(spend_guard={**GUARD, "auto": True}))
    await run_cycles(server, pipeline, 1, 6)
    [p] = engine_of(pipeline).listing()
    assert p.state == "executed"
    assert p.approved_by == "auto"
    assert server.request_counts[("v2", "update-endpoint")] == 1
    assert await v2_workers_max(server) == 0


async def test_spend_guard_refuses_when_someone_already_moved_workers_max(sim: Any) -> None:
    server, client = await sim(scenario(SURGE))
    pipeline = pipeline_for(server, client, actions_config(spend_guard=GUARD))
    engine = engine_of(pipeline)
    await run_cycles(server, pipeline, 1, 5)
    [p] = engine.listing()
    engine.approve(p.id, "api:token", T0 + 200)
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as http:
        r = await http.patch(f"{server.url}/v2/serverless/{EP}",
                             json={"workers": {"min": 0, "max": 1}})
        assert r.status_code == 200
    await run_cycles(server, pipeline, 6, 6)
    refused = engine.proposals[p.id]
    assert refused.state == "refused"
    assert refused.result == "workersMax is 1 now, not the 3 this was based on"
    assert server.request_counts[("v2", "update-endpoint")] == 1  # only the operator's
    assert await v2_workers_max(server) == 1


async def test_dry_run_proposes_and_approves_but_never_calls(sim: Any) -> None:
    server, client = await sim(scenario(SURGE))
    settings = load_settings(None, env={}, overrides=actions_config(
        spend_guard={**GUARD, "auto": True}))
    pipeline = build_pipeline(settings, client, sinks=[], dry_run=True)
    await run_cycles(server, pipeline, 1, 8)
    engine = engine_of(pipeline)
    [p] = engine.listing()
    assert p.state == "approved"
    assert engine.would_run == [p]
    assert writes(server) == 0


# ---------------------------------------------------------------- cancel and purge


def incident(code: str, since: float, **evidence: Any) -> Incident:
    d = Diagnosis(code=code, scope="endpoint", severity="warning", summary=code,
                  remedy="fix it", evidence=evidence, endpoint_id=EP, endpoint_name="ac")
    return Incident(d, since, 1)


async def observed(server: SimulatorServer, pipeline: Pipeline) -> Observation:
    await run_cycles(server, pipeline, 1, 1)
    obs = pipeline.history.latest
    assert obs is not None
    return obs


@pytest.mark.parametrize(("job", "state", "cancels"), [
    ("job-long", "executed", 1),  # still IN_PROGRESS: cancelled
    ("job-done", "refused", 0),  # finished already: the state moved, no write
])
async def test_cancel_overrun(sim: Any, job: str, state: str, cancels: int) -> None:
    server, client = await sim(scenario())
    pipeline = pipeline_for(server, client, actions_config(cancel_overrun={"enabled": True}))
    engine = engine_of(pipeline)
    obs = await observed(server, pipeline)
    overrun = incident("job_overrun", T0, job_id=job, execution_s=7200)
    await engine.step(obs, Changes(raised=[overrun]), [overrun], T0)
    [p] = engine.listing()
    assert p.call.text() == f"POST /v2/{EP}/cancel/{job}"
    assert p.job_id == job
    assert server.request_counts[(EP, "cancel")] == 0
    engine.approve(p.id, "api:token", T0 + 1)
    await engine.step(obs, Changes(held=[overrun]), [overrun], T0 + 30)
    assert engine.proposals[p.id].state == state
    assert server.request_counts[(EP, "cancel")] == cancels
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as http:
        r = await http.get(f"{server.url}/v2/{EP}/status/{job}")
    assert r.json()["status"] == ("CANCELLED" if cancels else "COMPLETED")
    if state == "refused":
        assert engine.proposals[p.id].result == "the job is COMPLETED now, no longer IN_PROGRESS"


async def test_cancel_proposal_expires_when_the_overrun_ends(sim: Any) -> None:
    server, client = await sim(scenario())
    pipeline = pipeline_for(server, client, actions_config(cancel_overrun={"enabled": True}))
    engine = engine_of(pipeline)
    obs = await observed(server, pipeline)
    overrun = incident("job_overrun", T0, job_id="job-long")
    await engine.step(obs, Changes(raised=[overrun]), [overrun], T0)
    await engine.step(obs, Changes(resolved=[overrun]), [], T0 + 30)
    [p] = engine.listing()
    assert p.state == "expired"
    assert p.result == "the incident ended"
    assert engine.approve(p.id, "api:token", T0 + 31)[0] == 409
    assert writes(server) == 0


@pytest.mark.parametrize("someone_purged_first", [False, True])
async def test_purge_after_crash_loop(sim: Any, someone_purged_first: bool) -> None:
    server, client = await sim(scenario())
    pipeline = pipeline_for(server, client, actions_config(
        purge_after_crash_loop={"enabled": True}))
    engine = engine_of(pipeline)
    obs = await observed(server, pipeline)
    ended = Incident(incident("crash_loop", T0 - 600).diagnosis, T0 - 600, 1,
                     resolved_at=T0, resolved_cycle=1)
    changes = await engine.step(obs, Changes(resolved=[ended]), [], T0)
    [p] = engine.listing()
    assert p.kind == "purge_after_crash_loop"
    assert p.precondition["in_queue_seen"] == 3
    # the alert of the resolved crash loop carries the proposal and how to approve it
    remedy = changes.resolved[0].diagnosis.remedy
    assert ("proposed fix: purge the 3 jobs queued on ac under the crash loop (they will "
            f"likely fail) (POST /v2/{EP}/purge-queue); approve: curl -X POST") in remedy
    assert "Bearer $RUNPOD_MONITOR_WRITE_TOKEN" in remedy
    assert f"/api/v1/actions/{p.id}/approve" in remedy
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as http:
        if someone_purged_first:
            await http.post(f"{server.url}/v2/{EP}/purge-queue")
        engine.approve(p.id, "api:token", T0 + 1)
        await engine.step(obs, Changes(), [], T0 + 30)
        health = (await http.get(f"{server.url}/v2/{EP}/health")).json()
    assert health["jobs"]["inQueue"] == 0
    assert server.request_counts[(EP, "purge-queue")] == 1  # ours, or the other one
    if someone_purged_first:
        assert engine.proposals[p.id].state == "refused"
        assert engine.proposals[p.id].result == "the queue holds 0 jobs now (fewer than 1)"
    else:
        assert engine.proposals[p.id].state == "executed"
        assert engine.proposals[p.id].result == "ok 200: removed 3 queued jobs"


# ---------------------------------------------------------------- persistence and the API


async def test_the_audit_log_survives_a_restart(sim: Any, tmp_path: Path) -> None:
    server, client = await sim(scenario(SURGE))
    store = Store(tmp_path / "state.db")
    pipeline = pipeline_for(server, client, actions_config(spend_guard=GUARD), store)
    await run_cycles(server, pipeline, 1, 5)
    [p] = engine_of(pipeline).listing()
    engine_of(pipeline).approve(p.id, "api:basic:ops", T0 + 200)
    await run_cycles(server, pipeline, 6, 6)
    before = (engine_of(pipeline).listing(), engine_of(pipeline).audit)
    store.close()
    again_store = Store(tmp_path / "state.db")
    again = pipeline_for(server, client, actions_config(spend_guard=GUARD), again_store)
    again.restore(again_store.load(), T0 + 6 * INTERVAL)
    assert (engine_of(again).listing(), engine_of(again).audit) == before
    assert [a.event for a in engine_of(again).audit] == ["proposed", "approved", "executed"]
    # the restored proposal is not proposed nor run again
    await run_cycles(server, again, 7, 8)
    assert server.request_counts[("v2", "update-endpoint")] == 1
    again_store.close()


async def test_approve_over_http_needs_the_write_credential(sim: Any, tmp_path: Path) -> None:
    server, _client = await sim(scenario())
    settings = settings_from_dict({
        "interval_s": 3600,
        "runpod": {"api_key": KEY, "graphql_url": f"{server.url}/graphql",
                   "rest_url": f"{server.url}/v2", "v2_url": f"{server.url}/v2",
                   "timeout_s": 2},
        "http": {"listen": "127.0.0.1:0"},
        "api": {"write_token": TOKEN},
        "state": {"path": str(tmp_path / "state.db")},
        "actions": {"purge_after_crash_loop": {"enabled": True}},
    }, env={})
    daemon = Daemon(settings, sinks=[], clock=lambda: T0)
    engine = engine_of(daemon.pipeline)
    engine.port = None  # this test only approves; no cycle of its own runs a call
    engine.dry_run = True
    obs = await observed(server, daemon.pipeline)
    ended = Incident(incident("crash_loop", T0 - 600).diagnosis, T0 - 600, 1,
                     resolved_at=T0, resolved_cycle=1)
    await engine.step(obs, Changes(resolved=[ended]), [], T0)
    [p] = engine.listing()
    url = await daemon.start()
    try:
        async with aiohttp.ClientSession(trust_env=False) as http:
            async with http.get(f"{url}/api/v1/actions") as r:
                listed = await r.json()
            assert [a["id"] for a in listed["actions"]] == [p.id]
            assert listed["actions"][0]["state"] == "proposed"
            assert listed["actions"][0]["call"]["text"] == f"POST /v2/{EP}/purge-queue"
            assert listed["actions"][0]["approve"].endswith(f"/api/v1/actions/{p.id}/approve")
            approve = f"{url}/api/v1/actions/{p.id}/approve"
            for auth in ({}, {"Authorization": "Bearer wrong"}):
                async with http.post(approve, headers=auth) as r:
                    assert r.status == 401
            assert engine.proposals[p.id].state == "proposed"
            ok = {"Authorization": f"Bearer {TOKEN}"}
            async with http.post(approve, headers=ok) as r:
                assert r.status == 200
                assert (await r.json())["state"] == "approved"
            async with http.post(approve, headers=ok) as r:
                assert r.status == 409
            async with http.post(f"{url}/api/v1/actions/nope/approve", headers=ok) as r:
                assert r.status == 404
            async with http.get(f"{url}/") as r:
                page = await r.text()
            assert p.id in page
            assert "approved" in page
    finally:
        await daemon.stop(grace_s=2)
    assert engine.proposals[p.id].approved_by == "api:token"
    assert writes(server) == 0


# ---------------------------------------------------------------- the alerts


async def test_a_proposal_made_after_the_alert_is_told_in_a_message_of_its_own(
    sim: Any,
) -> None:
    """job_failures is announced at once (cost 0 then); the spend guard proposed a cycle
    later reaches Slack in a message that quotes it and the approve command."""
    server, client = await sim(scenario(SURGE))
    sink = RecordingSink("slack", "info")
    # GraphQL: no billing, so the cost builds up from the workers after the announcement
    # (over REST v2 the billed cost is there at once and rides on the first alert)
    settings = load_settings(None, env={}, overrides=deep_merge(
        actions_config(spend_guard=GUARD), {"runpod": {"control_plane": "graphql"}}))
    pipeline = build_pipeline(settings, client, sinks=[sink])
    for k in range(1, 7):
        server.set_cycle(k)
        t = T0 + (k - 1) * INTERVAL
        await pipeline.cycle(k, t)
        await pipeline.router.outbox.deliver(t)
    [p] = engine_of(pipeline).listing()
    texts = [plain_text(m.kind, m.notifications, m.t) for m in sink.messages]
    assert len(texts) == 2
    assert "proposed fix" not in texts[0]
    assert texts[1].startswith("[REMINDER] [WARNING] job_failures on ac-endpoint")
    assert (f"proposed fix: stop ac-endpoint: workersMax 3 -> 0 (job_failures has cost "
            f"30.00 USD, over 20) (PATCH /v2/serverless/{EP} ") in texts[1]
    assert "approve: curl -X POST -H" in texts[1]
    assert f"http://127.0.0.1:9108/api/v1/actions/{p.id}/approve" in texts[1]
    assert writes(server) == 0


def test_a_resolved_alert_carries_the_purge_it_proposes() -> None:
    d = Diagnosis(code="crash_loop", scope="endpoint", severity="critical", summary="s",
                  remedy="read the logs\nproposed fix: purge the 3 jobs (POST /e/purge-queue);"
                  " approve: curl -X POST http://h/api/v1/actions/purge-1/approve",
                  endpoint_id=EP, endpoint_name="ac")
    text = resolved_text(d, 600)
    assert text.splitlines() == [
        f"[RESOLVED] crash_loop on ac ({EP}) after 10 min.",
        "proposed fix: purge the 3 jobs (POST /e/purge-queue); approve: curl -X POST "
        "http://h/api/v1/actions/purge-1/approve",
    ]


@pytest.mark.parametrize(("section", "field"), [
    ({"spend_guard": {"auto": True}}, "actions.spend_guard: auto: true needs enabled: true"),
    ({"spend_guard": {"enabled": True, "max_usd": 0}}, "actions.spend_guard.max_usd"),
    ({"purge_after_crash_loop": {"enable": True}}, "actions.purge_after_crash_loop.enable"),
    ({"cancel_overrun": {"enabled": "maybe"}}, "actions.cancel_overrun.enabled"),
])
def test_invalid_actions_config_exits_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], section: dict[str, Any], field: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"actions": section}))
    assert main(["check", "--config", str(path)]) == 2
    assert field in capsys.readouterr().err


def test_check_dry_run_lists_what_would_run_and_calls_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Four daemon cycles leave a failure surge in the stored history; `check --dry-run`
    then prints the spend guard it would run (auto) and makes no write."""
    server = SimulatorServer(scenario(SURGE), KEY)
    with BackgroundSimulator(server) as bg:
        url = server.url
        config = {
            "runpod": {"api_key": KEY, "graphql_url": f"{url}/graphql", "rest_url": f"{url}/v2",
                       "v2_url": f"{url}/v2", "timeout_s": 2},
            "state": {"path": str(tmp_path / "state.db")},
            "actions": {"spend_guard": {**GUARD, "auto": True}},
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        settings = settings_from_dict(config, env={})
        # check judges at the wall clock: the daemon's cycles end one interval before it
        t0 = time.time() - 3 * INTERVAL

        async def daemon_cycles() -> None:
            store = Store(settings.state.path)
            async with RunPodClient(api_key=KEY, graphql_url=f"{url}/graphql",
                                    rest_url=f"{url}/v2", v2_url=f"{url}/v2",
                                    timeout_s=2) as client:
                # the daemon, but dry: its auto action must not run before check looks
                pipeline = build_pipeline(settings, client, sinks=[], store=store,
                                          dry_run=True)
                await run_cycles(server, pipeline, 1, 3, t0)
            store.close()

        asyncio.run_coroutine_threadsafe(daemon_cycles(), bg._loop).result(20)
        server.set_cycle(4)
        assert main(["check", "--config", str(path), "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert main(["check", "--config", str(path), "--dry-run", "--format", "json"]) == 0
        as_json = json.loads(capsys.readouterr().out)
    assert "dry run: nothing was called" in out
    assert f"WOULD    spend_guard  {EP}" in out
    assert "runs at once (auto)" in out
    assert f'call: PATCH /v2/serverless/{EP} {{"workers":{{"min":0,"max":0}}}}' in out
    assert as_json["dry_run"] is True
    assert [a["kind"] for a in as_json["actions"]] == ["spend_guard"]
    assert as_json["diagnoses"][0]["code"] == "job_failures"
    assert writes(server) == 0
