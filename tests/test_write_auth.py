"""Credentials and bounds of the write routes (POST /api/v1/silences, POST /api/v1/jobs).

A real daemon (monitor.commands.daemon.Daemon, started as `run` starts it) listens on 0.0.0.0 on
a free port; the tests reach it on 127.0.0.1 (0.0.0.0 includes loopback), so what they
exercise is the rule for a listener reachable beyond this machine. Its RunPod URLs point
at a closed loopback port: no cycle succeeds, none is needed here.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from daemonkit import base_env, run_monitor, write_yaml

from monitor.alerts.router import RecordingSink
from monitor.commands.daemon import Daemon
from monitor.commands.demo import demo_scenario, demo_settings
from monitor.config import ConfigError, load_settings, settings_from_dict

TOKEN = "wt-0123456789abcdef-Right"
WRONG = "wt-0123456789abcdef-Wrong"
USER, PASSWORD = "ops", "basic-pw-5f1c2a"
NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
CLOSED = "http://127.0.0.1:1"  # nothing listens: cycles fail fast, which these tests ignore


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


SILENCE = {"code": "crash_loop", "endpoint_id": "ep1", "until": _iso(NOW + 3600)}
JOB = {"endpoint_id": "ep1", "job_id": "job-1"}
WRITES = [("/api/v1/silences", SILENCE, 201), ("/api/v1/jobs", JOB, 202)]
READS = ["/metrics", "/healthz", "/", "/api/v1/diagnoses", "/api/v1/endpoints",
         "/api/v1/silences"]


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _settings(tmp_path: Path, listen: str = "0.0.0.0:0", **sections: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "interval_s": 3600,
        "runpod": {"api_key": "rpa_test_key_0123456789", "graphql_url": f"{CLOSED}/graphql",
                   "rest_url": f"{CLOSED}/v2", "timeout_s": 0.5},
        "http": {"listen": listen},
        "state": {"path": str(tmp_path / "state.db")},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return data


@dataclass
class Served:
    """A started daemon and a client session for 127.0.0.1 on its port."""

    daemon: Daemon
    base: str
    session: aiohttp.ClientSession

    async def call(
        self, method: str, path: str, body: Any = None, auth: str | None = None,
        headers: dict[str, str] | None = None, data: Any = None,
    ) -> tuple[int, Any]:
        sent = dict(headers or {})
        if auth is not None:
            sent["Authorization"] = auth
        async with self.session.request(
            method, self.base + path, json=body, data=data, headers=sent
        ) as r:
            text = await r.text()
            is_json = r.content_type == "application/json"
            return r.status, json.loads(text) if is_json else text


Start = Callable[..., Awaitable[Served]]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    """Factory: `await start(**sections)` -> a daemon on 0.0.0.0 (or `listen`), reached on
    127.0.0.1."""
    running: list[Served] = []

    async def go(listen: str = "0.0.0.0:0", **sections: Any) -> Served:
        settings = settings_from_dict(_settings(tmp_path / str(len(running)), listen,
                                                **sections), env={})
        daemon = Daemon(settings, sinks=[RecordingSink("slack", "info")], clock=lambda: NOW)
        url = await daemon.start()
        port = url.rsplit(":", 1)[1]
        session = aiohttp.ClientSession(trust_env=False)
        served = Served(daemon, f"http://127.0.0.1:{port}", session)
        running.append(served)
        return served

    try:
        yield go
    finally:
        for served in running:
            await served.session.close()
            await served.daemon.stop(grace_s=2)


# ---------------------------------------------------------------- credentials


@pytest.mark.parametrize(("path", "body", "ok"), WRITES)
async def test_write_beyond_loopback_needs_the_token(
    start: Start, path: str, body: dict[str, Any], ok: int
) -> None:
    """On 0.0.0.0 with a write token: no credential and a wrong token are 401 with a JSON
    error and change nothing; the right token is served."""
    served = await start(api={"write_token": TOKEN})
    for auth in (None, f"Bearer {WRONG}", f"Bearer {TOKEN[:-1]}", "Bearer ", TOKEN,
                 _basic("x", TOKEN)):
        status, answer = await served.call("POST", path, body, auth)
        assert status == 401, (auth, answer)
        assert answer["error"].startswith("unauthorized"), answer
    assert served.daemon.jobs.tracked() == []
    assert served.daemon.pipeline.router.silences.added_in_force(NOW) == 0
    status, answer = await served.call("POST", path, body, f"Bearer {TOKEN}")
    assert status == ok, answer
    status, answer = await served.call("POST", path, body, f"bearer  {TOKEN}")  # scheme any case
    assert status in (200, 201), answer
    if path == "/api/v1/jobs":
        assert served.daemon.jobs.tracked() == [("ep1", "job-1")]
    else:
        assert served.daemon.pipeline.router.silences.added_in_force(NOW) == 2


@pytest.mark.parametrize(("path", "body", "ok"), WRITES)
async def test_write_beyond_loopback_takes_basic_auth_or_the_token(
    start: Start, path: str, body: dict[str, Any], ok: int
) -> None:
    """With basic auth and a token configured, a write passes with either; a wrong password,
    or none, is 401."""
    served = await start(api={"write_token": TOKEN},
                         http={"basic_auth": {"username": USER, "password": PASSWORD}})
    for auth in (None, _basic(USER, "wrong"), _basic("root", PASSWORD), f"Bearer {WRONG}"):
        status, _ = await served.call("POST", path, body, auth)
        assert status == 401, auth
    status, _ = await served.call("POST", path, body, _basic(USER, PASSWORD))
    assert status == ok
    status, _ = await served.call("POST", path, body, f"Bearer {TOKEN}")
    assert status in (200, 201)


async def test_basic_auth_alone_guards_writes_beyond_loopback(start: Start) -> None:
    """Basic auth with no token is a credential: the config starts, and writes need it."""
    served = await start(http={"basic_auth": {"username": USER, "password": PASSWORD}})
    for path, body, ok in WRITES:
        assert (await served.call("POST", path, body))[0] == 401
        assert (await served.call("POST", path, body, f"Bearer {TOKEN}"))[0] == 401
        assert (await served.call("POST", path, body, _basic(USER, PASSWORD)))[0] == ok


async def test_reads_stay_open_beyond_loopback(start: Start) -> None:
    """Reads need no credential with only a write token set, as an exporter's do."""
    served = await start(api={"write_token": TOKEN})
    for path in READS:
        status, _ = await served.call("GET", path)
        assert status in (200, 503), path  # /healthz may say no cycle succeeded yet


