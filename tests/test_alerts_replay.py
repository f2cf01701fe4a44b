"""`replay`'s `alerts`: what a person would receive, in simulated time, in the JSON shape
of spec/scenario-format.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from monitor.commands.replay import replay
from monitor.simulator import Scenario, load_scenario

EP = "eprpl0000001"


def scenario(alerts: dict[str, Any] | None = None) -> Scenario:
    endpoint = {
        "id": EP, "name": "replay-ep", "gpuIds": "AMPERE_48", "workersMin": 0,
        "workersMax": 1, "idleTimeout": 5,
        "template": {"id": "tpl-r", "name": "r", "imageName": "u/r:1", "dockerArgs": "",
                     "containerDiskInGb": 60, "env": []},
        "health": {"workers": {"idle": 1}},
    }
    sick = {"health": {"jobs": {"inQueue": 2}, "workers": {"idle": 0, "throttled": 1,
                                                            "unhealthy": 1}}}
    well = {"health": {"jobs": {"inQueue": 0}, "workers": {"idle": 1, "throttled": 0,
                                                            "unhealthy": 0}}}
    blip = {"health": {"workers": {"unhealthy": 1}}}
    data: dict[str, Any] = {
        "name": "alerts-replay",
        "interval_s": 30,
        "account": {"clientBalance": 500, "currentSpendPerHr": 0.1},
        "endpoints": [endpoint],
        "steps": [
            {"cycles": 1},
            {"cycles": 1, "endpoints": {EP: blip}},  # one cycle: shorter than group_wait
            {"cycles": 1, "endpoints": {EP: well}},
            {"cycles": 8, "endpoints": {EP: sick}},
            {"cycles": 3, "endpoints": {EP: well}},
        ],
    }
    if alerts is not None:
        data["monitor"] = {"alerts": alerts}
    return Scenario.from_dict(data)


async def test_alerts_follow_group_wait_in_simulated_time() -> None:
    """With group_wait 30 s and 30 s cycles: the one-cycle blip sends nothing; the two
    diagnoses of the sick spell arrive in one message (two entries, one text) a cycle
    after the first was raised; each gets one resolved."""
    result = await replay(scenario(), env={})
    out = result.to_json()
    alerts = out["alerts"]
    assert all(set(a) == {"sink", "kind", "code", "endpoint_id", "cycle", "text"}
               for a in alerts)
    raised = {(i["code"], i["raised_cycle"]) for i in out["incidents"]}
    assert ("workers_unhealthy", 2) in raised  # the blip was an incident...
    firing = [a for a in alerts if a["kind"] == "firing"]
    assert [(a["code"], a["cycle"]) for a in firing] == [
        ("workers_unhealthy", 5), ("no_gpu_capacity", 5)]  # ...but never announced
    assert firing[0]["text"] == firing[1]["text"]
    assert firing[0]["text"].startswith("[CRITICAL] 2 problems on replay-ep (eprpl0000001)")
    resolved = [(a["code"], a["cycle"]) for a in alerts if a["kind"] == "resolved"]
    assert sorted(resolved) == [("no_gpu_capacity", 12), ("workers_unhealthy", 12)]
    assert all(a["sink"] == "slack" and a["endpoint_id"] == EP for a in alerts)


async def test_group_wait_zero_announces_in_the_raising_cycle() -> None:
    """With alerts.group_wait_s 0 in the scenario's monitor section, the blip is
    announced in the cycle it is raised, and resolved the next."""
    result = await replay(scenario({"group_wait_s": 0}), env={})
    got = [(a["kind"], a["code"], a["cycle"]) for a in result.to_json()["alerts"]]
    assert got[:2] == [("firing", "workers_unhealthy", 2), ("resolved", "workers_unhealthy", 3)]


async def test_silence_in_the_scenario_mutes_replay_alerts() -> None:
    """A silence in the scenario's monitor section keeps that code out of replay's alerts."""
    alerts = {"silences": [{"code": "no_gpu_capacity", "until": "2030-01-01T00:00:00Z"}]}
    result = await replay(scenario(alerts), env={})
    codes = {a["code"] for a in result.to_json()["alerts"]}
    assert codes == {"workers_unhealthy"}


async def test_shared_scenario_alerts(sim_scenarios_dir: Path) -> None:
    """throttled-capacity: one firing (a cycle after raising, group_wait 30 s) and one
    resolved for no_gpu_capacity; the info-level single_gpu_tier stays out of Slack."""
    result = await replay(load_scenario(sim_scenarios_dir / "throttled-capacity.yaml"), env={})
    out = result.to_json()
    inc = {i["code"]: i for i in out["incidents"]}
    got = [(a["kind"], a["code"], a["cycle"]) for a in out["alerts"]]
    assert got == [
        ("firing", "no_gpu_capacity", inc["no_gpu_capacity"]["raised_cycle"] + 1),
        ("resolved", "no_gpu_capacity", inc["no_gpu_capacity"]["resolved_cycle"]),
    ]
