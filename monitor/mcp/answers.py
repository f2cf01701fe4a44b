"""The tools' answers, shaped from the daemon's JSON: filtered, compact, masked, bounded.

Pure functions: the server (monitor/mcp/server.py) does the I/O. Every answer goes through
`finish`, which masks secrets with the log redactor (known values and token shapes, as
everywhere else), cuts long strings, and drops list items until the JSON fits
`MAX_CHARS`, saying so with `truncated` and how many were left out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from monitor.logs import Redactor
from rules.diagnosis import SEVERITY_ORDER

MAX_CHARS = 24_000  # about 6,000 tokens: room for an agent to read several answers
MAX_STRING = 2_000
MAX_DIAGNOSES = 50
MAX_EVENTS = 100
CUT = "…[cut]"

RELEASES_NOTE = ("not collected yet: the monitor does not read RunPod's release history "
                 "(REST v2), so template changes show only as the current config")
LOGS_NOTE = ("not collected yet: the monitor does not read worker logs; failed jobs' error "
             "texts are under job_errors")
RESOLVED_NOTE = ("the daemon keeps its incident history for its retention window "
                 "(state.retention_s), across restarts")


def matches_endpoint(d: Mapping[str, Any], endpoint: str | None) -> bool:
    """True when `endpoint` (an id, or a name in any case) names the diagnosis' endpoint."""
    if endpoint is None:
        return True
    name = d.get("endpoint_name")
    return d.get("endpoint_id") == endpoint or (
        isinstance(name, str) and name.casefold() == endpoint.casefold()
    )


def at_least(d: Mapping[str, Any], severity: str | None) -> bool:
    """True when the diagnosis is at least as severe as `severity` (None: any)."""
    if severity is None:
        return True
    return SEVERITY_ORDER.get(str(d.get("severity")), -1) >= SEVERITY_ORDER[severity]


def list_diagnoses(
    diagnoses: Sequence[Mapping[str, Any]], endpoint: str | None, severity: str | None
) -> dict[str, Any]:
    """The active diagnoses that pass the filters, most severe first (as the daemon sorts)."""
    picked = [dict(d) for d in diagnoses if matches_endpoint(d, endpoint) and at_least(d, severity)]
    return {
        "filters": {"endpoint": endpoint, "min_severity": severity},
        "count": len(picked),
        "active_total": len(diagnoses),
        "diagnoses": picked[:MAX_DIAGNOSES],
        "truncated": len(picked) > MAX_DIAGNOSES,
    }


def resolve_endpoint(rows: Iterable[Mapping[str, Any]], endpoint: str) -> str | None:
    """The id of the watched endpoint whose id or name (any case) is `endpoint`."""
    rows = list(rows)
    for row in rows:
        if row.get("endpoint_id") == endpoint:
            return endpoint
    for row in rows:
        name = row.get("endpoint_name")
        if isinstance(name, str) and name.casefold() == endpoint.casefold():
            return str(row["endpoint_id"])
    return None


def known_endpoints(rows: Iterable[Mapping[str, Any]], limit: int = 20) -> list[str]:
    """"name (id)" of the first `limit` watched endpoints, for an error message."""
    return [f"{r.get('endpoint_name')} ({r.get('endpoint_id')})" for r in list(rows)[:limit]]


def _now(row: Any) -> Any:
    """The endpoint's latest sample without what the answer says elsewhere."""
    if not isinstance(row, Mapping):
        return row
    return {k: v for k, v in row.items() if k not in ("endpoint_id", "endpoint_name", "config")}


def _compact_diagnosis(d: Mapping[str, Any]) -> dict[str, Any]:
    keep = ("code", "severity", "summary", "evidence", "remedy", "since")
    return {k: d.get(k) for k in keep}