async def test_basic_auth_still_guards_reads(start: Start) -> None:
    """With basic auth set, reads (all but /healthz) need it; the write token is not a
    read credential."""
    served = await start(api={"write_token": TOKEN},
                         http={"basic_auth": {"username": USER, "password": PASSWORD}})
    for path in READS:
        if path == "/healthz":
            continue
        assert (await served.call("GET", path))[0] == 401, path
        assert (await served.call("GET", path, auth=f"Bearer {TOKEN}"))[0] == 401, path
        assert (await served.call("GET", path, auth=_basic(USER, PASSWORD)))[0] == 200, path


async def test_loopback_writes_need_nothing_by_default(start: Start) -> None:
    """On 127.0.0.1 with no credential configured, writes work as before."""
    served = await start(listen="127.0.0.1:0")
    for path, body, ok in WRITES:
        assert (await served.call("POST", path, body))[0] == ok


async def test_loopback_with_a_token_enforces_it(start: Start) -> None:
    """A token that is configured is required, on loopback too."""
    served = await start(listen="127.0.0.1:0", api={"write_token": TOKEN})
    assert (await served.call("POST", "/api/v1/jobs", JOB))[0] == 401
    assert (await served.call("POST", "/api/v1/jobs", JOB, f"Bearer {TOKEN}"))[0] == 202


async def test_allow_unauthenticated_writes_is_explicit(start: Start) -> None:
    """`api.allow_unauthenticated_writes: true` starts 0.0.0.0 with open writes."""
    served = await start(api={"allow_unauthenticated_writes": True})
    for path, body, ok in WRITES:
        assert (await served.call("POST", path, body))[0] == ok


async def test_write_routes_off(start: Start) -> None:
    """`api.write_routes: false` needs no credential on 0.0.0.0: there is nothing to write."""
    served = await start(api={"write_routes": False})
    assert (await served.call("POST", "/api/v1/silences", SILENCE))[0] == 405
    assert (await served.call("POST", "/api/v1/jobs", JOB))[0] == 404
    assert (await served.call("GET", "/api/v1/silences"))[0] == 200


# ---------------------------------------------------------------- refused configurations


@pytest.mark.parametrize("listen", ["0.0.0.0:9108", "[::]:9108", "192.0.2.7:9108",
                                    "monitor.internal:9108"])
def test_open_writes_beyond_loopback_are_refused(tmp_path: Path, listen: str) -> None:
    """No token, no basic auth, writes on, beyond loopback: a ConfigError that names the
    fields to set."""
    with pytest.raises(ConfigError) as refused:
        settings_from_dict(_settings(tmp_path, listen), env={})
    (problem,) = refused.value.problems
    assert problem.startswith("api.write_token: required: http.listen")
    for name in ("api.write_token_file", "RUNPOD_MONITOR_WRITE_TOKEN", "http.basic_auth",
                 "api.write_routes: false", "api.allow_unauthenticated_writes: true"):
        assert name in problem


