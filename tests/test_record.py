"""`record`: the simulator serving a scenario is recorded over loopback, the recording is
replayed, and the diagnoses timeline is the original's; the file names no key and no
template token; REST v2 facts (built here) reach the simulator through the file; bad
options exit 2 naming the option."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from daemonkit import PYTHON, base_env, run_monitor, write_config, write_yaml
from replaykit import replayed

from model.observation import (
    Account,
    EndpointConfig,
    EndpointSample,
    EnvVar,
    GpuStock,
    Health,
    Job,
    LogLine,
    Observation,
    Release,
    ReleaseChange,
    Releases,
    Template,
    Worker,
    WorkerLogs,
    Workers,
)
from monitor.commands import replay as replay_module
from monitor.commands.record import MASKED, Recorder, record
from monitor.commands.replay import EPOCH, ReplayResult, replay
from monitor.config import RunPodSettings, load_settings
from monitor.pipeline.cycle import CycleResult
from monitor.pipeline.probes import ProbeCall
from monitor.runpod.client import client_for
from monitor.simulator import BackgroundSimulator, Scenario, SimulatorServer, load_scenario
from monitor.simulator.scenario import deep_merge
from monitor.state.incidents import Changes

KEY = "rec-test-key-5f1c2a9e7d3b"
SCENARIOS = Path(__file__).parent / "scenarios"
# tests/scenarios/v2 needs a monitor that reads REST v2 (`runpod.control_plane`)
READS_V2 = "control_plane" in RunPodSettings.model_fields
# One of each kind the issue names (a crash loop, throttling, an auth failure, a 429 with
# Retry-After, idle spend) and of what the recorder converts (5xx back-off, template leaks,
# jobs and outputs, v2 worker records, releases, logs, GraphQL retiring): the whole suite
# runs them all in tests/test_scenarios.py already, and every round trip costs ~3 replays.
ALL = [
    "api-outage-during-crash-loop.yaml", "auth-key-revoked.yaml", "idle-volume-spend.yaml",
    "no-gpu-capacity-stalled.yaml", "rest-5xx-backoff-skips.yaml", "throttle-flapping.yaml",
    "template-audit-leaky-bootstrap.yaml", "job-overrun-stuck-job.yaml",
    "balance-drain-two-endpoints.yaml", "crash-loop-volume-full.yaml",
    *([] if not READS_V2 else [
        "v2/crash-loop-worker-records.yaml", "v2/crash-loop-oom-killed.yaml",
        "v2/stuck-rollout.yaml", "v2/graphql-retired-midrun.yaml",
    ]),
]
# token shapes (and URL passwords) as the scenario files write them
TOKEN = re.compile(r"(?:ghp_|github_pat_|hf_|xox[abpr]-|rpa_|AKIA)[A-Za-z0-9_-]{10,}"
                   r"|://[^:/\s'\"]+:[^@\s'\"]+@")


def replay_epoch(scenario: Scenario) -> float:
    """Where replay's clock starts for `scenario` (its v2 epoch once replay reads it)."""
    epoch_of = getattr(replay_module, "epoch_of", None)
    return float(epoch_of(scenario)) if epoch_of is not None else EPOCH


class SimClock:
    """The replay's clock: cycle k at epoch + (k-1) * interval, the simulator moved to k."""

    def __init__(self, server: SimulatorServer) -> None:
        self.server = server

    def start(self) -> float:
        return replay_epoch(self.server.scenario)

    async def wait(self, cycle: int, t: float) -> None:
        self.server.set_cycle(cycle)


Timeline = list[tuple[str, str | None, int, int | None]]


def timeline(result: ReplayResult) -> Timeline:
    return sorted((i.diagnosis.code, i.diagnosis.endpoint_id, i.raised_cycle, i.resolved_cycle)
                  for i in result.incidents)


def tokens_of(path: Path) -> set[str]:
    return {m for m in TOKEN.findall(path.read_text()) if "MASKED" not in m}


