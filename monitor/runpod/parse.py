"""Pure parsers from RunPod's JSON bodies to the rules' data types.

Every parser returns None for a body of the wrong shape and never raises, on any input:
missing keys take defaults, wrong types (a string for a count, a boolean, a negative
count, NaN) make the whole body malformed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import replace
from email.utils import parsedate_to_datetime
from typing import Any, Final

from model.observation import (
    Account,
    EndpointConfig,
    EnvVar,
    Health,
    Job,
    NetworkVolume,
    Pod,
    Template,
)
from monitor.runpod.models import Myself

MESSAGE_LIMIT: Final = 200


class _Malformed(Exception):
    """A body of the wrong shape; caught at each public parser's boundary."""


class _NotJson:
    """The type of `NOT_JSON`, what `decode_json` returns for a body that is not JSON."""

    def __repr__(self) -> str:
        return "NOT_JSON"


NOT_JSON: Final = _NotJson()


def _reject_constant(name: str) -> object:
    # json accepts NaN and Infinity by default; RunPod never sends them
    raise ValueError(name)


# json.loads(raw, parse_constant=...) builds a decoder per call; this is the one it builds
_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


def decode_json(raw: bytes) -> object:
    """The decoded body, or `NOT_JSON` when it is not valid strict JSON."""
    try:
        # what json.loads does with bytes: UTF-8, -16 or -32 as RFC 8259 detects them
        return _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError included
        return NOT_JSON


# -- field readers: each raises _Malformed on a wrong type --------------------------------


def _obj(value: object) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _Malformed
    return value


