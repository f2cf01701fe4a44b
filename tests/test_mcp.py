"""`runpod-monitor mcp` as an agent runs it: the MCP SDK's own stdio client starts the server,
which reads a daemon (`run`) watching the simulator over loopback; every tool's answer is
checked against the scenario, and searched for every secret in play."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from daemonkit import (
    PYTHON,
    base_env,
    free_port,
    http,
    procs,
    sim_port,
    start_simulator,
    wait_listening,
    write_config,
    write_yaml,
)
from mcp import ClientSession, StdioServerParameters, stdio_client

pytestmark = pytest.mark.integration

KEY = "mcp-it-key-5b0c7f1e2d9a4c3e"  # not token-shaped: only exact redaction hides it
WRITE_TOKEN = "mcp-write-tok-8d1f3a5c7e9b2046"
GHP = "ghp_" + "Mc7Pq2Wx9Lk4Rt6Yu1Io3Zs8Dv5Bn0Hj2Fg"
HF = "hf_" + "Qw3Er5Ty7Ui9Op1As3Df5Gh7Jk9Lz2Xc4Vb"
URL_PASSWORD = "t0psecretpw"
BASIC = ("prometheus", "Basic-Pw-mcp-4e1a9c0b")  # the daemon's basic auth, for every read
WRONG_TOKEN = "not-the-write-token-3c5e7a9b1d"
SECRETS = {"api key": KEY, "write token": WRITE_TOKEN, "ghp": GHP, "hf": HF,
           "url password": URL_PASSWORD, "basic password": BASIC[1],
           "wrong token": WRONG_TOKEN}
NEEDLES = [*SECRETS.items(), *((f"{k} (tail)", v[-8:]) for k, v in SECRETS.items())]

SICK, LEAKY, HEALTHY = "mcpsick00001", "mcpleaky0002", "mcphealthy03"
SICK_CYCLES = 16  # long enough for the tools to see it sick even on a loaded machine
RULES = {"crash_loop_s": 600}


def _template(tid: str, **extra: Any) -> dict[str, Any]:
    return {"id": tid, "name": tid, "imageName": f"example/{tid}:1", "dockerArgs": "",
            "containerDiskInGb": 60, "env": [], **extra}


SCENARIO: dict[str, Any] = {
    "name": "mcp-integration",
    "interval_s": 1,
    "monitor": {"rules": RULES},
    "account": {"clientBalance": 120.0, "currentSpendPerHr": 0.4, "spendLimit": 80},
    "networkVolumes": [{"id": "mcpvol1", "name": "models", "size": 50,
                        "dataCenterId": "US-TX-3"}],
    "endpoints": [
        {"id": SICK, "name": "sick-worker", "gpuIds": "AMPERE_48,ADA_48_PRO",
         "networkVolumeId": "mcpvol1", "workersMin": 0, "workersMax": 2,
         "template": _template("tpl-sick"),
         "health": {"jobs": {"completed": 10}, "workers": {"idle": 1, "ready": 1}}},
        {"id": LEAKY, "name": "leaky-worker", "gpuIds": "ADA_24,AMPERE_24",
         "workersMin": 0, "workersMax": 1,
         "template": _template(
             "tpl-leaky",
             dockerArgs=(f"bash -c 'git clone https://bot:{URL_PASSWORD}@github.com/acme/w.git"
                         " /w && python -u /w/handler.py'"),
             env=[{"key": "GITHUB_TOKEN", "value": GHP}, {"key": "HF_HOME", "value": "/v/hf"}]),
         "health": {"jobs": {"completed": 4}, "workers": {"idle": 1, "ready": 1}}},
        {"id": HEALTHY, "name": "healthy-api", "gpuIds": "ADA_24,AMPERE_24",
         "workersMin": 0, "workersMax": 1, "template": _template("tpl-ok"),
         "health": {"jobs": {"completed": 100}, "workers": {"idle": 1, "ready": 1}}},
    ],
    "steps": [
        {"cycles": 2},
        # sick-worker: throttled (no capacity in the volume's datacenter), one crashed worker;
        # leaky-worker: a job fails with an error text that quotes a Hugging Face token
        {"cycles": SICK_CYCLES, "endpoints": {
            SICK: {"health": {"jobs": {"inQueue": 2},
                              "workers": {"idle": 0, "ready": 0, "throttled": 1,
                                          "unhealthy": 1}}},
            LEAKY: {"health": {"jobs": {"failed": 1}},
                    "jobs": [{"id": "job-leak-1", "status": "FAILED", "delayTime": 90,
                              "executionTime": 20, "workerId": "wk1",
                              "error": f"OSError: 401 for token {HF} on model download"}]}}},
        # recovered: capacity found, the crashed worker replaced, the queue drained
        {"cycles": 1, "endpoints": {SICK: {"health": {
            "jobs": {"inQueue": 0, "completed": 12},
            "workers": {"idle": 1, "ready": 1, "throttled": 0, "unhealthy": 0}}}}},
    ],
}


@dataclass
class Story:
    """Every tool answer (structured), the tools listed, and every text the server sent."""

    tools: dict[str, Any] = field(default_factory=dict)
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)
    silences_after: list[dict[str, Any]] = field(default_factory=list)
    stderr: str = ""


@asynccontextmanager
async def _session(tmp: Path, args: list[str], name: str, cwd: Path | None = None,
                   **env: str) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(
        command=PYTHON, args=["-m", "monitor", "mcp", *args],
        env=base_env(**{"RUNPOD_API_KEY": KEY, **env}), cwd=str(cwd or tmp),
    )
    with (tmp / f"{name}.stderr").open("w", encoding="utf-8") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            yield session


async def _call(story: Story, session: ClientSession, label: str, tool: str,
                **args: Any) -> dict[str, Any] | None:
    """Call `tool`; keep its answer under `label` (or its error text)."""
    result = await session.call_tool(tool, args)
    story.texts.extend(c.text for c in result.content if hasattr(c, "text"))
    if result.is_error:
        story.errors[label] = " ".join(c.text for c in result.content if hasattr(c, "text"))
        return None
    assert result.structured_content is not None, label
    story.texts.append(json.dumps(result.structured_content))
    story.answers[label] = result.structured_content
    return result.structured_content


async def _until(what: str, probe: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(0.3)


async def _drive(story: Story, tmp: Path, config: Path, base: str) -> None:
    async with _session(tmp, ["--config", str(config)], "mcp",
                        RUNPOD_MONITOR_WRITE_TOKEN=WRITE_TOKEN) as s:
        story.tools = {t.name: t for t in (await s.list_tools()).tools}

        async def sick_and_leaky() -> bool:
            got = await _call(story, s, "poll", "list_diagnoses")
            keys = {(d["code"], d["endpoint_id"]) for d in (got or {}).get("diagnoses", [])}
            return {("no_gpu_capacity", SICK), ("workers_unhealthy", SICK),
                    ("secret_in_template", LEAKY)} <= keys

        await _until("the scenario's diagnoses through list_diagnoses", sick_and_leaky, 25)
        await _call(story, s, "all", "list_diagnoses")
        await _call(story, s, "by name", "list_diagnoses", endpoint="SICK-worker")
        await _call(story, s, "critical", "list_diagnoses", severity="critical")
        await _call(story, s, "explain sick", "explain_endpoint", endpoint="sick-worker")
        await _call(story, s, "explain leaky", "explain_endpoint", endpoint=LEAKY,
                    window_minutes=5)
        await _call(story, s, "explain unknown", "explain_endpoint", endpoint="no-such-thing")
        await _call(story, s, "silence", "silence", code="no_gpu_capacity",
                    endpoint="sick-worker", minutes=30)
        await _call(story, s, "silence everything", "silence")
        await _call(story, s, "silence bad code", "silence", code="not_a_code", minutes=5)

        async def resolved() -> bool:
            got = await _call(story, s, "history poll", "incident_history", window_minutes=10)
            return any(e["event"] == "resolved" and e["code"] == "no_gpu_capacity"
                       for e in (got or {}).get("events", []))

        await _until("no_gpu_capacity to resolve", resolved, SICK_CYCLES + 20)
        await _call(story, s, "history", "incident_history", window_minutes=10)
        await _call(story, s, "history sick critical", "incident_history",
                    endpoint=SICK, severity="critical")
        await _call(story, s, "check", "check")
        await _call(story, s, "explain sick after", "explain_endpoint", endpoint=SICK)
    # no config file where the agent starts it: the defaults and --url serve, without the
    # daemon's basic auth
    elsewhere = tmp / "agent-project"
    elsewhere.mkdir()
    async with _session(tmp, ["--url", base], "mcp-no-config", cwd=elsewhere,
                        RUNPOD_API_KEY="") as s:
        await _call(story, s, "no basic auth", "list_diagnoses")
        await _call(story, s, "check without key", "check")
        await _call(story, s, "silence without token", "silence", code="crash_loop", minutes=5)
    # the config's basic auth with --url; a write token the daemon does not hold
    async with _session(tmp, ["--config", str(config), "--url", base], "mcp-wrong-token",
                        RUNPOD_MONITOR_WRITE_TOKEN=WRONG_TOKEN) as s:
        await _call(story, s, "by url", "list_diagnoses", endpoint=LEAKY)
        await _call(story, s, "silence wrong token", "silence", code="crash_loop", minutes=5)
    with http(auth=BASIC) as client:
        story.silences_after = client.get(f"{base}/api/v1/silences").json()["silences"]



def _stderr(tmp: Path) -> str:
    return "".join(p.read_text(encoding="utf-8") for p in sorted(tmp.glob("mcp*.stderr")))


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Story:
    """Simulator, daemon, and the MCP server driven over stdio through the whole scenario."""
    tmp = tmp_path_factory.mktemp("mcp-it")
    scenario = write_yaml(tmp / "scenario.yaml", SCENARIO)
    s = Story()
    with procs(tmp) as group:
        sim = start_simulator(group, scenario, KEY)
        port = free_port()
        config = write_config(tmp / "config.yaml", sim_port(sim), port, tmp / "state.db",
                              rules=RULES, runpod={"timeout_s": 3},
                              http={"basic_auth": {"username": BASIC[0], "password": BASIC[1]}},
                              api={"write_token": WRITE_TOKEN})
        base = f"http://127.0.0.1:{port}"
        run = group.monitor("run", "run", "--config", str(config),
                            env=base_env(RUNPOD_API_KEY=KEY))
        wait_listening(run, base)  # /healthz answers without basic auth
        asyncio.run(_drive(s, tmp, config, base))
    s.stderr = _stderr(tmp)
    return s


def test_every_tool_is_listed_with_a_description(story: Story) -> None:
    """The five tools, each described, the read-only ones marked so."""
    assert set(story.tools) == {"list_diagnoses", "explain_endpoint", "incident_history",
                                "check", "silence"}
    for tool in story.tools.values():
        assert len(tool.description or "") > 80, tool.name
    assert story.tools["list_diagnoses"].annotations.read_only_hint is True
    assert story.tools["silence"].annotations.read_only_hint is False
    severity = story.tools["list_diagnoses"].input_schema["properties"]["severity"]
    assert "critical" in json.dumps(severity)


def test_list_diagnoses_matches_the_scenario(story: Story) -> None:
    """All three diagnoses with summary, evidence and remedy; filters by name and severity."""
    every = story.answers["all"]
    keys = {(d["code"], d["endpoint_id"]) for d in every["diagnoses"]}
    assert {("no_gpu_capacity", SICK), ("workers_unhealthy", SICK),
            ("secret_in_template", LEAKY)} <= keys
    assert all(d["endpoint_id"] != HEALTHY for d in every["diagnoses"])
    for d in every["diagnoses"]:
        assert d["summary"], d
        assert d["remedy"], d
        assert isinstance(d["evidence"], dict), d
    assert every["truncated"] is False
    by_name = story.answers["by name"]
    assert by_name["diagnoses"]
    assert {d["endpoint_id"] for d in by_name["diagnoses"]} == {SICK}
    critical = story.answers["critical"]
    assert critical["diagnoses"]
    assert {d["severity"] for d in critical["diagnoses"]} == {"critical"}
    assert ("secret_in_template", LEAKY) in {(d["code"], d["endpoint_id"])
                                             for d in critical["diagnoses"]}


def test_explain_endpoint_tells_the_sick_worker_story(story: Story) -> None:
    """Config, workers and queue now, its diagnoses, and an hour whose points saw it sick."""
    e = story.answers["explain sick"]
    assert e["endpoint_id"] == SICK
    assert e["endpoint_name"] == "sick-worker"
    assert e["config"]["network_volume_id"] == "mcpvol1"
    assert e["config"]["gpu_ids"] == "AMPERE_48,ADA_48_PRO"
    assert e["config"]["workers_max"] == 2
    assert e["config"]["template"]["image_name"] == "example/tpl-sick:1"
    assert e["now"]["workers"]["throttled"] == 1
    assert e["now"]["workers"]["unhealthy"] == 1
    assert e["now"]["jobs"]["in_queue"] == 2
    assert {d["code"] for d in e["diagnoses"]} >= {"no_gpu_capacity", "workers_unhealthy"}
    points = e["history"]["points"]
    assert 0 < len(points) <= 60
    assert sum(p["cycles"] for p in points) == e["history"]["cycles"]
    assert any(p.get("workers", {}).get("throttled") == 1 for p in points)
    sick = [p for p in points if p.get("workers", {}).get("throttled")]
    assert all(p["workers"]["unhealthy"] == 1 and p["in_queue"] == 2 for p in sick)
    assert e["releases"]["available"] is False
    assert e["releases"]["items"] == []
    assert e["logs"]["available"] is False
    assert "not collected" in e["logs"]["note"]


def test_explain_endpoint_masks_the_leaky_template(story: Story) -> None:
    """The leaky endpoint's docker args and job error appear with their secrets masked, and
    env values are left out (names kept)."""
    e = story.answers["explain leaky"]
    template = e["config"]["template"]
    assert template["env_keys"] == ["GITHUB_TOKEN", "HF_HOME"]
    assert "env" not in template
    assert "git clone https://bot:****@github.com" in template["docker_args"]
    errors = e["job_errors"]
    assert [j["job_id"] for j in errors] == ["job-leak-1"]
    assert "hf_****" in errors[0]["error"]
    assert e["history"]["window_s"] == 300
    assert {d["code"] for d in e["diagnoses"]} == {"secret_in_template"}


def test_explain_unknown_endpoint_names_the_watched_ones(story: Story) -> None:
    msg = story.errors["explain unknown"]
    assert "no-such-thing" in msg
    assert "sick-worker" in msg
    assert HEALTHY in msg


def test_incident_history_has_the_raised_and_resolved_events(story: Story) -> None:
    """no_gpu_capacity on sick-worker raised and then resolved, with its duration; the
    leaky template's diagnosis still active."""
    h = story.answers["history"]
    ngc = [e for e in h["events"] if e["code"] == "no_gpu_capacity"]
    assert {e["event"] for e in ngc} == {"raised", "resolved"}
    done = next(e for e in ngc if e["event"] == "resolved")
    assert done["endpoint_id"] == SICK
    assert done["endpoint_name"] == "sick-worker"
    assert 2 <= done["duration_s"] <= SICK_CYCLES + 5
    assert done["raised_at"] < done["at"]
    assert h["active_now"] >= 1
    assert h["resolved"] >= 2
    assert [e["at"] for e in h["events"]] == sorted((e["at"] for e in h["events"]),
                                                    reverse=True)
    crit = story.answers["history sick critical"]
    assert crit["events"]
    assert all(e["endpoint_id"] == SICK and e["severity"] == "critical"
               for e in crit["events"])
    after = story.answers["explain sick after"]
    assert {i["code"]: i["state"] for i in after["incidents"]}["no_gpu_capacity"] == "resolved"
    assert after["diagnoses"] == []


