"""Pure parsers of RunPod's REST v2 answers (spec/runpod-rest-v2.md), as `parse.py` is for
GraphQL and the data plane: each returns None for a body of the wrong shape and never
raises, on any input. Fields the spec marks UNCONFIRMED (the account limits' inner names)
are read when present and of the expected type, and are otherwise unknown (None), never a
reason to refuse the whole answer.
"""

from __future__ import annotations

import codecs
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from model.observation import (
    EndpointConfig,
    EnvVar,
    GpuStock,
    LogLine,
    NetworkVolume,
    Pod,
    Release,
    ReleaseChange,
    Releases,
    Template,
    Worker,
    Workers,
)
from monitor.runpod.models import AccountLimits, Balance, ServerlessSpend
from monitor.runpod.parse import (
    NOT_JSON,
    _count,
    _id,
    _list,
    _Malformed,
    _obj,
    _opt_count,
    _opt_num,
    _opt_str,
    _str,
    _truncate,
    decode_json,
    graphql_errors,
)

T = TypeVar("T")


# -- field readers ----------------------------------------------------------------------------


def _time(d: Mapping[str, Any], key: str) -> float | None:
    """An RFC 3339 time as unix seconds; None when absent or null; _Malformed otherwise."""
    v = d.get(key)
    if v is None:
        return None
    if not isinstance(v, str) or len(v) > 64:
        raise _Malformed
    try:
        when = datetime.fromisoformat(v.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise _Malformed from None
    if when.tzinfo is None:
        raise _Malformed  # RFC 3339 times carry an offset
    try:
        return when.timestamp()
    except (OverflowError, OSError, ValueError):
        raise _Malformed from None


def _strs(value: object) -> list[str]:
    """A list of non-empty strings (null is empty)."""
    out = _list(value)
    if not all(isinstance(x, str) and x for x in out):
        raise _Malformed
    return out


def _opt_bool(d: Mapping[str, Any], key: str) -> bool | None:
    v = d.get(key)
    if v is None or isinstance(v, bool):
        return v
    raise _Malformed


def _section(d: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """A nested object; absent or null is empty."""
    v = d.get(key)
    return {} if v is None else _obj(v)


def _guard(fn: Callable[[], T]) -> T | None:
    try:
        return fn()
    except (_Malformed, RecursionError):
        return None


# -- errors -------------------------------------------------------------------------------------


def problem_message(body: object) -> str:
    """An `application/problem+json` body's message: `detail`, else `title`, then the first
    of `errors[]` ("Request validation failed.: $: missing property 'x'"); "" when the body
    is not problem-shaped."""
    if not isinstance(body, dict):
        return ""
    main = ""
    for key in ("detail", "title"):
        v = body.get(key)
        if isinstance(v, str) and v.strip():
            main = v.strip()
            break
    if not main:
        return ""
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], str) and errors[0]:
        main = f"{main}: {errors[0]}"
    return _truncate(main)


# "has been retired", "is retired", "no longer available": the API is gone. A notice that
# it "will be retired" (the deprecation warning RunPod sends today) is not.
_GONE = re.compile(
    r"\b(has|have) been (retired|removed|shut down|discontinued|decommissioned)\b"
    r"|\b(is|was) (now )?(retired|gone|decommissioned)\b"
    r"|\bdeprecated and (removed|gone|retired|no longer)\b"
    r"|\bno longer (available|supported|served|exists)\b",
    re.IGNORECASE,
)


def is_graphql_retired(status: int, body: object) -> bool:
    """Whether a GraphQL answer says GraphQL is gone: HTTP 404 or 410, or a 200/4xx whose
    error message says it was retired (spec 2.11; the simulator's `graphql: retired`)."""
    if status in (404, 410):
        return True
    if not (status == 200 or 400 <= status < 500):
        return False
    messages = [*graphql_errors(body), problem_message(body)]
    if isinstance(body, dict):
        messages += [v for k in ("message", "error") if isinstance(v := body.get(k), str)]
    return any(_GONE.search(m) and "graphql" in m.casefold() for m in messages if m)


# -- the data plane's writes ----------------------------------------------------------------------


def parse_purge(body: object) -> int | None:
    """`POST /{id}/purge-queue` → how many queued jobs it removed (`removed`)."""
    def run() -> int:
        b = _obj(body)
        n = _opt_count(b, "removed")
        if n is None:
            raise _Malformed
        return n
    return _guard(run)


# -- endpoints --------------------------------------------------------------------------------


def _env_map(value: object) -> tuple[EnvVar, ...]:
    if value is None:
        return ()
    env = _obj(value)
    out = []
    for k, v in env.items():
        if not isinstance(k, str) or not k or not (v is None or isinstance(v, str)):
            raise _Malformed
        out.append(EnvVar(key=k, value=v or ""))
    return tuple(out)