def _list(value: object) -> list[Any]:
    """A JSON list; null counts as empty."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Malformed
    return value


def _opt_count(d: Mapping[str, Any], key: str) -> int | None:
    """A non-negative integer, None when absent or null; 3.0 is accepted as 3."""
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool):
        raise _Malformed
    if isinstance(v, int) and v >= 0:
        return v
    if isinstance(v, float) and v.is_integer() and v >= 0:
        return int(v)
    raise _Malformed


def _count(d: Mapping[str, Any], key: str) -> int:
    v = d.get(key, 0)
    if type(v) is int and v >= 0:  # nearly every count: skip the slower checks
        return v
    v = _opt_count(d, key)
    return 0 if v is None else v


def _opt_num(d: Mapping[str, Any], key: str, *, nonneg: bool = False) -> float | None:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _Malformed
    f = float(v)
    if not math.isfinite(f) or (nonneg and f < 0):
        raise _Malformed
    return f


def _opt_str(d: Mapping[str, Any], key: str) -> str | None:
    v = d.get(key)
    if v is None or isinstance(v, str):
        return v
    raise _Malformed


def _str(d: Mapping[str, Any], key: str) -> str:
    v = _opt_str(d, key)
    return "" if v is None else v


def _id(d: Mapping[str, Any], key: str = "id") -> str:
    v = d.get(key)
    if not isinstance(v, str) or not v:
        raise _Malformed
    return v


# -- data plane -----------------------------------------------------------------------------


def _section(body: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    v = body.get(key)
    return None if v is None else _obj(v)


def _health(body: object) -> Health:
    b = _obj(body)
    jobs, workers = _section(b, "jobs"), _section(b, "workers")
    if jobs is None and workers is None:
        raise _Malformed  # e.g. {"message": "Not Found"}: no counts at all is not "all zero"
    j, w = jobs or {}, workers or {}
    return Health(
        completed=_count(j, "completed"),
        failed=_count(j, "failed"),
        in_progress=_count(j, "inProgress"),
        in_queue=_count(j, "inQueue"),
        retried=_count(j, "retried"),
        idle=_count(w, "idle"),
        initializing=_count(w, "initializing"),
        ready=_count(w, "ready"),
        running=_count(w, "running"),
        throttled=_count(w, "throttled"),
        unhealthy=_count(w, "unhealthy"),
    )


def parse_health(body: object) -> Health | None:
    """`/health` → Health; keys RunPod left out (older or abbreviated bodies) count as 0."""
    try:
        return _health(body)
    except _Malformed:
        return None


def _job_error(d: Mapping[str, Any]) -> str | None:
    err = d.get("error")
    if err is None:
        # a handler may return {"error": ...} inside its output instead
        out = d.get("output")
        if isinstance(out, dict) and isinstance(out.get("error"), str) and out["error"]:
            return str(out["error"])
        return None
    if isinstance(err, str):
        return err  # often a JSON-encoded object from the Python worker: kept verbatim
    if isinstance(err, dict | list):
        try:
            return json.dumps(err, sort_keys=True, default=str)
        except (ValueError, TypeError, RecursionError):
            raise _Malformed from None
    raise _Malformed


def _job(body: object) -> Job:
    d = _obj(body)
    return Job(
        id=_id(d),
        status=_id(d, "status"),
        delay_ms=_opt_count(d, "delayTime"),
        execution_ms=_opt_count(d, "executionTime"),
        worker_id=_opt_str(d, "workerId"),
        error=_job_error(d),
    )


# RunPod's worker log line when a job finished but its result never reached the queue
# (runpod-python#309): the client then sees COMPLETED without its output.
LOST_OUTPUT = "failed to return job results"


def _output(d: Mapping[str, Any], job: Job) -> Job:
    """`job` with what `/status` said of its output: its kind and size, never the content."""
    if job.error is not None and LOST_OUTPUT in job.error.lower():
        return replace(job, output_kind="lost")
    if job.status != "COMPLETED":
        return job
    if "output" not in d:
        return replace(job, output_kind="absent")
    out = d["output"]
    if out is None:
        return replace(job, output_kind="null")
    if out in ("", [], {}):
        return replace(job, output_kind="empty")
    try:
        size = len(json.dumps(out, separators=(",", ":"), default=str).encode())
    except (ValueError, TypeError, RecursionError):
        size = None
    return replace(job, output_kind="value", output_bytes=size)


def parse_job(body: object) -> Job | None:
    """`/status/{id}` → Job, with its output's kind and size (`/requests` items carry no
    output: `parse_jobs` leaves them unknown)."""
    try:
        job = _job(body)
        return _output(_obj(body), job)
    except _Malformed:
        return None


def parse_jobs(body: object) -> tuple[Job, ...] | None:
    """`/requests` → its jobs; `{"requests": null}` is an empty list, a missing key malformed."""
    try:
        b = _obj(body)
        if "requests" not in b:
            raise _Malformed
        return tuple(_job(item) for item in _list(b["requests"]))
    except _Malformed:
        return None


# -- GraphQL --------------------------------------------------------------------------------


def _env(value: object) -> tuple[EnvVar, ...]:
    out = []
    for item in _list(value):
        e = _obj(item)
        out.append(EnvVar(key=_id(e, "key"), value=_str(e, "value")))
    return tuple(out)


def _template(value: object, template_id: str | None) -> Template | None:
    if value is None:
        return None
    t = _obj(value)
    return Template(
        id=_opt_str(t, "id") or template_id or "",
        name=_str(t, "name"),
        image_name=_str(t, "imageName"),
        docker_args=_str(t, "dockerArgs"),
        container_disk_gb=_opt_count(t, "containerDiskInGb"),
        env=_env(t.get("env")),
    )


def _endpoint(value: object) -> EndpointConfig:
    e = _obj(value)
    return EndpointConfig(
        id=_id(e),
        name=_str(e, "name"),
        gpu_ids=_str(e, "gpuIds"),
        network_volume_id=_opt_str(e, "networkVolumeId") or None,
        workers_min=_count(e, "workersMin"),
        workers_max=_count(e, "workersMax"),
        workers_standby=_opt_count(e, "workersStandby"),
        idle_timeout=_opt_count(e, "idleTimeout"),
        scaler_type=_opt_str(e, "scalerType"),
        scaler_value=_opt_count(e, "scalerValue"),
        locations=_opt_str(e, "locations"),
        template=_template(e.get("template"), _opt_str(e, "templateId")),
    )


def parse_endpoint_config(value: object) -> EndpointConfig | None:
    """One `myself.endpoints` item → EndpointConfig."""
    try:
        return _endpoint(value)
    except _Malformed:
        return None


def _volume(value: object) -> NetworkVolume:
    v = _obj(value)
    return NetworkVolume(
        id=_id(v),
        name=_str(v, "name"),
        size_gb=_opt_num(v, "size", nonneg=True) or 0.0,
        datacenter=_opt_str(v, "dataCenterId"),
    )


def _pod(value: object) -> Pod:
    p = _obj(value)
    return Pod(
        id=_id(p),
        name=_str(p, "name"),
        desired_status=_str(p, "desiredStatus"),
        cost_per_hr=_opt_num(p, "costPerHr", nonneg=True) or 0.0,
    )


def _account(m: Mapping[str, Any]) -> Account | None:
    balance = _opt_num(m, "clientBalance")
    spend = _opt_num(m, "currentSpendPerHr", nonneg=True)
    volumes = tuple(_volume(v) for v in _list(m.get("networkVolumes")))
    pods = tuple(_pod(p) for p in _list(m.get("pods")))
    spend_limit = _opt_num(m, "spendLimit")
    if balance is None or spend is None:
        return None  # a balance we were not told is unknown, not zero
    return Account(balance, spend, spend_limit, volumes, pods)


def _truncate(message: str) -> str:
    return message if len(message) <= MESSAGE_LIMIT else message[: MESSAGE_LIMIT - 1] + "…"


def graphql_errors(body: object) -> tuple[str, ...]:
    """The `errors[].message` strings of a GraphQL body, each cut to 200 characters."""
    if not isinstance(body, dict):
        return ()
    errors = body.get("errors")
    if errors is None:
        return ()
    if isinstance(errors, str):
        return (_truncate(errors),)
    if not isinstance(errors, list):
        return ("malformed GraphQL errors",)
    out = []
    for e in errors:
        msg = e.get("message") if isinstance(e, dict) else e
        out.append(_truncate(msg) if isinstance(msg, str) else "GraphQL error without a message")
    return tuple(out)


class EndpointItems:
    """The last answer's `myself.endpoints` items, raw and parsed, by id.

    An item equal to the last one of its id (one dict comparison, in C) is not parsed
    again: its EndpointConfig is the last one, the same object, which the history then
    shares. At 1000 endpoints that saves most of the GraphQL parse. (Python's equality
    holds `true == 1 == 1.0`: a count that turns into a boolean with nothing else changed
    keeps the last config instead of failing the answer; RunPod sends neither.)
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[dict[str, Any], EndpointConfig]] = {}

    def parse(self, items: list[Any]) -> tuple[EndpointConfig, ...]:
        """The configs of `items`; raises _Malformed like `_endpoint`."""
        out: list[EndpointConfig] = []
        seen: dict[str, tuple[dict[str, Any], EndpointConfig]] = {}
        for item in items:
            key = item.get("id") if isinstance(item, dict) else None
            last = self._last.get(key) if isinstance(key, str) else None
            config = last[1] if last is not None and last[0] == item else _endpoint(item)
            if isinstance(key, str):
                seen[key] = (item, config)
            out.append(config)
        self._last = seen
        return tuple(out)