@pytest.mark.parametrize("listen", ["127.0.0.1:9108", "127.3.4.5:9108", "[::1]:9108",
                                    "localhost:9108", "[::ffff:127.0.0.1]:9108"])
def test_loopback_without_credentials_is_accepted(tmp_path: Path, listen: str) -> None:
    """Every loopback form starts with open writes, as today."""
    settings = settings_from_dict(_settings(tmp_path, listen), env={})
    assert settings.http.loopback


def test_token_from_env_or_file(tmp_path: Path) -> None:
    """The token comes from RUNPOD_MONITOR_WRITE_TOKEN or api.write_token_file, is listed
    for redaction, and a short one is refused without echoing it."""
    from_env = settings_from_dict(_settings(tmp_path), env={"RUNPOD_MONITOR_WRITE_TOKEN": TOKEN})
    assert from_env.api.write_token is not None
    assert from_env.api.write_token.get_secret_value() == TOKEN
    assert TOKEN in from_env.secrets()
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n", encoding="utf-8")
    from_file = settings_from_dict(_settings(tmp_path, api={"write_token_file": str(path)}),
                                   env={})
    assert from_file.api.write_token is not None
    assert from_file.api.write_token.get_secret_value() == TOKEN
    with pytest.raises(ConfigError) as short:
        settings_from_dict(_settings(tmp_path, api={"write_token": "short-tok1"}), env={})
    assert short.value.problems == [
        "api.write_token: must be at least 16 characters (e.g. `openssl rand -hex 32`)"]


@pytest.mark.integration
def test_run_refuses_open_writes_with_exit_2(tmp_path: Path) -> None:
    """`run` on such a config exits 2 before listening, naming the field, and no secret."""
    config = write_yaml(tmp_path / "config.yaml", _settings(tmp_path, "0.0.0.0:9108"),
                        mode=0o600)
    done = run_monitor(tmp_path, "run", "--config", str(config), env=base_env())
    assert done.returncode == 2, done.stdout + done.stderr
    assert "api.write_token: required: http.listen '0.0.0.0:9108'" in done.stderr
    assert "rpa_test_key_0123456789" not in done.stdout + done.stderr


# ---------------------------------------------------------------- bounds