def test_check_probes_now(story: Story) -> None:
    """check ran a cycle against the simulator: the three endpoints, the leaky template
    still diagnosed, sick-worker recovered."""
    c = story.answers["check"]
    assert c["endpoints_probed"] == 3
    assert c["probe_failures"] == []
    keys = {(d["code"], d["endpoint_id"]) for d in c["diagnoses"]}
    assert ("secret_in_template", LEAKY) in keys
    assert ("no_gpu_capacity", SICK) not in keys


def test_check_without_a_key_says_how_to_give_one(story: Story) -> None:
    assert "RUNPOD_API_KEY" in story.errors["check without key"]


def test_reads_go_with_the_configured_basic_auth(story: Story) -> None:
    """--url with the config: its basic auth reads the daemon; without the config the
    daemon refuses, and the error says which credential to give."""
    assert [d["code"] for d in story.answers["by url"]["diagnoses"]] == ["secret_in_template"]
    refused = story.errors["no basic auth"]
    assert "http.basic_auth" in refused
    assert "HTTP 401" in refused


def test_silence_needs_the_write_token(story: Story) -> None:
    """With the token the silence is added (by name, resolved to the id); without one, or
    with neither code nor endpoint, the tool refuses and the daemon holds only the first."""
    added = story.answers["silence"]["silence"]
    assert added["code"] == "no_gpu_capacity"
    assert added["endpoint_id"] == SICK
    assert added["source"] == "api"
    assert "RUNPOD_MONITOR_WRITE_TOKEN" in story.errors["silence without token"]
    # a token the daemon does not hold: the daemon refuses it, and the agent is told which
    assert "refused the write token" in story.errors["silence wrong token"]
    assert "HTTP 401" in story.errors["silence wrong token"]
    assert "code, an endpoint or both" in story.errors["silence everything"]
    # the daemon's own validation comes back to the agent, naming the field
    assert "code: not a known diagnosis code" in story.errors["silence bad code"]
    assert [(x["code"], x["endpoint_id"]) for x in story.silences_after] == [
        ("no_gpu_capacity", SICK)]


def test_no_secret_in_any_answer_or_log(story: Story) -> None:
    """No secret, nor its tail, in any text the MCP server sent or logged; the masked forms
    show the secrets were in the data."""
    texts = "\n".join(story.texts)
    assert "ghp_****" in texts
    assert "hf_****" in texts
    leaks = [name for name, needle in NEEDLES if needle in texts or needle in story.stderr]
    assert not leaks