async def record_scenario(scenario: Scenario, out: Path) -> Timeline:
    """Record the simulator serving `scenario` for its cycles, in the replay's time."""
    server = SimulatorServer(scenario, KEY)
    url = await server.start()
    try:
        settings = load_settings(None, env={"RUNPOD_API_KEY": KEY}, overrides=deep_merge(
            scenario.monitor,
            {"runpod": {"graphql_url": f"{url}/graphql", "rest_url": f"{url}/v2",
                        "timeout_s": 0.5}},
        ))
        result = await record(settings, scenario.total_cycles, scenario.interval_s, out,
                              clock=SimClock(server), client=client_for(settings))
    finally:
        await server.stop()
    return sorted((e.code, e.endpoint_id, e.raised_cycle, e.resolved_cycle)
                  for e in result.recorder.incidents)


@pytest.mark.parametrize("name", ALL)
def test_recording_replays_to_the_same_timeline(name: str, tmp_path: Path) -> None:
    """Every scenario (crash loop, throttling, auth failure, 429 with Retry-After, idle
    spend, 5xx back-off, template leaks, ...): what the recording run raised, what the
    recording replays to and what the original replays to are one timeline, cycle by
    cycle; the recording's own `expect:` holds; no key and no template token in the file."""
    original = load_scenario(SCENARIOS / name)
    direct = replayed(SCENARIOS / name)
    out = tmp_path / "recorded.yaml"
    recorded = asyncio.run(record_scenario(original, out))
    again = asyncio.run(replay(load_scenario(out), env={}))
    assert recorded == timeline(direct) == timeline(again)
    assert again.cycles == direct.cycles  # every cycle's active set, severities included
    assert again.failed == []
    assert again.passed >= 2 * len([i for i in direct.incidents if i.resolved_cycle]) or (
        not direct.incidents)
    text = out.read_text()
    assert KEY not in text
    assert "api_key" not in text
    leaked = tokens_of(SCENARIOS / name) & {m for m in TOKEN.findall(text)}
    assert leaked == set()


async def test_identical_cycles_merge_into_one_step(tmp_path: Path) -> None:
    """74 cycles of three steps record as three steps whose cycles add up to 74."""
    original = load_scenario(SCENARIOS / "idle-volume-spend.yaml")
    out = tmp_path / "idle.yaml"
    await record_scenario(original, out)
    steps = yaml.safe_load(out.read_text())["steps"]
    assert [s["cycles"] for s in steps] == [s.cycles for s in original.steps]


FAULTS = ["401", "403", "429", "500", "502", "503", "timeout", "reset", "malformed"]
UNREACHABLE = ("timeout", "reset")  # no answer at all: the cycle's other v2 calls wait


@pytest.mark.parametrize(("where", "fault"), [
    *[("graphql", f) for f in [*FAULTS, {"errors": "try again"}]],
    *[("rest", f) for f in [*FAULTS, "404"]],
])
async def test_each_fault_is_recorded_as_itself(where: str, fault: Any,
                                                tmp_path: Path) -> None:
    """A fault the simulator answers with in one cycle is written as that fault (a 429
    with its Retry-After, a GraphQL error without its message) and replays the same."""
    eid = "fault0000001"
    change: dict[str, Any] = ({"graphql": fault} if where == "graphql"
                              else {"endpoints": {eid: {"rest": fault}}})
    original = Scenario.from_dict({
        "name": "one-fault", "interval_s": 30,
        "account": {"clientBalance": 100.0, "currentSpendPerHr": 0.5},
        "endpoints": [{"id": eid, "name": "f", "gpuIds": "ADA_24", "workersMin": 0,
                       "workersMax": 1, "health": {"workers": {"idle": 1}}}],
        "steps": [{"cycles": 1}, {"cycles": 1, **change},
                  {"cycles": 1, "graphql": "ok", "endpoints": {eid: {"rest": "ok"}}}],
    })
    out = tmp_path / "fault.yaml"
    await record_scenario(original, out)
    step = yaml.safe_load(out.read_text())["steps"][1]
    if where == "graphql" and fault in UNREACHABLE:
        # v2 fails alike and its list, the cycle's first call, finds RunPod unreachable:
        # GraphQL's spend query is held back, so the list is where the fault was seen
        assert "graphql" not in step
        written = step["v2"]["faults"]["list-endpoints"]
    else:
        written = step["graphql"] if where == "graphql" else step["endpoints"][eid]["rest"]
    expected = ({"code": 429, "retry_after": 2} if fault == "429"
                else {"errors": written.get("errors")} if isinstance(fault, dict) else fault)
    assert written == expected
    direct = await replay(original, env={})
    again = await replay(load_scenario(out), env={})
    assert again.cycles == direct.cycles
    assert again.unprobed == direct.unprobed


