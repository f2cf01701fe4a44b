"""The daemon's HTTP routes (monitor.http.web.build_app) in process, over loopback, with a fake
Runtime: health, basic auth, job registration, and the diagnoses JSON contract."""

from __future__ import annotations

import base64
import gzip
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from model.history import History
from model.observation import EndpointConfig, EndpointSample, Health, Job, Observation
from monitor.http.web import WritePolicy, build_app
from monitor.pipeline.jobs import JobTracker
from monitor.state.episodes import Episode
from monitor.state.incidents import Incident
from rules.diagnosis import Diagnosis

USER, PASSWORD = "prometheus", "s3cret-pa55word"
CONTRACT = {"code", "scope", "endpoint_id", "endpoint_name", "severity", "summary",
            "evidence", "remedy", "since"}
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def _incident(code: str, severity: str, since: float, endpoint_id: str | None = "ep1") -> Incident:
    d = Diagnosis(
        code=code,
        scope="endpoint" if endpoint_id else "account",
        severity=severity,  # type: ignore[arg-type]
        summary=f"{code} summary.",
        remedy=f"{code} remedy.",
        evidence={"count": 3, "where": "US-TX-3"},
        endpoint_id=endpoint_id,
        endpoint_name="video-worker" if endpoint_id else None,
    )
    return Incident(d, since=since, raised_cycle=4)


@dataclass
class FakeRuntime:
    """The Runtime protocol over plain fields; job registration uses the real JobTracker."""

    ok: bool = True
    reason: str = "ok: last cycle 3 s ago"
    active: list[Incident] = field(default_factory=list)
    observation: Observation | None = None
    jobs: JobTracker = field(default_factory=JobTracker)
    registered: list[tuple[str, str]] = field(default_factory=list)
    episode_log: list[Episode] = field(default_factory=list)

    exposition: bytes = b"runpod_monitor_build_info{version=\"0\"} 1.0\n"

    def metrics_body(self) -> tuple[bytes, str]:
        return self.exposition, "text/plain; version=0.0.4"

    def health(self) -> tuple[bool, str]:
        return self.ok, self.reason

    def incidents(self) -> list[Incident]:
        return list(self.active)

    def last_observation(self) -> Observation | None:
        return self.observation

    def endpoint_name(self, endpoint_id: str) -> str:
        return {"ep1": "video-worker"}.get(endpoint_id, endpoint_id)

    def register_job(self, endpoint_id: str, job_id: str) -> bool:
        self.registered.append((endpoint_id, job_id))
        return self.jobs.register(endpoint_id, job_id, T0)

    def interval_s(self) -> float:
        return 30.0

    def history(self) -> History:
        return History(() if self.observation is None else (self.observation,))

    def episodes(self) -> list[Episode]:
        return list(self.episode_log)


Factory = Callable[..., Any]


@pytest.fixture
async def serve() -> AsyncIterator[Factory]:
    """Factory: `await serve(runtime, auth=None)` -> a TestClient on 127.0.0.1."""
    clients: list[TestClient[web.Request, web.Application]] = []

    async def start(runtime: FakeRuntime, auth: tuple[str, str] | None = None) -> Any:
        client: TestClient[web.Request, web.Application] = TestClient(
            TestServer(build_app(runtime, auth), host="127.0.0.1")
        )
        await client.start_server()
        clients.append(client)
        return client

    try:
        yield start
    finally:
        for client in clients:
            await client.close()


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


# ---------------------------------------------------------------- /healthz


async def test_healthz_ok_is_200_with_reason(serve: Factory) -> None:
    """/healthz answers 200 and the runtime's reason while the daemon is healthy."""
    client = await serve(FakeRuntime())
    r = await client.get("/healthz")
    assert r.status == 200
    assert (await r.text()).strip() == "ok: last cycle 3 s ago"


async def test_healthz_stale_is_503_with_reason(serve: Factory) -> None:
    """/healthz answers 503 and says why when cycles have stopped."""
    runtime = FakeRuntime(ok=False, reason="stale: last cycle 120 s ago (limit 90 s)")
    client = await serve(runtime)
    r = await client.get("/healthz")
    assert r.status == 503
    assert "stale: last cycle 120 s ago" in await r.text()


# ---------------------------------------------------------------- basic auth