def explain(
    report: Mapping[str, Any], diagnoses: Sequence[Mapping[str, Any]],
    incidents: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """One endpoint now and over the window: `report` is the daemon's
    `/api/v1/endpoints/{id}`, `diagnoses` and `incidents` its active diagnoses and incidents."""
    eid = report.get("endpoint_id")
    mine = [d for d in diagnoses if d.get("endpoint_id") == eid]
    account = [d for d in diagnoses if d.get("scope") == "account"]
    history = dict(report.get("history") or {})
    return {
        "endpoint_id": eid,
        "endpoint_name": report.get("endpoint_name"),
        "observed_at": report.get("observed_at"),
        "watched": report.get("watched"),
        "now": _now(report.get("now")),
        "config": report.get("config"),
        "diagnoses": [_compact_diagnosis(d) for d in mine],
        "account_diagnoses": [_compact_diagnosis(d) for d in account],
        "incidents": [
            {k: i.get(k) for k in ("code", "severity", "state", "since", "resolved_at",
                                   "duration_s", "summary")}
            for i in incidents if i.get("endpoint_id") == eid
        ],
        "history": history,
        "job_errors": report.get("job_errors") or [],
        "releases": {"available": False, "items": [], "note": RELEASES_NOTE},
        "logs": {"available": False, "excerpts": [], "note": LOGS_NOTE},
    }


def incident_events(
    report: Mapping[str, Any], endpoint: str | None, severity: str | None
) -> dict[str, Any]:
    """`/api/v1/incidents` as raised and resolved events in the window, newest first."""
    events: list[dict[str, Any]] = []
    for i in report.get("incidents") or []:
        if not (matches_endpoint(i, endpoint) and at_least(i, severity)):
            continue
        base = {k: i.get(k) for k in ("code", "severity", "endpoint_id", "endpoint_name",
                                      "summary")}
        if i.get("raised_in_window"):
            events.append({"event": "raised", "at": i.get("since"), **base})
        if i.get("escalated_at") and str(i["escalated_at"]) >= str(report.get("from")):
            events.append({"event": "escalated", "at": i["escalated_at"],
                           "from_severity": i.get("first_severity"), **base})
        if i.get("state") == "resolved":
            events.append({"event": "resolved", "at": i.get("resolved_at"),
                           "raised_at": i.get("since"), "duration_s": i.get("duration_s"),
                           **base})
    events.sort(key=lambda e: str(e.get("at")), reverse=True)  # ISO-8601 Z sorts as time
    active = [i for i in report.get("incidents") or []
              if i.get("state") == "active" and matches_endpoint(i, endpoint)
              and at_least(i, severity)]
    return {
        "from": report.get("from"), "to": report.get("to"),
        "filters": {"endpoint": endpoint, "min_severity": severity},
        "raised": sum(1 for e in events if e["event"] == "raised"),
        "resolved": sum(1 for e in events if e["event"] == "resolved"),
        "active_now": len(active),
        "events": events[:MAX_EVENTS],
        "truncated": len(events) > MAX_EVENTS or bool(report.get("truncated")),
        "note": RESOLVED_NOTE,
    }


def _cut_strings(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + CUT
    if isinstance(value, dict):
        return {k: _cut_strings(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [_cut_strings(v, limit) for v in value]
    return value


def _size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def _lists(value: Any, path: tuple[Any, ...] = ()) -> Iterable[tuple[tuple[Any, ...], list[Any]]]:
    """Every non-empty list in `value` with its path, outermost first."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _lists(v, (*path, k))
    elif isinstance(value, list) and value:
        yield path, value
        for i, v in enumerate(value):
            yield from _lists(v, (*path, i))


def finish(
    answer: dict[str, Any], redactor: Redactor, max_chars: int = MAX_CHARS
) -> dict[str, Any]:
    """`answer` masked, long strings cut, and cut to `max_chars` of JSON by halving its
    longest lists; `truncated` is set (and `omitted` counts per list) when anything went."""
    out: dict[str, Any] = redactor(None, "mcp", answer)  # type: ignore[assignment]
    out = _cut_strings(out, MAX_STRING)
    omitted: dict[str, int] = {}
    while _size(out) > max_chars:
        found = sorted(_lists(out), key=lambda pl: _size(pl[1]), reverse=True)
        if not found:
            break
        path, items = found[0]
        drop = max(1, len(items) // 2)
        del items[len(items) - drop:]
        label = ".".join(str(p) for p in path)
        omitted[label] = omitted.get(label, 0) + drop
    if omitted:
        out["truncated"] = True
        out["omitted"] = omitted
        out["hint"] = "cut to fit: narrow the question (an endpoint, a severity, a window)"
    elif "truncated" not in out:
        out["truncated"] = False
    return out