async def test_endpoints_first_listed_after_an_outage_are_the_base(tmp_path: Path) -> None:
    """GraphQL refuses the first four cycles: the endpoints it lists afterwards are the
    scenario's base (a failing GraphQL hides them), and the timeline is the original's."""
    original = Scenario.from_dict({
        "name": "late-listing", "interval_s": 30,
        "monitor": {"endpoints": ["late00000001"]},
        "account": {"clientBalance": 50.0, "currentSpendPerHr": 0.4},
        "endpoints": [{"id": "late00000001", "name": "w", "gpuIds": "ADA_24",
                       "workersMin": 0, "workersMax": 1,
                       "health": {"workers": {"unhealthy": 1}, "jobs": {"inQueue": 2}}}],
        "steps": [{"cycles": 4, "graphql": 401}, {"cycles": 4, "graphql": "ok"}],
    })
    out = tmp_path / "late.yaml"
    recorded = await record_scenario(original, out)
    assert [e["id"] for e in yaml.safe_load(out.read_text())["endpoints"]] == ["late00000001"]
    direct = await replay(original, env={})
    again = await replay(load_scenario(out), env={})
    assert recorded == timeline(direct) == timeline(again)
    assert {"auth_invalid", "workers_unhealthy"} <= {code for code, *_ in recorded}
    assert again.cycles == direct.cycles


async def test_a_429_keeps_its_retry_after(tmp_path: Path) -> None:
    """A data-plane 429 with Retry-After: 75 is written with it, so the replay holds the
    endpoint back for the same cycles the recording run did."""
    worker = {"id": "r429ep000001", "name": "busy", "gpuIds": "ADA_24", "workersMin": 0,
              "workersMax": 1, "health": {"workers": {"running": 1},
                                          "jobs": {"inProgress": 1}}}
    original = Scenario.from_dict({
        "name": "retry-after", "interval_s": 30,
        "account": {"clientBalance": 100.0, "currentSpendPerHr": 0.5},
        "endpoints": [worker],
        "steps": [
            {"cycles": 2},
            {"cycles": 1, "endpoints": {"r429ep000001": {
                "rest": {"code": 429, "retry_after": 75}}}},
            {"cycles": 4, "endpoints": {"r429ep000001": {
                "rest": "ok", "health": {"workers": {"running": 0, "unhealthy": 1}}}}},
        ],
    })
    direct = await replay(original, env={})
    out = tmp_path / "r429.yaml"
    await record_scenario(original, out)
    assert "{code: 429, retry_after: 75}" in out.read_text()
    again = await replay(load_scenario(out), env={})
    assert direct.unprobed == again.unprobed == {"r429ep000001": [4, 5]}
    assert again.cycles == direct.cycles


async def test_thresholds_and_watched_endpoints_travel_in_monitor(tmp_path: Path) -> None:
    """A threshold that differs from the default is written under `monitor: rules`, and
    the replay judges with it: the diagnosis is raised later than with the default."""
    base = load_scenario(SCENARIOS / "no-gpu-capacity-stalled.yaml")
    data = yaml.safe_load((SCENARIOS / "no-gpu-capacity-stalled.yaml").read_text())
    data["monitor"] = {"rules": {"throttled_cycles": 4},
                       "endpoints": [e["id"] for e in data["endpoints"]]}
    data.pop("expect", None)
    strict = Scenario.from_dict(data)
    out = tmp_path / "strict.yaml"
    recorded = await record_scenario(strict, out)
    written = yaml.safe_load(out.read_text())["monitor"]
    assert written == data["monitor"]
    default = timeline(await replay(base, env={}))
    assert recorded == timeline(await replay(load_scenario(out), env={}))
    assert recorded[0][2] > default[0][2]


SECRET_ENV = [
    {"key": "OPENAI_API_KEY", "value": "sk-plainvalue-not-token-shaped"},
    {"key": "DB_PASSWORD", "value": "hunter2hunter2"},
    {"key": "HF_TOKEN", "value": "hf_" + "Zq8x" * 9},
    {"key": "REPO", "value": "https://deploy:s3cr3tpass@git.example.com/x.git"},
    {"key": "HF_HOME", "value": "/runpod-volume/hf"},
    {"key": "GH_TOKEN", "value": "{{ RUNPOD_SECRET_gh }}"},
]