async def test_body_over_the_cap_is_413(start: Start) -> None:
    """A write body over api.max_body_bytes is 413 with a JSON error: by Content-Length,
    chunked with no length, and gzip-encoded that inflates past it."""
    served = await start(api={"write_token": TOKEN, "max_body_bytes": 1024})
    auth = f"Bearer {TOKEN}"
    big = {**SILENCE, "pad": "x" * 2000}
    status, answer = await served.call("POST", "/api/v1/silences", big, auth)
    assert status == 413
    assert answer["error"] == "body too large: at most 1024 bytes (api.max_body_bytes)"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b" " * 512

    status, answer = await served.call("POST", "/api/v1/jobs", data=chunks(), auth=auth)
    assert status == 413, answer
    bomb = gzip.compress(b" " * 10_000_000)
    status, answer = await served.call(
        "POST", "/api/v1/jobs", data=bomb, auth=auth,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert status == 413, answer
    assert served.daemon.jobs.tracked() == []
    # at the cap is fine
    padded = json.dumps({**JOB, "x": ""}).encode()
    exact = padded[:-2] + b" " * (1024 - len(padded)) + padded[-2:]
    assert len(exact) == 1024
    status, answer = await served.call("POST", "/api/v1/jobs", data=exact, auth=auth)
    assert status == 202, answer


async def test_unauthenticated_body_is_not_read(start: Start) -> None:
    """A large body without the credential is 401, not 413: nothing is read first."""
    served = await start(api={"write_token": TOKEN, "max_body_bytes": 1024})
    status, _ = await served.call("POST", "/api/v1/jobs", {**JOB, "pad": "x" * 5000})
    assert status == 401


async def test_silences_past_the_cap_are_429(start: Start) -> None:
    """At api.max_silences silences added through the API in force, the next is 429; the
    config's own silences do not count; once one ends, there is room again."""
    served = await start(api={"write_token": TOKEN, "max_silences": 3}, alerts={
        "silences": [{"code": "idle_spend", "until": _iso(NOW + 86400)}]})
    auth = f"Bearer {TOKEN}"
    for i in range(3):
        until = NOW + 60 if i == 0 else NOW + 3600
        status, _ = await served.call("POST", "/api/v1/silences",
                                      {"endpoint_id": f"ep{i}", "until": _iso(until)}, auth)
        assert status == 201
    status, answer = await served.call("POST", "/api/v1/silences", SILENCE, auth)
    assert status == 429
    assert "api.max_silences" in answer["error"]
    listed = (await served.call("GET", "/api/v1/silences"))[1]["silences"]
    assert len(listed) == 4
    book = served.daemon.pipeline.router.silences
    assert book.added_in_force(NOW + 61) == 2  # the first has ended by then


async def test_jobs_past_the_cap_are_429_and_keep_the_tracked(start: Start) -> None:
    """At api.max_jobs tracked jobs a new one is 429 and the tracked ones stay (before, the
    oldest was dropped: anyone posting could push out every real job); a duplicate is
    still 200."""
    served = await start(api={"write_token": TOKEN, "max_jobs": 2})
    auth = f"Bearer {TOKEN}"
    for job in ("a", "b"):
        assert (await served.call("POST", "/api/v1/jobs", {**JOB, "job_id": job}, auth))[0] == 202
    status, answer = await served.call("POST", "/api/v1/jobs", {**JOB, "job_id": "c"}, auth)
    assert status == 429
    assert "api.max_jobs" in answer["error"]
    assert served.daemon.jobs.tracked() == [("ep1", "a"), ("ep1", "b")]
    assert (await served.call("POST", "/api/v1/jobs", {**JOB, "job_id": "a"}, auth))[0] == 200


async def test_ids_longer_than_256_are_400(start: Start) -> None:
    """Ids are bounded too: what a write stores stays small."""
    served = await start(listen="127.0.0.1:0")
    long_id = "e" * 257
    status, answer = await served.call("POST", "/api/v1/jobs", {**JOB, "job_id": long_id})
    assert status == 400
    assert answer["error"].startswith("job_id: required, a non-empty string of at most 256")
    status, answer = await served.call("POST", "/api/v1/silences",
                                       {**SILENCE, "endpoint_id": long_id})
    assert status == 400
    assert answer["error"].startswith("endpoint_id: must be a non-empty string of at most 256")
    assert (await served.call("POST", "/api/v1/jobs", {**JOB, "job_id": "j" * 256}))[0] == 202


def test_literal_token_in_a_readable_file_is_refused(tmp_path: Path) -> None:
    """A write token written in a file every user can read is refused like the other
    secrets, and the report does not quote it."""
    config = write_yaml(tmp_path / "config.yaml", {"api": {"write_token": TOKEN}}, mode=0o644)
    with pytest.raises(ConfigError) as refused:
        load_settings(config, env={})
    assert refused.value.problems == [
        "api.write_token: the file is readable by every user and holds this secret; "
        f"chmod 600 {config} or use ${{RUNPOD_MONITOR_WRITE_TOKEN}}"]
    assert TOKEN not in str(refused.value)


def test_demo_beyond_loopback_is_read_only_without_a_token(tmp_path: Path) -> None:
    """`demo --host 0.0.0.0` starts with its write routes off, or on with the token."""
    scenario = demo_scenario()
    read_only = demo_settings(scenario, CLOSED, "k", 9108, tmp_path, {}, "0.0.0.0")
    assert settings_from_dict(read_only, env={}).api.write_routes is False
    env = {"RUNPOD_MONITOR_WRITE_TOKEN": TOKEN}
    writable = settings_from_dict(
        demo_settings(scenario, CLOSED, "k", 9108, tmp_path, env, "0.0.0.0"), env=env)
    assert writable.api.write_routes is True
    assert writable.api.write_token is not None
    loopback = demo_settings(scenario, CLOSED, "k", 9108, tmp_path, {})
    assert settings_from_dict(loopback, env={}).api.write_routes is True


@pytest.mark.parametrize(("write_routes", "allow", "refused"), [
    ("true", None, True), (1, None, True), ("on", "false", True), (None, 0, True),
    ("false", None, False), (0, None, False), (None, "yes", False), (None, "true", False),
])
def test_refusal_reads_flags_as_the_model_does(
    tmp_path: Path, write_routes: Any, allow: Any, refused: bool
) -> None:
    """`write_routes: "true"` (from a ${VAR}, say) is on, `allow...: "yes"` is allowed: the
    start-up check reads each flag as the settings will."""
    api = {k: v for k, v in (("write_routes", write_routes),
                             ("allow_unauthenticated_writes", allow)) if v is not None}
    data = _settings(tmp_path, "0.0.0.0:9108", api=api)
    if refused:
        with pytest.raises(ConfigError, match=r"api\.write_token: required"):
            settings_from_dict(data, env={})
    else:
        settings_from_dict(data, env={})
