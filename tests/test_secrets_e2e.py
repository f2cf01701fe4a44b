"""End to end, no secret leaks: a daemon whose config, environment and RunPod data hold
secrets runs against `simulate`; every log line of `run`, `check` and `replay`, every HTTP
body it serves, what it posts to Slack and the bytes of its SQLite files are searched for
each secret and for its tail."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog
from daemonkit import (
    SIGTERM,
    RecordingServer,
    base_env,
    free_port,
    http,
    procs,
    run_monitor_many,
    sim_port,
    start_simulator,
    wait_listening,
    wait_until,
    write_config,
    write_yaml,
)

from monitor import logs as monitor_logs
from monitor.alerts.alertmanager import alert_json
from monitor.alerts.message import message_text
from monitor.alerts.model import Message, Notification
from monitor.alerts.slack import render as slack_render
from monitor.commands.replay import incident_json
from monitor.config import load_settings
from monitor.http.history_api import endpoint_report, incidents_report
from monitor.http.status_page import render as page_render
from monitor.http.web import diagnosis_json, endpoints_json
from monitor.pipeline.cycle import build_pipeline
from monitor.runpod.client import RunPodClient
from monitor.simulator import Scenario, SimulatorServer
from monitor.state.store import Store, unpack

pytestmark = pytest.mark.integration

API_KEY = "rk-E2eApiK3y-7d41c9b8a6f2e0d3"  # not token-shaped: only exact redaction hides it
WEBHOOK_TOKEN = "s3cr3tWebhookToken"
BOT_TOKEN = "xoxb-2718281828-3141592653-AbCdEfGhIjKlMnOpQrStUvWx"
GHP = "ghp_" + "Zt4Rk8Wq2Lm6Np0Xv3Bc7Hd1Jf5Gs9Ky2Ua8"
URL_PASSWORD = "hunter2pass"
BASIC_PASSWORD = "Basic-Auth-Pw-0c4f1e9a"
WRITE_TOKEN = "Wr1te-T0ken-9a8b7c6d5e4f"  # the write routes' bearer token, from the environment
EID = "e2eleaky0001"

SECRETS = {
    "api key": API_KEY,
    "webhook token": WEBHOOK_TOKEN,
    "bot token": BOT_TOKEN,
    "ghp token": GHP,
    "url password": URL_PASSWORD,
    "basic auth password": BASIC_PASSWORD,
    "write token": WRITE_TOKEN,
}
# Each secret and the tail of it that would identify it (a prefix such as ghp_ may show).
NEEDLES = [(name, s) for name, s in SECRETS.items()] + [
    (f"{name} (tail)", s[-8:]) for name, s in SECRETS.items()
] + [("url password (stem)", "hunter2")]

SCENARIO: dict[str, Any] = {
    "name": "secrets-e2e",
    "interval_s": 1,
    "account": {"clientBalance": 90.0, "currentSpendPerHr": 0.3, "spendLimit": 80},
    "endpoints": [{
        "id": EID, "name": "leaky-worker", "gpuIds": "ADA_24,AMPERE_24",
        "workersMin": 0, "workersMax": 1,
        "template": {
            "id": "tpl-leaky", "name": "leaky", "imageName": "example/leaky:1",
            "dockerArgs": (f"bash -c 'git clone https://user:{URL_PASSWORD}@github.com/acme/"
                           "worker.git /w && python -u /w/handler.py'"),
            "containerDiskInGb": 60,
            "env": [{"key": "GITHUB_TOKEN", "value": GHP},
                    {"key": "HF_HOME", "value": "/runpod-volume/hf"}],
        },
        "health": {"jobs": {"completed": 4}, "workers": {"idle": 1, "ready": 1}},
    }],
    "steps": [{"cycles": 6}],
    "expect": [{"cycle": 2, "active": [{"code": "secret_in_template", "endpoint_id": EID}]}],
}


@dataclass
class Captured:
    """Every text the runs produced, by where it came from."""

    texts: dict[str, str] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    slack: list[Any] = field(default_factory=list)
    diagnoses: list[dict[str, Any]] = field(default_factory=list)
    unauthorized_status: int = 0
    write_status: dict[str, int] = field(default_factory=dict)
    status: dict[str, int] = field(default_factory=dict)
    term_status: int | None = None


def _read_db_files(state: Path, label: str, into: dict[str, bytes]) -> None:
    for path in sorted(state.parent.glob(state.name + "*")):
        into[f"{label}:{path.name}"] = path.read_bytes()
    # the observations are stored compressed: read them unpacked too
    with contextlib.closing(sqlite3.connect(state)) as db:
        for cycle, value in db.execute("SELECT cycle, json FROM observations"):
            into[f"{label}:observation {cycle}"] = unpack(value).encode()


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> Captured:
    """Run the daemon, scrape it, stop it, then `check` and `replay`; keep everything."""
    tmp = tmp_path_factory.mktemp("secrets-e2e")
    scenario = write_yaml(tmp / "scenario.yaml", SCENARIO)
    state = tmp / "state.db"
    env = base_env(RUNPOD_API_KEY=API_KEY, SLACK_BOT_TOKEN=BOT_TOKEN,
                   RUNPOD_MONITOR_WRITE_TOKEN=WRITE_TOKEN)
    c = Captured()
    auth = ("prometheus", BASIC_PASSWORD)
    with RecordingServer() as slack, procs(tmp) as group:
        sim = start_simulator(group, scenario, API_KEY)
        port = free_port()
        webhook = f"http://127.0.0.1:{slack.port}/services/T0/B0/{WEBHOOK_TOKEN}"
        config = write_config(
            tmp / "config.yaml", sim_port(sim), port, state,
            runpod={"api_key": API_KEY, "timeout_s": 5},  # `check`s run six at once
            http={"basic_auth": {"username": auth[0], "password": BASIC_PASSWORD}},
            alerts={"slack": {"webhook_url": webhook, "channel": "#gpu-alerts",
                              "min_severity": "info"}},
            log={"level": "debug", "format": "json"},
        )
        base = f"http://127.0.0.1:{port}"
        run = group.monitor("run", "run", "--config", str(config), env=env)
        try:
            wait_listening(run, base)
            with http(auth=auth) as client:
                def leak_found() -> list[dict[str, Any]] | None:
                    ds = client.get(f"{base}/api/v1/diagnoses").json()["diagnoses"]
                    return ds if any(d["code"] == "secret_in_template" for d in ds) else None

                c.diagnoses = wait_until("secret_in_template", leak_found, 20)
                time.sleep(2.5)  # a few more cycles: alerts delivered, state written
                for path in ("/metrics", "/api/v1/diagnoses", "/api/v1/endpoints",
                             f"/api/v1/endpoints/{EID}", "/api/v1/incidents", "/"):
                    r = client.get(base + path)
                    assert r.status_code == 200, path
                    c.texts[f"GET {path}"] = r.text
                _read_db_files(state, "running", c.blobs)
            with http() as anonymous:
                c.unauthorized_status = anonymous.get(f"{base}/metrics").status_code
                # the write token in use: a silence (of a code this scenario never raises)
                # with it, a wrong one, and a job, so the token meets every write path
                silence = {"code": "idle_spend", "endpoint_id": EID,
                           "until": "2099-01-01T00:00:00Z"}
                for name, token in (("right", WRITE_TOKEN), ("wrong", WRITE_TOKEN[::-1])):
                    r = anonymous.post(f"{base}/api/v1/silences", json=silence,
                                       headers={"Authorization": f"Bearer {token}"})
                    c.write_status[f"silence {name}"] = r.status_code
                    c.texts[f"POST /api/v1/silences ({name} token)"] = r.text
                r = anonymous.post(f"{base}/api/v1/jobs", json={"endpoint_id": EID,
                                   "job_id": "job-e2e"},
                                   headers={"Authorization": f"Bearer {WRITE_TOKEN}"})
                c.write_status["job right"] = r.status_code
                c.texts["POST /api/v1/jobs"] = r.text
                time.sleep(1.5)  # a cycle polls the job
            with http(auth=auth) as client:
                c.texts["GET /api/v1/silences"] = client.get(f"{base}/api/v1/silences").text
            run.signal(SIGTERM)
            c.term_status = run.wait(15)
        finally:
            run.kill()
        c.texts["run stdout"] = run.stdout()
        c.texts["run stderr"] = run.stderr()
        _read_db_files(state, "stopped", c.blobs)

        # the console a person reads (`--log-format console`), with its own state so the
        # leaked token's incident is raised, and drawn as a block, again
        console_config = write_config(
            tmp / "console.yaml", sim_port(sim), free_port(), tmp / "console.db",
            runpod={"api_key": API_KEY, "timeout_s": 5},
            alerts={"slack": {"webhook_url": webhook, "channel": "#gpu-alerts",
                              "min_severity": "info"}},
            log={"level": "debug", "format": "json"},
        )
        console = group.monitor("run-console", "run", "--config", str(console_config),
                                "--log-format", "console", env=env)
        try:
            wait_until("the console's secret_in_template block",
                       lambda: "RAISED" in console.stderr() and "fix" in console.stderr(), 20)
            time.sleep(1.5)
            console.signal(SIGTERM)
            console.wait(15)
        finally:
            console.kill()
        c.texts["run console stdout"] = console.stdout()
        c.texts["run console stderr"] = console.stderr()

        # then, at once: `check` on the stopped daemon's config and database; `check` refusing
        # the same config when it is readable by every user, and a YAML syntax error on a line
        # that holds a secret; `replay` of the scenario
        readable = tmp / "readable.yaml"
        readable.write_text(config.read_text(encoding="utf-8"), encoding="utf-8")
        readable.chmod(0o644)
        broken = tmp / "broken.yaml"
        broken.write_text(f'runpod:\n  api_key: "{API_KEY}\n  timeout_s: [1\n',
                          encoding="utf-8")
        broken.chmod(0o600)
        commands = {
            "check json": ["check", "--config", str(config), "--format", "json"],
            "check text": ["check", "--config", str(config), "--format", "text"],
            "check readable config": ["check", "--config", str(readable)],
            "check broken config": ["check", "--config", str(broken)],
            "replay json": ["replay", str(scenario), "--format", "json"],
            "replay text": ["replay", str(scenario), "--format", "text"],
        }
        for name, done in run_monitor_many(tmp, commands, env=env).items():
            c.status[name] = done.returncode
            c.texts[f"{name} stdout"] = done.stdout
            c.texts[f"{name} stderr"] = done.stderr
        c.slack = list(slack.requests)
    return c


def _leaks(where: str, text: str) -> list[str]:
    return [f"{name} in {where}" for name, needle in NEEDLES if needle in text]


def test_the_secrets_were_really_in_play(captured: Captured) -> None:
    """The secrets were used: key, template token, basic auth, Slack; each command ran."""
    codes = {d["code"] for d in captured.diagnoses}
    assert "secret_in_template" in codes
    assert captured.unauthorized_status == 401
    assert captured.write_status == {"silence right": 201, "silence wrong": 401,
                                     "job right": 202}
    assert '"idle_spend"' in captured.texts["GET /api/v1/silences"]
    assert captured.term_status == 0
    assert captured.status == {
        "check json": 1, "check text": 1,  # secret_in_template is critical
        "check readable config": 2, "check broken config": 2,
        "replay json": 0, "replay text": 0,
    }, {k: v for k, v in captured.texts.items() if k.startswith("check")}
    assert "runpod.api_key" in captured.texts["check readable config stderr"]
    assert "line " in captured.texts["check broken config stderr"]
    assert '"secret_in_template"' in captured.texts["replay json stdout"]
    # the template (env names, masked values) was stored: the database was worth searching
    assert any(b"GITHUB_TOKEN" in blob for blob in captured.blobs.values())
    assert "leaky-worker" in captured.texts["GET /api/v1/endpoints"]
    # the one-endpoint view carries the template (docker args masked, env names only)
    assert "GITHUB_TOKEN" in captured.texts[f"GET /api/v1/endpoints/{EID}"]
    # the status page's incident history and charts were rendered (and searched), and the
    # history's table in the database holds the incident (searched with the files' bytes)
    page = captured.texts["GET /"]
    assert '<li class="card ev critical" data-code="secret_in_template"' in page
    assert 'data-chart="workers"' in page
    assert any(b'"code":"secret_in_template","endpoint_id":"' + EID.encode() + b'"'
               b',"endpoint_name":"leaky-worker"' in blob for blob in captured.blobs.values())
    posted = [r.body.decode("utf-8", "replace") for r in captured.slack]
    assert any("secret_in_template" in body for body in posted), posted


def test_no_secret_in_daemon_logs(captured: Captured) -> None:
    """No secret in any stdout or stderr line of `run` (at debug level), in JSON or on the
    console."""
    logs = ("run stdout", "run stderr", "run console stdout", "run console stderr")
    leaks = [leak for where in logs for leak in _leaks(where, captured.texts[where])]
    assert not leaks
    assert captured.texts["run stderr"].strip()
    # the console drew the leak's block: its summary and evidence went through the redactor
    console = captured.texts["run console stderr"]
    assert "RAISED    critical secret_in_template" in console, console[-3000:]
    assert "GITHUB_TOKEN" in console


def test_no_secret_in_http_bodies(captured: Captured) -> None:
    """No secret in /metrics, /api/v1/diagnoses, /api/v1/endpoints (all and one),
    /api/v1/incidents, the status page or the answers of the write routes."""
    leaks = [leak for where, text in captured.texts.items() if where.startswith(("GET ", "POST "))
             for leak in _leaks(where, text)]
    assert not leaks


def test_no_secret_in_check_and_replay_output(captured: Captured) -> None:
    """No secret in the output of check (json, text, refused configs) or replay."""
    leaks = [leak for where, text in captured.texts.items()
             if where.startswith(("check ", "replay ")) for leak in _leaks(where, text)]
    assert not leaks


def test_no_secret_in_sqlite_files(captured: Captured) -> None:
    """No secret in the bytes of the state database, its WAL or shared memory."""
    leaks = [leak for where, blob in captured.blobs.items()
             for leak in _leaks(where, blob.decode("latin-1"))]
    assert not leaks


def test_no_secret_in_what_slack_receives(captured: Captured) -> None:
    """No secret in the bodies the daemon posted to the loopback Slack webhook."""
    leaks = [leak for i, req in enumerate(captured.slack)
             for leak in _leaks(f"slack request {i}", req.body.decode("utf-8", "replace"))
             if WEBHOOK_TOKEN not in leak]
    assert not leaks
    for req in captured.slack:
        assert req.path.startswith("/services/T0/B0/")


# --- worker logs: a token in a log line and in the template env ------------------------
#
# The prober does not make the v2 calls yet (the integration step adds them): its
# `/workers` answer and the log read of the workers `Pipeline.logs_wanted` names are stood
# in for by adding them to the observation the real prober made from the simulator.
# Everything after it is the real pipeline, store, renderers and sinks' bodies.

LOG_HF = "hf_" + "Lg7Qz2Wx9Rt4Yp6Ua1Sd3Fg5Hj8Kl0Zx4"  # token-shaped, in env and in a log line
LOG_DBPW = "Db-Pa55-not-token-shaped-913"  # secret only because its env key says so
LOG_EID = "e2elogs00001"
LOG_NEEDLES = [("hf token", LOG_HF), ("hf token (tail)", LOG_HF[-8:]),
               ("db password", LOG_DBPW), ("db password (tail)", LOG_DBPW[-8:])]
LOG_LINES = (
    f"starting worker with HF_TOKEN={LOG_HF} DB_PASSWORD={LOG_DBPW}",
    "huggingface_hub.errors.GatedRepoError: 403 Client Error. Cannot access gated repo for "
    f"url https://huggingface.co/acme/private/resolve/main/config.json (token {LOG_HF})",
    f"fatal: Authentication failed for 'https://acme:{LOG_DBPW}@github.com/acme/w.git/'",
    "Killed",
)


def _log_scenario() -> Any:
    return Scenario.from_dict({
        "name": "secrets-logs", "interval_s": 30,
        "account": {"clientBalance": 90.0, "currentSpendPerHr": 0.3},
        "endpoints": [{
            "id": LOG_EID, "name": "leaky-logs", "gpuIds": "AMPERE_48", "workersMin": 0,
            "workersMax": 1, "idleTimeout": 5,
            "template": {"id": "tpl-logs", "name": "logs", "imageName": "u/logs:1",
                         "dockerArgs": "", "containerDiskInGb": 50,
                         "env": [{"key": "HF_TOKEN", "value": LOG_HF},
                                 {"key": "DB_PASSWORD", "value": LOG_DBPW}]},
            "health": {"jobs": {"inQueue": 2}, "workers": {"unhealthy": 1}},
            # what REST v2 lists of it: the failing worker and its log stream
            "v2": {"workers": [{"id": "wrk-bad", "status": "UNHEALTHY", "started_s": -600}],
                   "logs": {"wrk-bad": [{"t": -5 + i, "source": "container", "line": line}
                                        for i, line in enumerate(LOG_LINES)]}},
        }],
        "steps": [{"cycles": 10}],
    })


def _log_reads(server: SimulatorServer) -> int:
    return server.request_counts[("v2", "logs")]


async def test_no_secret_of_a_worker_log_in_any_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """A token in a log line and in the template env (one token-shaped, one only named
    secret by its key): every output holds the logs' cause and none of the secrets."""
    key = "logs-e2e-key-0123456789"
    before = structlog.get_config()  # configure() binds to capsys's stderr: put it back after
    monitor_logs.configure("debug", "json", secrets=[key])
    server = SimulatorServer(_log_scenario(), key)
    url = await server.start()
    client = RunPodClient(api_key=key, graphql_url=f"{url}/graphql", rest_url=f"{url}/v2",
                          timeout_s=2.0)
    state = tmp_path / "state.db"
    outputs: dict[str, str] = {}
    t0 = 1_767_225_600.0
    try:
        settings = load_settings(None, env={})
        store = Store(state)
        pipeline = build_pipeline(settings, client, sinks=[], store=store)
        reads = []
        for k in range(1, 5):
            server.set_cycle(k)
            result = await pipeline.cycle(k, t0 + 30 * (k - 1))
            reads.append(_log_reads(server))
        # the prober read the failing worker's log (REST v2, over the wire) once in its
        # incident, the cycle after it began
        assert reads == [0, 1, 1, 1], reads
        incidents = pipeline.tracker.incidents()
        (unhealthy,) = [i for i in incidents if i.diagnosis.code == "workers_unhealthy"]
        d = unhealthy.diagnosis
        assert d.evidence["log_signature"] == "hf_download", d.evidence
        assert d.summary.startswith("Worker logs: Hugging Face refused the model download")

        outputs["api diagnoses"] = json.dumps([diagnosis_json(i) for i in incidents])
        outputs["api endpoints"] = json.dumps(endpoints_json(result.observation, str))
        outputs["api endpoint"] = json.dumps(
            endpoint_report(pipeline.history.view(), LOG_EID, 3600.0, None))
        outputs["api incidents"] = json.dumps(
            incidents_report(pipeline.episodes.episodes(), t0 + 120, 3600.0))
        outputs["metrics"] = pipeline.metrics.render()[0].decode()

        class Runtime:
            def metrics_body(self) -> tuple[bytes, str]:
                return b"", "text/plain"

            def health(self) -> tuple[bool, str]:
                return True, "ok"

            def incidents(self) -> list[Any]:
                return incidents

            def last_observation(self) -> Any:
                return result.observation

            def endpoint_name(self, endpoint_id: str) -> str:
                return endpoint_id

            def register_job(self, endpoint_id: str, job_id: str) -> bool:
                return True

            def interval_s(self) -> float:
                return 30.0

            def history(self) -> Any:
                return pipeline.history.view()

            def episodes(self) -> list[Any]:
                return pipeline.episodes.episodes()

        outputs["page"] = page_render(Runtime(), now=t0 + 120)
        notes = tuple(Notification("firing", i, t0 + 120, 4) for i in incidents)
        message = Message("firing", "slack", "b", t0 + 120, 4, notes,
                          message_text("firing", notes, t0 + 120))
        outputs["slack"] = json.dumps(slack_render(message))
        outputs["alertmanager"] = json.dumps([alert_json(i, t0 + 240) for i in incidents])
        outputs["replay json"] = json.dumps([incident_json(i) for i in incidents])
        store.close()

        # a restart: the logs come back from SQLite, and the diagnosis still shows them
        store = Store(state)
        again = build_pipeline(settings, client, sinks=[], store=store)
        again.restore(store.load(), t0 + 150)
        await again.cycle(5, t0 + 150)  # no log read this cycle
        (d2,) = [i.diagnosis for i in again.tracker.incidents()
                 if i.diagnosis.code == "workers_unhealthy"]
        assert d2.evidence["log_signature"] == "hf_download"
        outputs["api after restart"] = json.dumps(
            [diagnosis_json(i) for i in again.tracker.incidents()])
        store.close()
    finally:
        await client.aclose()
        await server.stop()
        structlog.configure(**before)
    captured = capsys.readouterr()
    outputs["logs"] = captured.out + captured.err
    blobs: dict[str, bytes] = {}
    _read_db_files(state, "state", blobs)
    with contextlib.closing(sqlite3.connect(state)) as db:
        kept = db.execute("SELECT json FROM incident_logs").fetchall()
    assert kept
    assert "Cannot access gated repo" in kept[0][0]

    # the logs' evidence is in each output (so each was worth searching)
    assert "GatedRepoError" in outputs["page"]
    assert "<details class=\"logs\">" in outputs["page"]
    assert "Worker logs" in outputs["slack"]
    assert "GatedRepoError" in outputs["slack"]
    assert "log_excerpt" in outputs["alertmanager"]
    assert "workers_unhealthy" in outputs["api incidents"]  # (its summary is the raise's)
    assert "workers_unhealthy" in outputs["logs"]  # the cycle's log lines were captured
    assert "Worker logs: Hugging Face refused" in outputs["api after restart"]
    assert "worker_logs" in outputs["api diagnoses"]
    assert "worker_logs" in outputs["replay json"]
    assert "hf_****" in outputs["api diagnoses"]
    leaks = [f"{name} in {where}" for where, text in outputs.items()
             for name, needle in LOG_NEEDLES if needle in text]
    leaks += [f"{name} in {where}" for where, blob in blobs.items()
              for name, needle in LOG_NEEDLES if needle in blob.decode("latin-1")]
    assert not leaks