def parse_myself(body: object, items: EndpointItems | None = None) -> Myself | None:
    """A GraphQL `{"data": {"myself": ...}, "errors"?: [...]}` body → Myself, None if unusable.

    `items`: the last answer's endpoint items, whose unchanged configs are reused."""
    try:
        data = _obj(_obj(body).get("data"))
        m = _obj(data.get("myself"))
        raw_endpoints = m.get("endpoints")
        raw = _list(raw_endpoints)
        endpoints = (items.parse(raw) if items is not None
                     else tuple(_endpoint(e) for e in raw))
        return Myself(
            account=_account(m),
            endpoints=endpoints,
            errors=graphql_errors(body),
            endpoints_listed=isinstance(raw_endpoints, list),
        )
    except _Malformed:
        return None


# -- error bodies and headers ---------------------------------------------------------------


def error_message(body: object) -> str:
    """The human message of an error body (GraphQL, problem+json, `{"message"}`, `{"error"}`)."""
    errors = graphql_errors(body)
    if errors:
        return errors[0]
    if isinstance(body, dict):
        for key in ("detail", "message", "error", "title"):
            v = body.get(key)
            if isinstance(v, str) and v:
                return _truncate(v)
    return ""


def _message_is(body: object, key: str, text: str) -> bool:
    if not isinstance(body, dict):
        return False
    v = body.get(key)
    return isinstance(v, str) and v.strip().casefold() == text


def is_not_found(body: object) -> bool:
    """RunPod's `{"message": "Not Found"}` (any status), e.g. on an account with no balance."""
    return _message_is(body, "message", "not found")


def is_missing_job(body: object) -> bool:
    """`{"error": "request does not exist"}`: the job was purged or expired."""
    return _message_is(body, "error", "request does not exist")


def parse_retry_after(value: str | None, now: float) -> float | None:
    """`Retry-After` as seconds from `now` (epoch seconds): delta-seconds or an HTTP-date."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            return None  # RFC 9110 dates are GMT; a naive one is not a valid HTTP-date
        seconds = when.timestamp() - now
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