def _scaler_value(scaling: Mapping[str, Any], kind: str | None) -> int | None:
    key = "requestCount" if kind == "REQUEST_COUNT" else "queueDelay"
    v = _opt_num(scaling, key, nonneg=True)
    # EndpointConfig holds GraphQL's integer; v2 allows a queueDelay of 0.5 s
    return None if v is None else max(1, round(v)) if v > 0 else 0


def _endpoint_v2(value: object) -> EndpointConfig:
    e = _obj(value)
    gpu = _section(e, "gpu")
    pools = _strs(gpu.get("pools"))
    excluded = _strs(gpu.get("excludedTypes"))
    workers = _obj(e.get("workers"))
    if workers.get("max") is None:
        # required (spec 2.2): read as 0 it would claim a disabled endpoint
        raise _Malformed
    scaling = _section(e, "scaling")
    scaler_type = _opt_str(scaling, "type")
    locations = _strs(e.get("dataCenterIds"))
    volumes = tuple(_strs(e.get("networkVolumes")))
    template = None
    if any(k in e for k in ("image", "args", "disk", "env")):
        template = Template(
            id="",  # v2 keeps no link to a template (spec 2.2)
            image_name=_str(e, "image"),
            docker_args=_str(e, "args"),
            container_disk_gb=_opt_count(e, "disk"),
            env=_env_map(e.get("env")),
        )
    return EndpointConfig(
        id=_id(e),
        name=_str(e, "name"),
        gpu_ids=",".join([*pools, *(f"-{t}" for t in excluded)]),
        network_volume_id=volumes[0] if volumes else None,
        workers_min=_count(workers, "min"),
        workers_max=_count(workers, "max"),
        workers_standby=None,  # v2 has no standby field
        idle_timeout=_opt_count(workers, "idleTimeout"),
        scaler_type=scaler_type,
        scaler_value=_scaler_value(scaling, scaler_type),
        locations=",".join(locations) or None,
        template=template,
        network_volume_ids=volumes,
        timeout_ms=_opt_count(e, "timeout"),
        flashboot=_opt_str(e, "flashboot"),
        endpoint_type=_opt_str(e, "type"),
    )