async def test_env_values_are_placeholders_and_the_audit_still_sees_the_token(
    tmp_path: Path,
) -> None:
    """Values of secret-looking keys and token-shaped values are replaced; a path and a
    RunPod secret reference stay; the replay still raises secret_in_template."""
    original = Scenario.from_dict({
        "name": "env-secrets", "interval_s": 30,
        "account": {"clientBalance": 100.0, "currentSpendPerHr": 0.1},
        "endpoints": [{
            "id": "envsecret0001", "name": "leaky", "gpuIds": "ADA_24,AMPERE_24",
            "workersMin": 0, "workersMax": 1,
            "template": {"id": "tpl-leaky", "name": "leaky", "imageName": "acme/w:1",
                         "dockerArgs": "", "containerDiskInGb": 60, "env": SECRET_ENV},
            "health": {"workers": {"idle": 1}},
        }],
        "steps": [{"cycles": 3}],
    })
    out = tmp_path / "env.yaml"
    await record_scenario(original, out)
    text = out.read_text()
    for var in SECRET_ENV[:4]:
        assert var["value"] not in text
    assert "s3cr3tpass" not in text
    assert "Zq8xZq8x" not in text
    env = {e["key"]: e["value"] for e in
           yaml.safe_load(text)["endpoints"][0]["template"]["env"]}
    assert env["OPENAI_API_KEY"] == env["DB_PASSWORD"] == MASKED
    assert env["HF_TOKEN"].startswith("hf_MASKED")
    assert env["REPO"].startswith("https://deploy:")
    assert "@git.example.com" in env["REPO"]
    assert env["HF_HOME"] == "/runpod-volume/hf"
    assert env["GH_TOKEN"] == "{{ RUNPOD_SECRET_gh }}"
    again = await replay(load_scenario(out), env={})
    assert ("secret_in_template", "envsecret0001") in {
        (i.diagnosis.code, i.diagnosis.endpoint_id) for i in again.incidents}


# --- REST v2 facts, from observations built here -------------------------------------------

EID = "v2rec0000001"
T0 = 1_796_000_000.0
HF = "hf_" + "Vv2x" * 9


def _config(image: str) -> EndpointConfig:
    return EndpointConfig(
        id=EID, name="v2-worker", gpu_ids="ADA_24", workers_max=2, idle_timeout=5,
        template=Template(id="", image_name=image, env=(EnvVar("HF_TOKEN", HF),)),
        network_volume_ids=("vol-a", "vol-b"), network_volume_id="vol-a",
        timeout_ms=120_000, flashboot="FLASHBOOT", endpoint_type="QUEUE",
    )


def _v2_cycle(k: int, *, image: str, workers: tuple[Worker, ...], lines: tuple[LogLine, ...],
              retired: bool) -> CycleResult:
    t = T0 + (k - 1) * 30
    config = _config(image)
    sample = EndpointSample(
        endpoint_id=EID, health_outcome="ok", http_status=200,
        health=Health(running=len(workers)), jobs=(Job("j1", "FAILED", error=f"auth {HF}"),),
        listed=True, config=config,
        workers=Workers(2, workers),
        releases=Releases(2, (
            Release(2, T0 - 60, "MANUAL", diff=(
                ReleaseChange("template.env", f'{{"HF_TOKEN":"{HF}"}}', '{"HF_TOKEN":"x"}'),)),
            Release(1, T0 - 86400, "MANUAL"),
        )),
        logs=(WorkerLogs("w1", lines),),
    )
    obs = Observation(
        cycle=k, t=t, control_outcome="ok", control_status=200,
        account=Account(50.0, 0.7, billing_mode="POSTPAID"),
        listed_ids=frozenset({EID}), endpoints={EID: sample}, control_plane="rest",
        sources={"endpoints": "rest", "balance": "rest"},
        graphql_state="retired" if retired else None,
        endpoint_spend={EID: 0.69},
        gpu_stock=(GpuStock("NVIDIA GeForce RTX 4090", "ADA_24", "LOW",
                            (("US-TX-3", "LOW"), ("EU-RO-1", "NONE"))),),
    )
    calls = [ProbeCall("graphql", "http_404" if retired else "ok", 410 if retired else 200,
                       0.01)]
    return CycleResult(obs, Changes(), [], [], calls, (config,))


