"""POST/GET /api/v1/silences on the daemon's HTTP app over loopback, and what a silence
added there does to the alerts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from alertkit import T0, Story, diag
from slack_standin import SlackStandIn

from monitor.alerts.router import RecordingSink
from monitor.commands.daemon import Daemon
from monitor.config import settings_from_dict
from monitor.http.web import build_app

NOW = T0 + 100


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def make_daemon(
    tmp_path: Path, silences: list[dict[str, Any]] | None = None, webhook: str | None = None
) -> Daemon:
    """A daemon (not started); with `webhook`, its Slack sink is built from the settings."""
    alerts: dict[str, Any] = {"group_wait_s": 0, "silences": silences or []}
    if webhook is not None:
        alerts["slack"] = {"webhook_url": webhook, "max_per_second": 50}
    settings = settings_from_dict({
        "runpod": {"api_key": "rpa_test_key_0123456789"},
        "state": {"path": str(tmp_path / "state.db")},
        "alerts": alerts,
    }, env={})
    sinks = None if webhook is not None else [RecordingSink("slack", "info")]
    return Daemon(settings, sinks=sinks, clock=lambda: NOW)


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    server = await SlackStandIn().start()
    yield server
    await server.stop()


@pytest.fixture
async def api(
    tmp_path: Path, standin: SlackStandIn
) -> AsyncIterator[tuple[TestClient[Any, Any], Daemon]]:
    daemon = make_daemon(tmp_path, webhook=standin.webhook_url)
    app = build_app(daemon, silences=(daemon.pipeline.router.silences, daemon.clock))
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    yield client, daemon
    await client.close()
    daemon.store.close()


async def test_post_silence_returns_201_and_mutes(
    api: tuple[TestClient[Any, Any], Daemon], standin: SlackStandIn
) -> None:
    """POST a silence for a code on an endpoint: 201 with the silence; GET lists it; Slack
    (the stand-in, through the sink the daemon built from its settings) then gets the
    other incidents and not that one."""
    client, daemon = api
    resp = await client.post("/api/v1/silences", json={
        "code": "crash_loop", "endpoint_id": "ep1", "until": _iso(NOW + 3600)})
    assert resp.status == 201
    body = await resp.json()
    assert body["code"] == "crash_loop"
    assert body["endpoint_id"] == "ep1"
    assert body["until"] == _iso(NOW + 3600)
    assert body["source"] == "api"
    assert body["id"]
    listed = await (await client.get("/api/v1/silences")).json()
    assert [s["id"] for s in listed["silences"]] == [body["id"]]

    router = daemon.pipeline.router
    story = Story(router)
    await story.step(NOW, [diag("crash_loop"), diag("crash_loop", "ep2"),
                           diag("workers_unhealthy")])
    await router.outbox.deliver(NOW)
    texts = sorted(r.body["text"].split(":")[0] for r in standin.delivered())
    assert texts == ["[CRITICAL] crash_loop on whisper (ep2)",
                     "[CRITICAL] workers_unhealthy on sdxl-images (ep1)"]


@pytest.mark.parametrize(("body", "field"), [
    ({"code": "crash_loop"}, "until"),
    ({"code": "crash_loop", "until": "tomorrow"}, "until"),
    ({"code": "crash_loop", "until": "2030-01-01T00:00:00"}, "until"),  # no time zone
    ({"code": "crash_loop", "until": _iso(NOW - 60)}, "until"),  # in the past
    ({"code": "crash_loop", "until": 1893456000}, "until"),
    ({"code": "gpu_on_fire", "until": _iso(NOW + 60)}, "code"),
    ({"endpoint_id": "", "until": _iso(NOW + 60)}, "endpoint_id"),
    ({"endpoint_id": 7, "until": _iso(NOW + 60)}, "endpoint_id"),
    ({"until": _iso(NOW + 60)}, "code"),  # neither code nor endpoint
    ({"code": "crash_loop", "until": _iso(NOW + 60), "matchers": []}, "matchers"),
    (["code"], "body"),
])
async def test_invalid_silence_is_400_naming_the_field(
    api: tuple[TestClient[Any, Any], Daemon], body: Any, field: str
) -> None:
    """A bad silence is refused with 400 and an error that names the field."""
    client, _ = api
    resp = await client.post("/api/v1/silences", json=body)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error.startswith(field), error
    assert (await (await client.get("/api/v1/silences")).json())["silences"] == []


async def test_not_json_is_400(api: tuple[TestClient[Any, Any], Daemon]) -> None:
    """A body that is not JSON is refused with 400."""
    client, _ = api
    resp = await client.post("/api/v1/silences", data=b"{nope")
    assert resp.status == 400


async def test_get_lists_config_and_api_silences_but_not_expired(tmp_path: Path) -> None:
    """GET lists the active silences from the configuration and the API, soonest first;
    expired ones are left out."""
    daemon = make_daemon(tmp_path, [
        {"code": "idle_spend", "until": _iso(NOW + 7200)},
        {"endpoint_id": "old", "until": _iso(NOW - 1)},
    ])
    daemon.pipeline.router.silences.add(None, "ep9", NOW + 60, NOW)
    app = build_app(daemon, silences=(daemon.pipeline.router.silences, daemon.clock))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        listed = (await (await client.get("/api/v1/silences")).json())["silences"]
    daemon.store.close()
    assert [(s["source"], s["code"], s["endpoint_id"]) for s in listed] == [
        ("api", None, "ep9"), ("config", "idle_spend", None)]


async def test_api_silences_survive_a_restart(
    api: tuple[TestClient[Any, Any], Daemon], tmp_path: Path
) -> None:
    """A silence added through the API is still in force after the daemon restarts."""
    client, _daemon = api
    resp = await client.post("/api/v1/silences", json={
        "endpoint_id": "ep1", "until": _iso(NOW + 3600)})
    assert resp.status == 201
    again = make_daemon(tmp_path)
    try:
        rules = again.pipeline.router.silences.active(NOW)
        assert [(r.endpoint_id, r.until) for r in rules] == [("ep1", NOW + 3600)]
    finally:
        again.store.close()