async def test_basic_auth_guards_every_route_but_healthz(serve: Factory) -> None:
    """Basic auth: every route but /healthz is 401 without the right credentials."""
    runtime = FakeRuntime()
    client = await serve(runtime, auth=(USER, PASSWORD))
    routes = {
        (route.method, route.resource.canonical)
        for route in client.server.app.router.routes()
        if route.resource is not None and route.method != "HEAD"
        and "{" not in route.resource.canonical
    }
    assert ("GET", "/metrics") in routes
    assert ("POST", "/api/v1/jobs") in routes
    for method, path in sorted(routes):
        if path == "/healthz":
            continue
        for headers in ({}, _basic(USER, "wrong"), _basic("other", PASSWORD),
                        {"Authorization": "Basic !!!not-base64"},
                        {"Authorization": f"Bearer {PASSWORD}"}):
            r = await client.request(method, path, headers=headers, json={})
            assert r.status == 401, (method, path, headers)
            assert r.headers["WWW-Authenticate"].startswith("Basic")
            assert PASSWORD not in await r.text()
        r = await client.request(method, path, headers=_basic(USER, PASSWORD),
                                 json={"endpoint_id": "ep1", "job_id": "j-auth"})
        assert r.status != 401, (method, path)
        assert r.status < 500, (method, path)
    r = await client.get("/healthz")
    assert r.status == 200


async def test_basic_auth_right_credentials_serve_content(serve: Factory) -> None:
    """The right credentials get the real answers: metrics body and the diagnoses JSON."""
    runtime = FakeRuntime(active=[_incident("crash_loop", "critical", T0)])
    client = await serve(runtime, auth=(USER, PASSWORD))
    r = await client.get("/metrics", headers=_basic(USER, PASSWORD))
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    assert "runpod_monitor_build_info" in await r.text()
    r = await client.get("/api/v1/diagnoses", headers=_basic(USER, PASSWORD))
    assert r.status == 200
    assert [d["code"] for d in (await r.json())["diagnoses"]] == ["crash_loop"]


async def test_no_auth_configured_serves_everything(serve: Factory) -> None:
    """Without basic auth configured, the routes answer without credentials."""
    client = await serve(FakeRuntime())
    for path in ("/metrics", "/api/v1/diagnoses", "/api/v1/endpoints", "/healthz"):
        r = await client.get(path)
        assert r.status == 200, path


# ---------------------------------------------------------------- POST /api/v1/jobs


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"job_id": "j1"}, "endpoint_id"),
        ({"endpoint_id": "ep1"}, "job_id"),
        ({"endpoint_id": "", "job_id": "j1"}, "endpoint_id"),
        ({"endpoint_id": "ep1", "job_id": 7}, "job_id"),
        ({"endpoint_id": ["ep1"], "job_id": "j1"}, "endpoint_id"),
    ],
)
async def test_register_job_names_the_bad_field(
    serve: Factory, body: dict[str, Any], named: str
) -> None:
    """POST /api/v1/jobs with a missing, empty or non-string field answers 400 naming it."""
    runtime = FakeRuntime()
    client = await serve(runtime)
    r = await client.post("/api/v1/jobs", json=body)
    assert r.status == 400
    error = (await r.json())["error"]
    assert named in error
    assert runtime.registered == []


async def test_register_job_rejects_bodies_that_are_not_objects(serve: Factory) -> None:
    """A body that is not JSON, or JSON but not an object, answers 400 and registers nothing."""
    runtime = FakeRuntime()
    client = await serve(runtime)
    for data, headers in ((b"not json{", {"Content-Type": "application/json"}),
                          (b'["ep1", "j1"]', {"Content-Type": "application/json"}),
                          (b"\xff\xfe", {"Content-Type": "application/json"})):
        r = await client.post("/api/v1/jobs", data=data, headers=headers)
        assert r.status == 400, data
        assert "error" in await r.json()
    assert runtime.registered == []


async def test_register_job_202_then_200_for_a_duplicate(serve: Factory) -> None:
    """A new job answers 202 (accepted for tracking); registering it again answers 200."""
    runtime = FakeRuntime()
    client = await serve(runtime)
    job = {"endpoint_id": "ep1", "job_id": "job-42"}
    first = await client.post("/api/v1/jobs", json=job)
    assert first.status == 202
    assert await first.json() == {**job, "tracked": True}
    again = await client.post("/api/v1/jobs", json=job)
    assert again.status == 200
    assert await again.json() == {**job, "tracked": True}
    other = await client.post("/api/v1/jobs", json={"endpoint_id": "ep1", "job_id": "job-43"})
    assert other.status == 202
    assert runtime.jobs.tracked() == [("ep1", "job-42"), ("ep1", "job-43")]


# ---------------------------------------------------------------- JSON contract


