"""The daemon's HTTP server: /metrics, /healthz, the JSON API. A request never calls RunPod."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Middleware

from model.history import History
from model.observation import WORKER_STATES, Job, Observation, iso_utc, queued_wait_ms
from monitor.actions import ActionEngine
from monitor.alerts.silences import MAX_ID_CHARS, SilenceBook
from monitor.config import Settings
from monitor.http.silences_api import add_silence_routes
from monitor.http.status_page import status_handler
from monitor.metrics.http import metrics_handler
from monitor.pipeline.jobs import TrackerFull
from monitor.state.episodes import Episode
from monitor.state.incidents import Incident

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
    def history(self) -> History: ...  # the retained observations, for the page's charts
    def episodes(self) -> list[Episode]: ...  # the incident history, newest first




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
        "since": iso_utc(incident.since),
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
            "workers": None if h is None else {k: getattr(h, k) for k in WORKER_STATES},
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
    return {"observed_at": iso_utc(obs.t), "cycle": obs.cycle, "endpoints": rows}


def _oldest_queued_s(jobs: Sequence[Job] | None) -> float | None:
    """The oldest queued job's wait; null when the jobs were not read or none tells it."""
    wait = None if jobs is None else queued_wait_ms(jobs)
    return None if wait is None else wait / 1000


# Methods that change nothing: guarded by basic auth alone (when set), like an exporter.
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class WritePolicy:
    """Who may call the write routes (POST), and how much they may send.

    With a token or basic auth configured, a write needs one of them; with neither, writes
    are open only when `open_without_credential` (a loopback listener, or the operator
    allowed it: monitor.config refuses anything else at start)."""

    enabled: bool = True
    token: str | None = None
    open_without_credential: bool = True
    max_body_bytes: int = 16_384
    max_silences: int = 1_000

    @classmethod
    def from_settings(cls, settings: Settings) -> WritePolicy:
        """The policy the daemon's configuration asks for."""
        api = settings.api
        return cls(
            enabled=api.write_routes,
            token=None if api.write_token is None else api.write_token.get_secret_value(),
            open_without_credential=settings.http.loopback or api.allow_unauthenticated_writes,
            max_body_bytes=api.max_body_bytes,
            max_silences=api.max_silences,
        )