def parse_endpoint_v2(body: object) -> EndpointConfig | None:
    """`GET /v2/serverless/{id}` (or one list item) → EndpointConfig, mapped as its
    docstring says (pools and "-"excluded types → gpu_ids, dataCenterIds → locations...)."""
    return _guard(lambda: _endpoint_v2(body))


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a paginated v2 list: its items and the cursor to the next (None: last)."""

    items: tuple[Any, ...]
    next_cursor: str | None
    cursor_named: bool = True  # False: the answer has no such member at all (not even null)


def parse_page(
    body: object, key: str, next_field: str, item: Callable[[object], Any]
) -> Page | None:
    """A paginated list `{key: [...], next_field: cursor|null}`; `item` parses one item and
    raises `_Malformed` (a missing list is malformed; a missing cursor means the last page)."""
    def run() -> Page:
        b = _obj(body)
        if key not in b:
            raise _Malformed
        items = tuple(item(x) for x in _list(b[key]))
        cursor = _opt_str(b, next_field) or None
        return Page(items, cursor, next_field in b)
    return _guard(run)


def parse_endpoints_page(body: object, key: str = "endpoints",
                         next_field: str = "nextCursor") -> Page | None:
    """One page of `GET /v2/serverless`: EndpointConfig items."""
    return parse_page(body, key, next_field, _endpoint_v2)


# -- workers and releases -------------------------------------------------------------------------


def _worker(value: object) -> Worker:
    w = _obj(value)
    gpu_count = _opt_count(w, "gpuCount")
    return Worker(
        id=_id(w),
        status=_id(w, "status").upper(),
        stale=bool(_opt_bool(w, "isStale")),
        version=_opt_count(w, "version"),
        started_at=_time(w, "startedAt"),
        uptime_s=_opt_count(w, "uptimeSeconds"),
        gpu_type=_opt_str(w, "gpuTypeId"),
        datacenter=_opt_str(w, "dataCenterId"),
        gpu_count=1 if gpu_count is None else gpu_count,
        image=_opt_str(w, "image"),
    )


def parse_workers(body: object) -> Workers | None:
    """`GET /v2/serverless/{id}/workers` → Workers (a missing `workers` list is malformed)."""
    def run() -> Workers:
        b = _obj(body)
        if "workers" not in b:
            raise _Malformed
        return Workers(_opt_count(b, "endpointVersion"),
                       tuple(_worker(x) for x in _list(b["workers"])))
    return _guard(run)


def _compact(value: object) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        raise _Malformed from None


def _release(value: object) -> Release:
    r = _obj(value)
    version = _opt_count(r, "version")
    if version is None or version < 1:
        raise _Malformed
    diff = []
    for item in _list(r.get("diff")):
        d = _obj(item)
        diff.append(ReleaseChange(field=_id(d, "field"), old=_compact(d.get("old")),
                                  new=_compact(d.get("new"))))
    return Release(
        version=version,
        created_at=_time(r, "createdAt"),
        source=_str(r, "source"),
        build_id=_opt_str(r, "buildId"),
        worker_count=_opt_count(r, "workerCount"),
        diff=tuple(diff),
    )


def parse_releases(body: object) -> Releases | None:
    """`GET /v2/serverless/{id}/releases` → Releases, newest first; each diff's old/new as
    compact JSON text."""
    def run() -> Releases:
        b = _obj(body)
        if "releases" not in b:
            raise _Malformed
        rollout = _section(b, "rollout")
        percent = _opt_num(rollout, "percentOnLatest", nonneg=True)
        releases = sorted((_release(x) for x in _list(b["releases"])), key=lambda r: -r.version)
        return Releases(
            endpoint_version=_opt_count(b, "endpointVersion"),
            releases=tuple(releases),
            rollout_in_progress=_opt_bool(rollout, "inProgress"),
            percent_on_latest=percent,
        )
    return _guard(run)


# -- account and billing ---------------------------------------------------------------------------


def parse_balance(body: object) -> Balance | None:
    """The balance route → Balance; `balanceAmount` is required (unknown is never zero)."""
    def run() -> Balance:
        b = _obj(body)
        amount = _opt_num(b, "balanceAmount")
        if amount is None:
            raise _Malformed
        mode = _opt_str(b, "billingMode")
        return Balance(amount, mode.upper() if mode else None)
    return _guard(run)


def parse_account(body: object) -> str | None:
    """The account route → the account id (the team owner's for a team key); the email it
    also carries is not kept."""
    return _guard(lambda: _id(_obj(body)))


def _loose_num(d: Mapping[str, Any], key: str) -> float | None:
    try:
        return _opt_num(d, key, nonneg=True)
    except _Malformed:
        return None


def _loose_count(d: Mapping[str, Any], key: str) -> int | None:
    try:
        return _opt_count(d, key)
    except _Malformed:
        return None


def parse_account_limits(body: object) -> AccountLimits | None:
    """The account-limits route → AccountLimits. The inner names (`limit`, `current`) are
    UNCONFIRMED: one absent or of another type is None; only a non-object body is None."""
    if not isinstance(body, dict):
        return None
    spend = body.get("spendRate")
    workers = body.get("serverlessWorkers")
    s = spend if isinstance(spend, dict) else {}
    w = workers if isinstance(workers, dict) else {}
    return AccountLimits(
        spend_limit=_loose_num(s, "limit"),
        spend_current=_loose_num(s, "current"),
        workers_limit=_loose_count(w, "limit"),
        workers_current=_loose_count(w, "current"),
    )


def parse_serverless_billing(body: object, now: float) -> ServerlessSpend | None:
    """`GET /v2/billing/serverless?bucketSize=hour&lastN=2` → the spend of the last COMPLETE
    bucket, per endpoint and in all, as USD/h.

    A bucket is complete when it ends before the answer's window does (`metadata.query.
    endTime`, the end of the in-progress bucket), or, without that, by `now` (unix s)."""
    def run() -> ServerlessSpend:
        b = _obj(body)
        if "records" not in b:
            raise _Malformed
        meta = _section(b, "metadata")
        window_end = _time(_section(meta, "query"), "endTime")
        rows: list[tuple[float, float, str, float]] = []
        for item in _list(b["records"]):
            r = _obj(item)
            start, end = _time(r, "startTime"), _time(r, "endTime")
            amount = _opt_num(r, "totalAmount", nonneg=True)
            if start is None or end is None or end <= start or amount is None:
                raise _Malformed
            rows.append((start, end, _id(r, "serverlessId"), amount))
        complete = [x for x in rows
                    if (x[1] < window_end if window_end is not None else x[1] <= now)]
        if not complete:
            return ServerlessSpend()
        last_end = max(x[1] for x in complete)
        per: dict[str, float] = {}
        start = last_end
        for s, e, sid, amount in complete:
            if e == last_end:
                start = s
                per[sid] = per.get(sid, 0.0) + amount / ((e - s) / 3600)
        total = sum(per.values())
        if not math.isfinite(total):
            raise _Malformed
        return ServerlessSpend(per, total, start, last_end)
    return _guard(run)


def _volume(value: object) -> NetworkVolume:
    v = _obj(value)
    return NetworkVolume(
        id=_id(v),
        name=_str(v, "name"),
        size_gb=_opt_num(v, "size", nonneg=True) or 0.0,
        datacenter=_opt_str(v, "dataCenter"),
    )


def parse_network_volumes(body: object) -> tuple[NetworkVolume, ...] | None:
    """`GET /v2/network-volumes` → NetworkVolume (`dataCenter` → datacenter)."""
    def run() -> tuple[NetworkVolume, ...]:
        b = _obj(body)
        if "networkVolumes" not in b:
            raise _Malformed
        return tuple(_volume(x) for x in _list(b["networkVolumes"]))
    return _guard(run)


def _pod(value: object) -> Pod:
    p = _obj(value)
    return Pod(
        id=_id(p),
        name=_str(p, "name"),
        desired_status=_str(p, "status"),
        cost_per_hr=_opt_num(p, "cost", nonneg=True) or 0.0,
    )


def parse_pods_page(body: object, key: str = "pods",
                    next_field: str = "nextCursor") -> Page | None:
    """One page of `GET /v2/pods`: Pod items (`status` → desired_status, `cost` USD/h)."""
    return parse_page(body, key, next_field, _pod)


def _gpu(value: object) -> GpuStock:
    g = _obj(value)
    dcs = []
    for item in _list(g.get("dataCenters")):
        d = _obj(item)
        dcs.append((_id(d), _str(d, "availability").upper()))
    availability = _opt_str(g, "availability")
    return GpuStock(
        gpu_type=_id(g),
        pool=_opt_str(g, "pool"),
        availability=availability.upper() if availability else None,
        datacenters=tuple(dcs),
        price_serverless=_opt_num(_section(g, "price"), "serverless", nonneg=True),
    )


def parse_gpus(body: object) -> tuple[GpuStock, ...] | None:
    """`GET /v2/catalog/gpus?include=AVAILABILITY` → GpuStock per GPU type."""
    def run() -> tuple[GpuStock, ...]:
        b = _obj(body)
        if "gpus" not in b:
            raise _Malformed
        return tuple(_gpu(x) for x in _list(b["gpus"]))
    return _guard(run)


# -- worker logs (server-sent events) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One server-sent event: its `data` lines joined with newlines, and its `id`."""

    data: str
    id: str | None = None
    event: str | None = None


class SseDecoder:
    """An incremental `text/event-stream` decoder (the WHATWG rules): feed it bytes as they
    come, get back the events they complete. Never raises; undecodable bytes become U+FFFD."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buf = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._event: str | None = None
        self._first = True

    @property
    def pending(self) -> bool:
        """Whether an event has begun and not ended (a line or data waiting)."""
        return bool(self._buf or self._data)

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """The events `chunk` completes (a partial line waits for the next chunk)."""
        text = self._utf8.decode(chunk)
        if self._first and text:
            text = text.removeprefix("\ufeff")
            self._first = False
        self._buf += text
        out: list[SseEvent] = []
        while True:
            cut = _line_end(self._buf)
            if cut is None:
                return out
            end, nxt = cut
            line, self._buf = self._buf[:end], self._buf[nxt:]
            event = self._line(line)
            if event is not None:
                out.append(event)

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            if not self._data:
                self._event = None
                return None
            event = SseEvent("\n".join(self._data), self._id, self._event)
            self._data, self._event = [], None
            return event
        if line.startswith(":"):
            return None  # a comment (keep-alive)
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "event":
            self._event = value
        return None


def _line_end(buf: str) -> tuple[int, int] | None:
    """Where the first line of `buf` ends and the next starts (CRLF, LF or CR), or None.
    A CR at the very end may be the start of a CRLF: it waits for more."""
    lf, cr = buf.find("\n"), buf.find("\r")
    if lf < 0 and cr < 0:
        return None
    if cr < 0 or (0 <= lf < cr):
        return lf, lf + 1
    if cr + 1 == len(buf):
        return None
    return cr, cr + (2 if buf[cr + 1] == "\n" else 1)


def parse_log_event(data: str) -> LogLine | None:
    """One worker-log event's `data` (`{"ts", "source", "line"}`) → LogLine, None if
    malformed (not JSON, no `line` string, a bad `ts`)."""
    def run() -> LogLine:
        value = decode_json(data.encode())
        if value is NOT_JSON:
            raise _Malformed
        d = _obj(value)
        line = d.get("line")
        if not isinstance(line, str):
            raise _Malformed
        return LogLine(t=_time(d, "ts"), source=_str(d, "source"), line=line)
    return _guard(run)