async def test_diagnoses_follow_the_output_contract(serve: Factory) -> None:
    """Each diagnosis has exactly the contract's keys, ISO since, null id for account scope."""
    runtime = FakeRuntime(active=[
        _incident("crash_loop", "critical", T0 + 60),
        _incident("low_balance", "warning", T0 + 0.5, endpoint_id=None),
    ])
    client = await serve(runtime)
    r = await client.get("/api/v1/diagnoses")
    assert r.status == 200
    assert r.content_type == "application/json"
    body = await r.json()
    assert set(body) == {"diagnoses"}
    first, second = body["diagnoses"]
    assert set(first) == CONTRACT
    assert set(second) == CONTRACT
    assert first == {
        "code": "crash_loop", "scope": "endpoint", "endpoint_id": "ep1",
        "endpoint_name": "video-worker", "severity": "critical",
        "summary": "crash_loop summary.", "evidence": {"count": 3, "where": "US-TX-3"},
        "remedy": "crash_loop remedy.", "since": "2026-01-01T00:01:00Z",
    }
    assert second["scope"] == "account"
    assert second["endpoint_id"] is None
    assert second["since"] == "2026-01-01T00:00:00.500000Z"


async def test_diagnoses_empty(serve: Factory) -> None:
    """No active incident: an empty list, not an error."""
    client = await serve(FakeRuntime())
    r = await client.get("/api/v1/diagnoses")
    assert await r.json() == {"diagnoses": []}


async def test_endpoints_before_and_after_the_first_cycle(serve: Factory) -> None:
    """/api/v1/endpoints is empty before any cycle, then lists the last observation."""
    runtime = FakeRuntime()
    client = await serve(runtime)
    r = await client.get("/api/v1/endpoints")
    assert await r.json() == {"observed_at": None, "endpoints": []}
    runtime.observation = Observation(
        cycle=7, t=T0, control_outcome="ok", endpoints={
            "ep1": EndpointSample(
                "ep1", "ok", 200, Health(in_queue=2, throttled=1, completed=9), (), True,
                EndpointConfig("ep1", "video-worker", "AMPERE_48", "vol1", 0, 2),
            ),
            "ep2": EndpointSample("ep2", "timeout", 0),
        },
    )
    body = await (await client.get("/api/v1/endpoints")).json()
    assert body["observed_at"] == "2026-01-01T00:00:00Z"
    assert body["cycle"] == 7
    one, two = body["endpoints"]
    assert one["endpoint_id"] == "ep1"
    assert one["endpoint_name"] == "video-worker"
    assert one["workers"]["throttled"] == 1
    assert one["jobs"]["in_queue"] == 2
    assert one["config"] == {"gpu_ids": "AMPERE_48", "network_volume_id": "vol1",
                             "workers_min": 0, "workers_max": 2}
    assert two["endpoint_id"] == "ep2"
    assert two["outcome"] == "timeout"
    assert two["workers"] is None
    assert two["config"] is None


async def test_endpoints_oldest_queued_wait(serve: Factory) -> None:
    """oldest_queued_s: 0 with none queued, the oldest queued delay, null when the queued
    jobs tell none (not 0: jobs are waiting) and when the jobs were not read."""
    runtime = FakeRuntime()
    client = await serve(runtime)
    jobs = {
        "none": (Job("a", "IN_PROGRESS", delay_ms=9000),),
        "told": (Job("a", "IN_QUEUE", delay_ms=1500), Job("b", "IN_QUEUE", delay_ms=250),
                 Job("c", "IN_QUEUE")),
        "untold": (Job("a", "IN_QUEUE"),),
        "unread": None,
    }
    runtime.observation = Observation(cycle=1, t=T0, control_outcome="ok", endpoints={
        eid: EndpointSample(eid, "ok", 200, Health(in_queue=1), js, True)
        for eid, js in jobs.items()
    })
    body = await (await client.get("/api/v1/endpoints")).json()
    got = {e["endpoint_id"]: e["oldest_queued_s"] for e in body["endpoints"]}
    assert got == {"none": 0.0, "told": 1.5, "untold": None, "unread": None}


# ---------------------------------------------------------------- /metrics compression


def _exposition(n: int, value: float) -> bytes:
    return "".join(
        f'runpod_endpoint_up{{endpoint="ep-{i}",endpoint_id="id{i:05d}"}} {value}\n'
        for i in range(n)
    ).encode()


@pytest.mark.parametrize(("accept", "gzipped"), [
    ("gzip", True),
    ("gzip, deflate", True),               # what Prometheus sends
    ("deflate, gzip;q=0.5", True),
    ("GZIP", True),
    ("*", True),
    ("x-gzip", True),
    ("", False),
    ("identity", False),
    ("deflate, br", False),
    ("gzip;q=0", False),
    ("*, gzip;q=0", False),
    ("gzip;q=nonsense", False),
])
async def test_metrics_gzip_when_asked(accept: str, gzipped: bool) -> None:
    """/metrics is gzipped exactly when Accept-Encoding admits gzip; the body unpacks to
    the exposition; Vary tells caches the answer depends on it."""
    runtime = FakeRuntime(exposition=_exposition(2000, 1.0))
    server = TestServer(build_app(runtime), host="127.0.0.1")
    async with TestClient(server, auto_decompress=False) as client:
        r = await client.get("/metrics", headers={"Accept-Encoding": accept})
        raw = await r.read()
    assert r.status == 200
    assert r.headers["Content-Type"] == "text/plain; version=0.0.4"
    assert r.headers["Vary"] == "Accept-Encoding"
    if gzipped:
        assert r.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(raw) == runtime.exposition
        assert len(raw) < len(runtime.exposition) / 5
    else:
        assert "Content-Encoding" not in r.headers
        assert raw == runtime.exposition


