"""Read-only routes over what the daemon remembers: one endpoint now and over the last hour
(`GET /api/v1/endpoints/{endpoint_id}`), and the incidents raised or resolved over a window
(`GET /api/v1/incidents`). Like every route, they read the runtime and never call RunPod.

What the agents' MCP server (monitor/mcp) needs beyond `/api/v1/diagnoses` and
`/api/v1/endpoints`. Every answer is bounded: at most `MAX_POINTS` history points, a few
job errors, `MAX_INCIDENTS` incidents; template secrets are masked as the store masks them
and env values are left out (their names are kept).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

from aiohttp import web

from model.history import History
from model.observation import WORKER_STATES, EndpointConfig, EndpointSample, Observation, iso_utc
from monitor.http.web import Runtime, endpoints_json
from monitor.state import codec
from monitor.state.episodes import Episode
from rules.secrets import mask

DEFAULT_WINDOW_S = 3600.0
MAX_POINTS = 60
MAX_JOB_ERRORS = 10
JOB_ERROR_CHARS = 500
MAX_INCIDENTS = 500


def _window(request: web.Request) -> float | str:
    """The `window_s` query parameter (default one hour), or the problem."""
    raw = request.query.get("window_s")
    if raw is None:
        return DEFAULT_WINDOW_S
    try:
        value = float(raw)
    except ValueError:
        return f"window_s: not a number (got {raw[:40]!r})"
    if not math.isfinite(value) or value <= 0:
        return f"window_s: must be a positive number of seconds (got {raw[:40]!r})"
    return value


def config_json(c: EndpointConfig | None) -> dict[str, Any] | None:
    """The endpoint's GraphQL configuration, masked as stored, env values left out."""
    if c is None:
        return None
    d = codec.config_to_json(codec.masked_config(c))
    template = d.get("template")
    if isinstance(template, dict):
        template["env_keys"] = [key for key, _ in template.pop("env", [])]
        for key in ("image_name", "name"):
            if isinstance(template.get(key), str):
                template[key] = mask(template[key])
    return d


def history_points(
    samples: Sequence[tuple[Observation, EndpointSample]], max_points: int = MAX_POINTS
) -> list[dict[str, Any]]:
    """The endpoint's samples folded into at most `max_points` consecutive buckets. Each
    point gives the bucket's last time, its cycles, how many of them had no usable /health,
    and the most seen of each queue and worker count (a spike is not averaged away); worker
    states with no worker are left out."""
    if not samples:
        return []
    size = math.ceil(len(samples) / max_points)
    points = []
    for start in range(0, len(samples), size):
        bucket = samples[start:start + size]
        known = [s.health for _, s in bucket if s.health is not None]
        waits = [
            j.delay_ms for _, s in bucket for j in (s.jobs or ())
            if j.status == "IN_QUEUE" and j.delay_ms is not None
        ]
        point: dict[str, Any] = {
            "t": iso_utc(bucket[-1][0].t),
            "cycles": len(bucket),
            "unknown": sum(1 for _, s in bucket if s.health is None),
            "outcome": bucket[-1][1].health_outcome,
        }
        if known:
            point["in_queue"] = max(h.in_queue for h in known)
            point["in_progress"] = max(h.in_progress for h in known)
            point["completed"] = known[-1].completed
            point["failed"] = known[-1].failed
            most = {w: max(getattr(h, w) for h in known) for w in WORKER_STATES}
            point["workers"] = {w: n for w, n in most.items() if n}  # zeros left out
        if waits:
            point["oldest_queued_s"] = max(waits) / 1000
        points.append(point)
    return points


def job_errors(samples: Iterable[tuple[Observation, EndpointSample]]) -> list[dict[str, Any]]:
    """The newest failed jobs seen with an error text, masked and cut, one per job."""
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for obs, s in reversed(list(samples)):
        for j in s.jobs or ():
            if j.status != "FAILED" or not j.error or j.id in seen:
                continue
            seen.add(j.id)
            text = mask(j.error)
            out.append({
                "job_id": j.id, "seen_at": iso_utc(obs.t), "worker_id": j.worker_id,
                "error": text[:JOB_ERROR_CHARS],
                "error_truncated": len(text) > JOB_ERROR_CHARS,
            })
            if len(out) >= MAX_JOB_ERRORS:
                return out
    return out


