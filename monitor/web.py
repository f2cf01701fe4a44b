"""The daemon's HTTP server: /metrics, /healthz, the JSON API. A request never calls RunPod."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Middleware

from monitor.alerts.api import add_silence_routes
from monitor.alerts.silences import SilenceBook
from monitor.incidents import Incident
from monitor.status_page import status_handler
from rules.model import History, Observation

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Runtime(Protocol):
    """What the routes read from the running daemon."""

    def metrics_body(self) -> tuple[bytes, str]: ...
    def health(self) -> tuple[bool, str]: ...
    def incidents(self) -> list[Incident]: ...
    def last_observation(self) -> Observation | None: ...
    def endpoint_name(self, endpoint_id: str) -> str: ...
    def register_job(self, endpoint_id: str, job_id: str) -> bool: ...
    def interval_s(self) -> float: ...
    def history(self) -> History: ...
    def resolved_incidents(self) -> list[Incident]: ...


def iso(t: float | None) -> str | None:
    """Unix seconds as an ISO-8601 UTC timestamp."""
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def diagnosis_json(incident: Incident) -> dict[str, Any]:
    """A diagnosis in the output contract of spec/diagnoses.md."""
    d = incident.diagnosis
    return {
        "code": d.code,
        "scope": d.scope,
        "endpoint_id": d.endpoint_id,
        "endpoint_name": d.endpoint_name,
        "severity": d.severity,
        "summary": d.summary,
        "evidence": dict(d.evidence),
        "remedy": d.remedy,
        "since": iso(incident.since),
    }


def endpoints_json(obs: Observation | None, name: Callable[[str], str]) -> dict[str, Any]:
    """The last observation of every watched endpoint."""
    if obs is None:
        return {"observed_at": None, "endpoints": []}
    rows = []
    for eid, s in sorted(obs.endpoints.items()):
        h = s.health
        rows.append({
            "endpoint_id": eid,
            "endpoint_name": name(eid),
            "listed": s.listed,
            "outcome": s.health_outcome,
            "http_status": s.http_status,
            "workers": None if h is None else {
                "idle": h.idle, "initializing": h.initializing, "ready": h.ready,
                "running": h.running, "throttled": h.throttled, "unhealthy": h.unhealthy,
            },
            "jobs": None if h is None else {
                "completed": h.completed, "failed": h.failed, "in_progress": h.in_progress,
                "in_queue": h.in_queue, "retried": h.retried,
            },
            "oldest_queued_s": _oldest_queued_s(s.jobs),
            "config": None if s.config is None else {
                "gpu_ids": s.config.gpu_ids,
                "network_volume_id": s.config.network_volume_id,
                "workers_min": s.config.workers_min,
                "workers_max": s.config.workers_max,
            },
        })
    return {"observed_at": iso(obs.t), "cycle": obs.cycle, "endpoints": rows}


def _oldest_queued_s(jobs: Any) -> float | None:
    if jobs is None:
        return None
    delays = [j.delay_ms for j in jobs if j.status == "IN_QUEUE" and j.delay_ms is not None]
    return max(delays) / 1000 if delays else 0.0


def basic_auth(username: str, password: str) -> Middleware:
    """Middleware asking for HTTP basic auth on every route but /healthz."""
    expected = f"{username}:{password}".encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/healthz":
            return await handler(request)
        header = request.headers.get("Authorization", "")
        given = b""
        if header.startswith("Basic "):
            try:
                given = base64.b64decode(header[6:], validate=True)
            except (binascii.Error, ValueError):
                given = b""
        if not hmac.compare_digest(given, expected):
            return web.json_response(
                {"error": "unauthorized"}, status=401,
                headers={"WWW-Authenticate": 'Basic realm="runpod-monitor"'},
            )
        return await handler(request)

    return middleware


def build_app(
    runtime: Runtime,
    auth: tuple[str, str] | None = None,
    *,
    silences: tuple[SilenceBook, Callable[[], float]] | None = None,
) -> web.Application:
    """The aiohttp application serving the daemon's routes; with `silences` (the book and
    the clock), also /api/v1/silences."""
    app = web.Application(middlewares=[basic_auth(*auth)] if auth else [])

    async def metrics(_: web.Request) -> web.Response:
        body, content_type = runtime.metrics_body()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def healthz(_: web.Request) -> web.Response:
        ok, reason = runtime.health()
        return web.Response(text=reason + "\n", status=200 if ok else 503)

    async def diagnoses(_: web.Request) -> web.Response:
        return web.json_response(
            {"diagnoses": [diagnosis_json(i) for i in runtime.incidents()]}
        )

    async def endpoints(_: web.Request) -> web.Response:
        return web.json_response(endpoints_json(runtime.last_observation(), runtime.endpoint_name))

    async def register_job(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.json_response({"error": "body must be JSON"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        problems = [
            f"{key}: required, a non-empty string"
            for key in ("endpoint_id", "job_id")
            if not isinstance(body.get(key), str) or not body[key]
        ]
        if problems:
            return web.json_response({"error": "; ".join(problems)}, status=400)
        added = runtime.register_job(body["endpoint_id"], body["job_id"])
        return web.json_response(
            {"endpoint_id": body["endpoint_id"], "job_id": body["job_id"], "tracked": True},
            status=202 if added else 200,
        )

    app.router.add_get("/", status_handler(runtime))
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/v1/diagnoses", diagnoses)
    app.router.add_get("/api/v1/endpoints", endpoints)
    app.router.add_post("/api/v1/jobs", register_job)
    if silences is not None:
        add_silence_routes(app, *silences)
    from monitor.history_api import add_history_routes  # it builds on this module

    add_history_routes(app, runtime)
    return app