def _v2_recording() -> Recorder:
    rec = Recorder("v2-facts", 30, secrets=[KEY])
    w1 = Worker("w1", "RUNNING", version=2, started_at=T0 - 600, gpu_type="NVIDIA GeForce "
                "RTX 4090", datacenter="US-TX-3", image="acme/w:2")
    w2 = Worker("w2", "UNHEALTHY", stale=True, version=1, started_at=T0 - 900)
    first = (LogLine(T0 - 600, "system", "start container"),
             LogLine(T0 - 5, "container", f"login with {HF}"))
    rec.add(_v2_cycle(1, image="acme/w:2", workers=(w1, w2), lines=first, retired=False))
    rec.add(_v2_cycle(2, image="acme/w:2", workers=(w1, w2), lines=first, retired=False))
    more = (*first, LogLine(T0 + 61.5, "container", "CUDA out of memory"))
    rec.add(_v2_cycle(3, image="acme/w:3", workers=(w1,), lines=more, retired=True))
    return rec


def test_v2_facts_convert_into_v2_keys(tmp_path: Path) -> None:
    """Workers, releases, logs (only new lines, masked), per-endpoint spend, GPU stock,
    billing mode, the v2-only endpoint fields and a retired GraphQL become the v2 keys the
    loader takes; the second cycle, identical to the first, merges into its step."""
    rec = _v2_recording()
    text = rec.dump()
    assert HF not in text
    assert KEY not in text
    path = tmp_path / "v2.yaml"
    path.write_text(text)
    sc = load_scenario(path)
    assert [s.cycles for s in sc.steps] == [2, 1]
    ep = sc.endpoints[0]
    assert ep.v2 is not None
    assert ep.v2.workers is not None
    assert [(w.id, w.status, w.version, w.started_s) for w in ep.v2.workers] == [
        ("w1", "RUNNING", 2, -600.0), ("w2", "UNHEALTHY", 1, -900.0)]
    assert ep.v2.version == 2
    assert ep.v2.billing == 0.69
    assert ep.v2.endpoint == {"timeout": 120_000, "flashboot": "FLASHBOOT", "type": "QUEUE",
                              "networkVolumes": ["vol-a", "vol-b"]}
    assert ep.v2.releases is not None
    assert ep.v2.releases[0].diff[0].old == {
        "HF_TOKEN": "hf_MASKED" + "0" * 30}
    assert ep.v2.logs is not None
    assert [x.line for x in ep.v2.logs["w1"]] == ["start container", "login with hf_****"]
    assert sc.v2.billing_mode == "POSTPAID"
    assert sc.v2.availability is not None
    stock = sc.v2.availability["NVIDIA GeForce RTX 4090"]
    assert not isinstance(stock, str)
    assert stock.dataCenters == {"US-TX-3": "LOW", "EU-RO-1": "NONE"}
    third = sc.steps[1]
    assert third.graphql is not None
    assert third.graphql.kind == "retired"
    change = third.endpoints[EID]
    assert change.config is not None
    assert change.config["template"]["imageName"] == "acme/w:3"
    assert change.v2 is not None
    assert change.v2.workers is not None
    assert [w.id for w in change.v2.workers] == ["w1"]
    assert change.v2.logs is not None
    assert [x.line for x in change.v2.logs["w1"]] == ["CUDA out of memory"]
    # written after the grid time of the cycle that saw it: served in that cycle all the same
    assert change.v2.logs["w1"][0].t == 60.0
    assert change.jobs is None  # the job list did not change