def _basic_credentials(header: str) -> bytes | None:
    if header[:6].lower() != "basic ":
        return None
    try:
        return base64.b64decode(header[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


def _bearer(header: str) -> bytes | None:
    if header[:7].lower() != "bearer ":
        return None
    return header[7:].strip().encode()


def _matches(given: bytes | None, expected: bytes | None) -> bool:
    # compare_digest: the time taken does not tell how much of a guess was right
    return given is not None and expected is not None and hmac.compare_digest(given, expected)


def _json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def guard(auth: tuple[str, str] | None, writes: WritePolicy) -> Middleware:
    """Middleware: basic auth (when set) on every route but /healthz; on write routes, the
    bearer token or basic auth as `writes` says, then the body-size bound (413)."""
    basic = f"{auth[0]}:{auth[1]}".encode() if auth else None
    token = writes.token.encode() if writes.token else None
    challenges = ", ".join(
        [*(['Bearer realm="runpod-monitor"'] if token else []),
         *(['Basic realm="runpod-monitor"'] if basic else [])]
    )

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        basic_ok = _matches(_basic_credentials(header), basic)
        unrouted = request.match_info.http_exception is not None  # 404, 405: nothing to guard
        if request.method in _READ_METHODS or unrouted:
            if basic is None or basic_ok or request.path == "/healthz":
                return await handler(request)
            return _json_error(401, "unauthorized",
                               {"WWW-Authenticate": 'Basic realm="runpod-monitor"'})
        if token is None and basic is None:
            if not writes.open_without_credential:
                return _json_error(403, "write routes need a credential (api.write_token)")
        elif not (basic_ok or _matches(_bearer(header), token)):
            return _json_error(401, "unauthorized: write routes need "
                               + ("the bearer token" if token else "basic auth")
                               + (" or basic auth" if token and basic else ""),
                               {"WWW-Authenticate": challenges})
        limit = writes.max_body_bytes
        too_large = f"body too large: at most {limit} bytes (api.max_body_bytes)"
        length = request.content_length
        if length is not None and length > limit:
            return _json_error(413, too_large)
        try:
            await request.read()  # bounded by the app's client_max_size, then cached
        except web.HTTPRequestEntityTooLarge:
            return _json_error(413, too_large)
        return await handler(request)

    return middleware


def build_app(
    runtime: Runtime,
    auth: tuple[str, str] | None = None,
    *,
    silences: tuple[SilenceBook, Callable[[], float]] | None = None,
    writes: WritePolicy | None = None,
    actions: tuple[ActionEngine, Callable[[], float]] | None = None,
) -> web.Application:
    """The aiohttp application serving the daemon's routes; with `silences` (the book and
    the clock), also /api/v1/silences; with `actions` (the engine and the clock),
    /api/v1/actions. `auth`: basic auth (username, password); `writes`: who may call the
    write routes (default: open, as on a loopback listener)."""
    writes = writes if writes is not None else WritePolicy()
    app = web.Application(middlewares=[guard(auth, writes)],
                          client_max_size=writes.max_body_bytes)

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
            return _json_error(400, "body must be JSON")
        if not isinstance(body, dict):
            return _json_error(400, "body must be a JSON object")
        problems = [
            f"{key}: required, a non-empty string of at most {MAX_ID_CHARS} characters"
            for key in ("endpoint_id", "job_id")
            if not isinstance(body.get(key), str) or not 0 < len(body[key]) <= MAX_ID_CHARS
        ]
        if problems:
            return _json_error(400, "; ".join(problems))
        try:
            added = runtime.register_job(body["endpoint_id"], body["job_id"])
        except TrackerFull as full:
            return _json_error(429, f"{full.limit} jobs are tracked already (api.max_jobs); "
                               "retry when some have finished")
        return web.json_response(
            {"endpoint_id": body["endpoint_id"], "job_id": body["job_id"], "tracked": True},
            status=202 if added else 200,
        )

    app.router.add_get("/", status_handler(runtime, None if actions is None else actions[0]))
    app.router.add_get("/metrics", metrics_handler(runtime.metrics_body))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/v1/diagnoses", diagnoses)
    app.router.add_get("/api/v1/endpoints", endpoints)
    if writes.enabled:
        app.router.add_post("/api/v1/jobs", register_job)
    if silences is not None:
        add_silence_routes(app, *silences, max_silences=writes.max_silences,
                           writes=writes.enabled)
    from monitor.http.history_api import add_history_routes  # it builds on this module

    add_history_routes(app, runtime)
    if actions is not None:
        add_action_routes(app, *actions, writes=writes.enabled)
    return app


def actions_json(engine: ActionEngine) -> dict[str, Any]:
    """`GET /api/v1/actions`: every proposal (open first) and the newest audit entries."""
    rows = []
    for p in engine.listing():
        row = p.to_json()
        row["call"]["text"] = p.call.text()
        row["created_at"] = iso_utc(p.created_t)
        row["decided_at"] = None if p.decided_t is None else iso_utc(p.decided_t)
        if p.state == "proposed":
            row["approve"] = engine.approve_command(p)
        rows.append(row)
    audit = [{**a.to_json(), "at": iso_utc(a.t)} for a in reversed(engine.audit[-200:])]
    return {"dry_run": engine.dry_run, "actions": rows, "audit": audit}


def _who(request: web.Request) -> str:
    """Who approved, for the audit log: the credential's kind (never its value)."""
    header = request.headers.get("Authorization", "")
    creds = _basic_credentials(header)
    if creds is not None:
        return "api:basic:" + creds.split(b":", 1)[0].decode(errors="replace")[:64]
    if _bearer(header) is not None:
        return "api:token"
    return "api:open"


def add_action_routes(app: web.Application, engine: ActionEngine, clock: Callable[[], float],
                      *, writes: bool = True) -> None:
    """GET /api/v1/actions; POST /api/v1/actions/{id}/approve (a write route: the guard's
    credential applies)."""

    async def listing(_: web.Request) -> web.Response:
        return web.json_response(actions_json(engine))

    async def approve(request: web.Request) -> web.Response:
        status, out = engine.approve(request.match_info["action_id"], _who(request), clock())
        if isinstance(out, str):
            return _json_error(status, out)
        return web.json_response(out.to_json(), status=status)

    app.router.add_get("/api/v1/actions", listing)
    if writes:
        app.router.add_post("/api/v1/actions/{action_id}/approve", approve)