def endpoint_report(
    history: History, endpoint_id: str, window_s: float, now_row: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Everything the history holds about one endpoint over `window_s`; None if it holds
    nothing about it."""
    latest = history.latest
    if latest is None:
        return None
    horizon = latest.t - window_s
    samples = [(o, s) for o, s in history.endpoint_samples(endpoint_id) if o.t >= horizon]
    if not samples and now_row is None:
        return None
    return {
        "endpoint_id": endpoint_id,
        "endpoint_name": history.endpoint_name(endpoint_id),
        "observed_at": iso_utc(latest.t),
        "watched": endpoint_id in latest.endpoints,
        "now": now_row,
        "config": config_json(history.latest_config(endpoint_id)),
        "history": {
            "window_s": window_s,
            "cycles": len(samples),
            "max_points": MAX_POINTS,
            "points": history_points(samples),
        },
        "job_errors": job_errors(samples),
    }


def incidents_report(episodes: Sequence[Episode], now: float, window_s: float) -> dict[str, Any]:
    """The incidents (the daemon's episodes, monitor/state/episodes.py) still active or resolved in
    the window `now - window_s` to `now`, newest change first, at most `MAX_INCIDENTS`."""
    start = now - window_s
    rows = []
    for e in episodes:
        if e.ended_at is not None and e.ended_at < start:
            continue
        row = {
            "code": e.code, "endpoint_id": e.endpoint_id, "endpoint_name": e.endpoint_name,
            "severity": e.severity, "first_severity": e.first_severity, "summary": e.summary,
            "since": iso_utc(e.since), "raised_in_window": e.since >= start,
            "escalated_at": None if e.escalated_at is None else iso_utc(e.escalated_at),
            "state": "active" if e.ended_at is None else "resolved",
            "resolved_at": None if e.ended_at is None else iso_utc(e.ended_at),
            "duration_s": round((e.ended_at if e.ended_at is not None else now) - e.since, 1),
        }
        rows.append((max(e.since, e.escalated_at or 0.0, e.ended_at or 0.0), row))
    rows.sort(key=lambda r: -r[0])
    return {
        "from": iso_utc(start), "to": iso_utc(now), "window_s": window_s,
        "incidents": [r for _, r in rows[:MAX_INCIDENTS]],
        "truncated": len(rows) > MAX_INCIDENTS,
    }


def add_history_routes(app: web.Application, runtime: Runtime) -> None:
    """Register `GET /api/v1/endpoints/{endpoint_id}` and `GET /api/v1/incidents`."""

    async def endpoint(request: web.Request) -> web.Response:
        history = runtime.history()
        window = _window(request)
        if isinstance(window, str):
            return web.json_response({"error": window}, status=400)
        eid = request.match_info["endpoint_id"]
        obs = history.latest
        now_row = None
        if obs is not None and eid in obs.endpoints:
            one = Observation(obs.cycle, obs.t, obs.control_outcome, obs.control_status,
                              endpoints={eid: obs.endpoints[eid]})
            now_row = endpoints_json(one, runtime.endpoint_name)["endpoints"][0]
        report = endpoint_report(history, eid, window, now_row)
        if report is None:
            return web.json_response(
                {"error": f"endpoint {eid[:80]!r} is not watched and not in the history"},
                status=404,
            )
        return web.json_response(report)

    async def incidents(request: web.Request) -> web.Response:
        history = runtime.history()
        window = _window(request)
        if isinstance(window, str):
            return web.json_response({"error": window}, status=400)
        # the newest cycle's time: the same clock the incidents' times come from
        now = history.latest.t if history.latest is not None else time.time()
        return web.json_response(incidents_report(runtime.episodes(), now, window))

    app.router.add_get("/api/v1/endpoints/{endpoint_id}", endpoint)
    app.router.add_get("/api/v1/incidents", incidents)