def test_v2_recording_is_served_by_the_simulator(tmp_path: Path) -> None:
    """The simulator serves the recorded v2 facts back: workers, releases, balance with the
    billing mode, GPU stock; GraphQL retired in the last cycle."""
    path = tmp_path / "v2.yaml"
    path.write_text(_v2_recording().dump())
    server = SimulatorServer(load_scenario(path), KEY)
    auth = {"Authorization": f"Bearer {KEY}"}
    with BackgroundSimulator(server) as sim, httpx.Client(
            base_url=sim.server.url, headers=auth, timeout=5) as http:
        workers = http.get(f"/v2/serverless/{EID}/workers").json()
        assert [(w["id"], w["status"], w["isStale"]) for w in workers["workers"]] == [
            ("w1", "RUNNING", False), ("w2", "UNHEALTHY", True)]
        releases = http.get(f"/v2/serverless/{EID}/releases").json()
        assert [r["version"] for r in releases["releases"]] == [2, 1]
        assert http.get("/v2/billing/balance").json()["billingMode"] == "POSTPAID"
        endpoint = http.get(f"/v2/serverless/{EID}").json()
        assert endpoint["networkVolumes"] == ["vol-a", "vol-b"]
        assert endpoint["flashboot"] == "FLASHBOOT"
        query = {"query": "{ myself { id } }"}
        assert http.post("/graphql", json=query).status_code == 200
        server.set_cycle(3)
        assert http.post("/graphql", json=query).status_code == 410
        assert [w["id"] for w in
                http.get(f"/v2/serverless/{EID}/workers").json()["workers"]] == ["w1"]


def test_a_failed_v2_listing_is_a_v2_fault(tmp_path: Path) -> None:
    """When v2 lists the endpoints, a failed listing is written under
    `v2.faults.list-endpoints` (not as a GraphQL fault), and the simulator answers it."""
    w1 = Worker("w1", "RUNNING", version=2, started_at=T0 - 600)
    ok = _v2_cycle(1, image="acme/w:2", workers=(w1,), lines=(), retired=False)
    obs = replace(ok.observation, cycle=2, t=T0 + 30, control_outcome="http_5xx",
                  control_status=503, listed_ids=None)
    failed = CycleResult(obs, Changes(), [], [], [ProbeCall("list-endpoints", "http_5xx", 503,
                                                            0.01)], None)
    rec = Recorder("v2-list-fault", 30)
    rec.add(ok)
    rec.add(failed)
    path = tmp_path / "f.yaml"
    path.write_text(rec.dump())
    sc = load_scenario(path)
    step = sc.steps[1]
    assert step.graphql is None
    assert step.v2 is not None
    assert step.v2.faults is not None
    assert step.v2.faults["list-endpoints"].kind == "503"
    server = SimulatorServer(sc, KEY)
    with BackgroundSimulator(server) as sim, httpx.Client(
            base_url=sim.server.url, headers={"Authorization": f"Bearer {KEY}"},
            timeout=5) as http:
        assert http.get("/v2/serverless").status_code == 200
        server.set_cycle(2)
        assert http.get("/v2/serverless").status_code == 503


# --- the command line ------------------------------------------------------------------------

@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