async def test_metrics_gzip_follows_the_exposition() -> None:
    """Scrapes of an unchanged exposition get the same gzip bytes; once it changes, the
    next scrape gets the new text, and a plain scrape between them is unaffected."""
    runtime = FakeRuntime(exposition=_exposition(500, 1.0))
    server = TestServer(build_app(runtime), host="127.0.0.1")
    ask = {"Accept-Encoding": "gzip"}
    async with TestClient(server, auto_decompress=False) as client:
        first = await (await client.get("/metrics", headers=ask)).read()
        again = await (await client.get("/metrics", headers=ask)).read()
        runtime.exposition = _exposition(500, 0.0)
        plain = await (await client.get("/metrics", headers={"Accept-Encoding": "identity"})).read()
        changed = await (await client.get("/metrics", headers=ask)).read()
    assert first == again
    assert gzip.decompress(first) == _exposition(500, 1.0)
    assert plain == _exposition(500, 0.0)
    assert gzip.decompress(changed) == _exposition(500, 0.0)


async def test_writes_closed_without_a_credential_are_403() -> None:
    """An app built for a listener beyond loopback with no credential at all (the config
    refuses that at start; this is the app's own guard) refuses every write."""
    app = build_app(FakeRuntime(), writes=WritePolicy(open_without_credential=False))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        r = await client.post("/api/v1/jobs", json={"endpoint_id": "ep1", "job_id": "j"})
        assert r.status == 403
        assert "api.write_token" in (await r.json())["error"]
        assert (await client.get("/metrics")).status == 200


# ---------------------------------------------------------------- one endpoint, incidents


async def test_one_endpoint_now_and_its_history(serve: Factory) -> None:
    """/api/v1/endpoints/{id}: the latest sample, the config, one history point; 404 for an
    endpoint it knows nothing of; 400 naming window_s when that is not a positive number."""
    runtime = FakeRuntime(observation=Observation(cycle=3, t=T0, control_outcome="ok", endpoints={
        "ep1": EndpointSample("ep1", "ok", 200, Health(in_queue=4, unhealthy=1), (), True,
                              EndpointConfig("ep1", "video-worker", "AMPERE_48", None, 0, 2)),
    }))
    client = await serve(runtime)
    body = await (await client.get("/api/v1/endpoints/ep1")).json()
    assert body["endpoint_name"] == "video-worker"
    assert body["watched"] is True
    assert body["now"]["jobs"]["in_queue"] == 4
    assert body["config"]["gpu_ids"] == "AMPERE_48"
    assert body["history"]["window_s"] == 3600
    [point] = body["history"]["points"]
    assert point["workers"] == {"unhealthy": 1}
    assert point["in_queue"] == 4
    r = await client.get("/api/v1/endpoints/nope")
    assert r.status == 404
    assert "nope" in (await r.json())["error"]
    for bad in ("abc", "-5", "0", "nan", "inf"):
        r = await client.get("/api/v1/endpoints/ep1", params={"window_s": bad})
        assert r.status == 400, bad
        assert (await r.json())["error"].startswith("window_s:")


async def test_incidents_in_a_window(serve: Factory) -> None:
    """/api/v1/incidents: the episodes still active or resolved within window_s of the last
    cycle, newest change first."""
    def episode(code: str, since: float, ended: float | None = None) -> Episode:
        return Episode(code, "ep1", "video-worker", f"{code} summary.", "warning", "warning",
                       since, 1, None, ended, None if ended is None else 2)

    runtime = FakeRuntime(
        observation=Observation(cycle=3, t=T0, control_outcome="ok"),
        episode_log=[
            episode("crash_loop", T0 - 60),
            episode("queue_backlog", T0 - 9000, T0 - 8000),  # ended before the window
            episode("queue_backlog", T0 - 900, T0 - 120),
        ],
    )
    client = await serve(runtime)
    body = await (await client.get("/api/v1/incidents", params={"window_s": "600"})).json()
    assert [(i["code"], i["state"]) for i in body["incidents"]] == [
        ("crash_loop", "active"), ("queue_backlog", "resolved")]
    assert body["incidents"][1]["duration_s"] == 780.0
    assert body["incidents"][1]["raised_in_window"] is False
    assert body["to"] == "2026-01-01T00:00:00Z"
    assert body["truncated"] is False