def _record_cli(tmp: Path, server: SimulatorServer, cycles: int, interval_s: float,
                config: Path, out: Path, stop_after: int | None = None) -> Done:
    """`python -m monitor record` as a subprocess; the simulator moves to cycle k+1 as soon
    as the recorder reports cycle k (it waits `interval_s` before the next). `stop_after`:
    SIGTERM once that many cycles are reported."""
    proc = subprocess.Popen(
        [PYTHON, "-m", "monitor", "record", "--cycles", str(cycles), "--interval",
         str(interval_s), "--config", str(config), "--out", str(out)],
        cwd=tmp, env=base_env(RUNPOD_API_KEY=KEY), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    err: list[str] = []
    out_text: list[str] = []
    reader = threading.Thread(target=lambda: out_text.append(proc.stdout.read()
                                                             if proc.stdout else ""))
    reader.start()
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            err.append(line)
            m = re.match(r"record: cycle (\d+)/", line)
            if m:
                server.set_cycle(int(m.group(1)) + 1)
                if stop_after is not None and int(m.group(1)) == stop_after:
                    proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(10)
    return Done(proc.returncode, "".join(out_text), "".join(err))


def test_cli_records_the_simulator_and_the_replay_matches(tmp_path: Path) -> None:
    """`record` from the command line, with a config pointing at the simulator and the key
    in the environment: exit 0, a file whose replay gives the original's timeline (both at
    the recording's interval), without the key or a template token."""
    # its first six cycles (tokens leak, then one is removed), at 2 s a cycle: the
    # simulator's clock and the recorder's agree, and REST v2's per-minute quota (counted
    # on the simulator's clock) still serves a cycle's calls
    data = yaml.safe_load((SCENARIOS / "template-audit-leaky-bootstrap.yaml").read_text())
    data["steps"] = [{**data["steps"][0], "cycles": 4}, {**data["steps"][1], "cycles": 2}]
    data.pop("expect", None)
    interval = 2.0
    original = Scenario.from_dict(data).with_interval(interval)
    server = SimulatorServer(original, KEY)
    out = tmp_path / "cli.yaml"
    with BackgroundSimulator(server) as sim:
        config = write_config(tmp_path / "config.yaml", sim.server.port, 0,
                              tmp_path / "state.db", **original.monitor)
        done = _record_cli(tmp_path, server, original.total_cycles, interval, config, out)
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}: {original.total_cycles} cycles" in done.stdout
    assert KEY not in out.read_text()
    assert KEY not in done.stdout + done.stderr
    assert tokens_of(SCENARIOS / "template-audit-leaky-bootstrap.yaml") & set(
        TOKEN.findall(out.read_text())) == set()
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    recorded = load_scenario(out)
    assert recorded.interval_s == interval
    direct = asyncio.run(replay(original, env={}))
    again = asyncio.run(replay(recorded, env={}))
    assert timeline(again) == timeline(direct) != []
    assert again.failed == []
    # the replay command checks the recording's own expectations
    check = run_monitor(tmp_path, "replay", str(out))
    assert check.returncode == 0, check.stderr


def test_cli_interrupted_writes_the_cycles_so_far(tmp_path: Path) -> None:
    """SIGTERM mid-recording: exit 130 and a loadable file of the cycles that ended."""
    original = load_scenario(SCENARIOS / "auth-key-revoked.yaml")
    server = SimulatorServer(original, KEY)
    out = tmp_path / "cut.yaml"
    with BackgroundSimulator(server) as sim:
        config = write_config(tmp_path / "config.yaml", sim.server.port, 0,
                              tmp_path / "state.db")
        done = _record_cli(tmp_path, server, 100, 0.5, config, out, stop_after=3)
    assert done.returncode == 130, done.stderr
    assert "interrupted; the cycles recorded so far are in" in done.stderr
    assert load_scenario(out).total_cycles in (3, 4)


@pytest.mark.parametrize(("args", "option"), [
    (["--cycles", "0"], "--cycles"),
    (["--cycles", "-3"], "--cycles"),
    (["--cycles", "2", "--interval", "0"], "--interval"),
    (["--cycles", "2", "--out", "{tmp}/no/such/dir/x.yaml"], "--out"),
    (["--cycles", "2", "--out", "{tmp}"], "--out"),
    (["--cycles", "2", "--out", "{tmp}/afile/x.yaml"], "--out"),
])
def test_bad_options_exit_2_naming_the_option(args: list[str], option: str,
                                               tmp_path: Path) -> None:
    """Checked before the configuration is read or RunPod is called."""
    (tmp_path / "afile").write_text("not a directory")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    done = run_monitor(tmp_path, "record", *argv, "--config", str(tmp_path / "none.yaml"),
                       env=base_env(RUNPOD_API_KEY=KEY))
    assert done.returncode == 2
    assert f"error: {option}:" in done.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in a read-only directory")
def test_read_only_out_directory_exits_2(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        done = run_monitor(tmp_path, "record", "--cycles", "1", "--out", str(ro / "x.yaml"),
                           env=base_env(RUNPOD_API_KEY=KEY))
    finally:
        ro.chmod(0o700)
    assert done.returncode == 2
    assert "error: --out:" in done.stderr


def test_no_api_key_exits_2_naming_it(tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "c.yaml", {"runpod": {"graphql_url":
                        "http://127.0.0.1:9/graphql", "rest_url": "http://127.0.0.1:9/v2"}})
    done = run_monitor(tmp_path, "record", "--cycles", "1", "--config", str(config),
                       "--out", str(tmp_path / "x.yaml"), env=base_env())
    assert done.returncode == 2
    assert "runpod.api_key" in done.stderr
    assert not (tmp_path / "x.yaml").exists()
