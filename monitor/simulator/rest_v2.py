"""The simulator's REST v2 control plane (`/v2/serverless`, `/v2/billing`, `/v2/catalog`, ...).

Errors are `application/problem+json`; every authenticated answer carries `RateLimit` and
`RateLimit-Policy` (structured fields, spec/runpod-rest-v2.md section 2.9) counted against
the scenario's quota on the simulated clock, and a request past it answers 429.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import math
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from aiohttp import web

from monitor.simulator.scenario import OK, V2_ROUTES, Fault, V2Pagination, V2Quota
from monitor.simulator.wire import PROBLEM_JSON, html_error, problem, reset
from monitor.simulator.world import Moment, World
from monitor.simulator.world_v2 import (
    ACCOUNT_AMOUNTS,
    BUCKETS,
    LogEntry,
    V2World,
    snap_down,
    snap_up,
    step,
)

WINDOWS = (("minute", 60), ("hour", 3600), ("day", 86400))
ENDPOINT_ROUTES = frozenset({"get-endpoint", "update-endpoint", "workers", "releases", "logs"})
LOG_POLL_S = 0.1
MAX_TAIL = 5000
DEFAULT_TAIL = 100

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Host(Protocol):
    """What the v2 routes need from the SimulatorServer that mounts them."""

    world: World
    request_counts: Counter[tuple[str, str]]

    def moment(self) -> Moment: ...

    def _authorized(self, request: web.Request, *, query_ok: bool) -> bool: ...

    async def _hold(self) -> None: ...

    @property
    def url(self) -> str: ...


class BadRequest(Exception):
    """A query the v2 API refuses with 400 (or `status`)."""

    def __init__(self, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status


class RestV2:
    """Mounts the v2 routes on an aiohttp app; keeps the quota's window counts."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.view = V2World(host.world)
        self.settings = host.world.scenario.v2
        # (window name, window index) -> requests counted in it
        self.used: Counter[tuple[str, int]] = Counter()
        self.throttled = 0  # requests answered 429 for the quota
        self.stopping = asyncio.Event()

    # -- routing ---------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        """Register every v2 route; call before the data plane's catch-all `/v2/{id}/...`."""
        paths = self.settings.paths
        table: list[tuple[str, str, Callable[..., Any]]] = [
            (paths.balance, "balance", self._balance),
            (paths.account_limits, "account-limits", self._account_limits),
            (paths.account, "account", self._account),
            ("/v2/serverless", "list-endpoints", self._list_endpoints),
            ("/v2/serverless/{endpoint_id}", "get-endpoint", self._get_endpoint),
            ("/v2/serverless/{endpoint_id}/workers", "workers", self._workers),
            ("/v2/serverless/{endpoint_id}/releases", "releases", self._releases),
            ("/v2/serverless/{endpoint_id}/workers/{worker_id}/logs", "logs", self._logs),
            ("/v2/billing", "billing", self._billing),
            ("/v2/billing/serverless", "billing-serverless", self._billing_serverless),
            ("/v2/billing/pods", "billing-pods", self._billing_pods),
            ("/v2/billing/network-volumes", "billing-network-volumes", self._billing_volumes),
            ("/v2/billing/endpoints", "billing-endpoints", self._billing_public),
            ("/v2/network-volumes", "network-volumes", self._volumes),
            ("/v2/network-volumes/{item_id}", "network-volumes", self._volume),
            ("/v2/pods", "pods", self._pods),
            ("/v2/pods/{item_id}", "pods", self._pod),
            ("/v2/templates", "templates", self._templates),
            ("/v2/catalog/gpus", "catalog-gpus", self._gpus),
            ("/v2/catalog/gpus/{item_id}", "catalog-gpus", self._gpu),
            ("/v2/catalog/datacenters", "catalog-datacenters", self._datacenters),
        ]
        seen: set[str] = set()
        patch = "/v2/serverless/{endpoint_id}"
        for path, route, fn in table:
            if path in seen:  # a configured path may repeat a built-in one: first wins
                continue
            seen.add(path)
            app.router.add_route("GET", path, self._wrap(route, fn))
            if path == patch:
                app.router.add_route("PATCH", path, self._wrap("update-endpoint", self._patch))
            app.router.add_route("*", path, self._not_allowed(
                route, "GET, PATCH" if path == patch else "GET"))
        for prefix in ("serverless", "billing", "catalog", "account", "pods",
                       "network-volumes", "templates"):
            app.router.add_route("*", f"/v2/{prefix}/{{tail:.*}}", self._wrap("unknown", None))

    def _not_allowed(self, route: str, allow: str = "GET") -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            self.host.request_counts[("v2", route)] += 1
            return problem(405, f"method {request.method} not allowed", {"Allow": allow})

        return handle

    def _wrap(self, route: str, fn: Callable[..., Any] | None) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            self.host.request_counts[("v2", route)] += 1
            rid = {"x-request-id": str(uuid.uuid4())}
            if not self.host._authorized(request, query_ok=False):
                given = request.headers.get("Authorization", "").strip()
                detail = "invalid bearer token" if given else "missing bearer token"
                return problem(401, detail, rid)
            m = self.host.moment()
            fault = self._fault_for(route, request.match_info.get("endpoint_id"), m)
            if not fault.ok:
                return await self._fault(request, fault, rid)
            limited, headers = self._count(m)
            headers.update(rid)
            if limited is not None:
                self.throttled += 1
                return problem(429, f"rate limit exceeded for the {limited} window", headers)
            if fn is None:
                return problem(404, "resource not found", headers)
            try:
                out = fn(request, m, headers)
                if asyncio.iscoroutine(out):
                    out = await out
            except BadRequest as exc:
                return problem(exc.status, exc.detail, headers)
            if isinstance(out, web.StreamResponse):
                return out
            if out is None:
                return problem(404, "resource not found", headers)
            return web.json_response(out, headers=headers)

        return handle

    # -- faults and the quota --------------------------------------------------------

    def _fault_for(self, route: str, endpoint_id: str | None, m: Moment) -> Fault:
        st = self.host.world.state(m)
        scoped: list[dict[str, Fault]] = []
        if endpoint_id is not None and route in ENDPOINT_ROUTES:
            ep = st.endpoints.get(endpoint_id)
            if ep is not None:
                scoped.append(ep.v2.faults)
        scoped.append(st.v2.faults)
        for faults in scoped:
            for key in (route, "*"):
                if key in faults:
                    return faults[key]
        # A scenario written for GraphQL scripts "the control plane fails" as a `graphql:`
        # fault; with no v2 fault of its own, the v2 control plane fails alike, so the
        # scenario means the same to a monitor reading either API (a GraphQL-level error
        # or a retirement has no v2 counterpart).
        if st.graphql.kind not in ("ok", "errors", "retired") and route not in (
            "logs",
        ):
            return st.graphql
        return OK

    async def _fault(
        self, request: web.Request, fault: Fault, headers: dict[str, str]
    ) -> web.StreamResponse:
        kind = fault.kind
        if kind == "timeout":
            await self.host._hold()
            return html_error(504, 504)
        if kind == "reset":
            reset(request)
            raise asyncio.CancelledError
        if kind == "malformed":
            return html_error(502, 200)
        code = int(kind)
        if code in (502, 503):
            return html_error(code, code)
        if code == 429:
            after = {"Retry-After": str(fault.retry_after),
                     "RateLimit": f'"minute";r=0;t={fault.retry_after}'}
            return problem(429, "rate limit exceeded for the minute window",
                           {**headers, **after})
        detail = {401: "missing bearer token", 403: "access denied",
                  404: "resource not found", 500: "internal server error"}[code]
        return problem(code, detail, headers)

    def _count(self, m: Moment) -> tuple[str | None, dict[str, str]]:
        """Count one request; (the exhausted window or None, the RateLimit headers)."""
        quota: V2Quota | None = self.host.world.state(m).v2.quota
        if quota is None:
            return None, {}
        now = self.view.wall(m.now_s).timestamp()
        windows = [(name, w, getattr(quota, name)) for name, w in WINDOWS
                   if getattr(quota, name) is not None]
        state = []
        for name, w, q in windows:
            index = math.floor(now / w)
            reset_s = max(1, math.ceil((index + 1) * w - now))
            state.append((name, w, q, index, reset_s))
        exhausted = [(name, reset_s) for name, _, q, index, reset_s in state
                     if self.used[(name, index)] >= q]
        if not exhausted:
            for name, _, _, index, _ in state:
                self.used[(name, index)] += 1
        limit = ", ".join(
            f'"{name}";r={max(0, q - self.used[(name, index)])};t={reset_s}'
            for name, _, q, index, reset_s in state
        )
        policy = ", ".join(f'"{name}";q={q};w={w}' for name, w, q, _, _ in state)
        headers = {"RateLimit": limit, "RateLimit-Policy": policy} if state else {}
        if exhausted:
            # Several windows can be spent at once: the wait is the longest (spec 2.9).
            name, wait = max(exhausted, key=lambda x: x[1])
            headers["Retry-After"] = str(wait)
            return name, headers
        return None, headers

    # -- pagination ------------------------------------------------------------------

    def _page(
        self, request: web.Request, items: Sequence[Any], key: str,
        render: Callable[[Any], dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """One page of `items` (each rendered only when on the page) under `key`."""
        p: V2Pagination = self.settings.pagination
        raw_limit = request.query.get(p.limit_param)
        limit = p.page_size
        if raw_limit is not None:
            if not raw_limit.isdigit() or int(raw_limit) < 1:
                raise BadRequest(f"{p.limit_param}: must be an integer >= 1 (got {raw_limit!r})")
            limit = min(int(raw_limit), p.max_page_size)
        offset = 0
        cursor = request.query.get(p.cursor_param)
        if cursor:
            decoded = _decode_cursor(cursor)
            if decoded is None:
                raise BadRequest(f"{p.cursor_param}: not a cursor this API issued")
            offset = decoded
        page = list(items[offset:offset + limit])
        end = offset + len(page)
        body = [render(x) for x in page] if render is not None else page
        return {key: body, p.next_field: _encode_cursor(end) if end < len(items) else None}

    # -- routes ----------------------------------------------------------------------

    def _list_endpoints(self, request: web.Request, m: Moment, _h: dict[str, str]) -> Any:
        url = self.host.url
        return self._page(request, self.view.listed(m), "endpoints",
                          lambda x: self.view.render_endpoint(x[0], x[1], url))

    def _get_endpoint(self, request: web.Request, m: Moment, _h: dict[str, str]) -> Any:
        return self.view.endpoint(request.match_info["endpoint_id"], m, self.host.url)

    async def _patch(self, request: web.Request, m: Moment, _h: dict[str, str]) -> Any:
        """`PATCH /v2/serverless/{id}`: only the fields present change (spec section 2.10);
        the change is a world override (World.override) the later answers all show."""
        eid = request.match_info["endpoint_id"]
        ep = self.host.world.state(m).listed(eid)
        if ep is None:
            return None
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BadRequest("body: not JSON") from None
        current = self.view.render_endpoint(eid, ep, self.host.url)
        for path, value in patch_changes(body, current):
            self.host.world.override(eid, path, value, m)
        return self.view.endpoint(eid, m, self.host.url)

    def _workers(self, request: web.Request, m: Moment, _h: dict[str, str]) -> Any:
        return self.view.workers(request.match_info["endpoint_id"], m)

    def _releases(self, request: web.Request, m: Moment, _h: dict[str, str]) -> Any:
        return self.view.releases(request.match_info["endpoint_id"], m)

    def _volumes(self, request: web.Request, m: Moment, _h: dict[str, str]) -> Any:
        return {"networkVolumes": self.view.network_volumes(m)}

    def _volume(self, request: web.Request, m: Moment, _h: dict[str, str]) -> Any:
        return _find(self.view.network_volumes(m), request.match_info["item_id"])

    def _pods(self, request: web.Request, m: Moment, _h: dict[str, str]) -> Any:
        return self._page(request, self.view.pods(m), "pods")

    def _pod(self, request: web.Request, m: Moment, _h: dict[str, str]) -> Any:
        return _find(self.view.pods(m), request.match_info["item_id"])

    def _templates(self, request: web.Request, m: Moment, _h: dict[str, str]) -> Any:
        return self._page(request, self.view.templates(m), "templates")

    def _gpus(self, request: web.Request, m: Moment, _h: dict[str, str]) -> Any:
        return {"gpus": self.view.gpus(m, availability=_catalog_include(request))}

    def _gpu(self, request: web.Request, m: Moment, _h: dict[str, str]) -> Any:
        gpus = self.view.gpus(m, availability=_catalog_include(request))
        return _find(gpus, request.match_info["item_id"])

    def _datacenters(self, request: web.Request, m: Moment, _h: dict[str, str]) -> Any:
        include = _csv(request.query.get("include"))
        bad = set(include) - {"GPU_AVAILABILITY", "CPU_AVAILABILITY"}
        if bad:
            raise BadRequest(f"include: unknown value {sorted(bad)[0]!r}", 422)
        return {"dataCenters": self.view.datacenters(
            m, gpu_availability="GPU_AVAILABILITY" in include)}

    def _balance(self, request: web.Request, m: Moment, _h: dict[str, str]) -> Any:
        return self.view.balance(m)

    def _account_limits(self, request: web.Request, m: Moment, _h: dict[str, str]) -> Any:
        return self.view.account_limits(m)

    def _account(self, request: web.Request, m: Moment, _h: dict[str, str]) -> Any:
        return self.view.account(m)

    # -- billing ---------------------------------------------------------------------

    def _window(self, request: web.Request, m: Moment) -> tuple[str, list[tuple[datetime,
                                                                                datetime]]]:
        q = request.query
        size = q.get("bucketSize", "day")
        if size not in BUCKETS:
            raise BadRequest(f"bucketSize: must be one of {', '.join(BUCKETS)} (got {size!r})",
                             422)
        now = self.view.wall(m.now_s)
        if "lastN" in q:
            if "startTime" in q or "endTime" in q:
                raise BadRequest("lastN is mutually exclusive with startTime/endTime")
            raw = q["lastN"]
            if not raw.isdigit() or int(raw) < 1:
                raise BadRequest(f"lastN: must be an integer >= 1 (got {raw!r})", 422)
            if int(raw) > 2000:
                raise BadRequest("lastN: at most 2000 buckets")
            end = step(snap_down(now, size), size)
            start = step(snap_down(now, size), size, 1 - int(raw))
        else:
            start = snap_down(_time(q.get("startTime"), "startTime")
                              or now - timedelta(days=30), size)
            end = snap_up(_time(q.get("endTime"), "endTime") or now, size)
            if end <= start:
                raise BadRequest("endTime: must be after startTime")
        try:
            return size, self.view.buckets(size, start, end)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None

    @staticmethod
    def _meta(size: str, windows: list[tuple[datetime, datetime]], records: list[dict[str, Any]],
              amounts: tuple[str, ...], **extra: Any) -> dict[str, Any]:
        start = windows[0][0] if windows else None
        end = windows[-1][1] if windows else None
        query: dict[str, Any] = {
            "startTime": start.strftime("%Y-%m-%dT%H:%M:%SZ") if start else None,
            "endTime": end.strftime("%Y-%m-%dT%H:%M:%SZ") if end else None,
            "bucketSize": size,
        }
        query.update({k: v for k, v in extra.items() if not k.startswith("unique")})
        totals = {k: round(sum(r[k] for r in records), 6) for k in amounts}
        meta = {"query": query, "recordCount": len(records), "totals": totals}
        meta.update({k: v for k, v in extra.items() if k.startswith("unique")})
        return {"records": records, "metadata": meta}

    def _billing(self, request: web.Request, m: Moment, _h: dict[str, str]) -> Any:
        size, windows = self._window(request, m)
        return self._meta(size, windows, self.view.billing_account(windows, m), ACCOUNT_AMOUNTS)

    def _billing_serverless(self, request: web.Request, m: Moment, _h: dict[str, str]) -> Any:
        size, windows = self._window(request, m)
        sid = request.query.get("serverlessId")
        records = self.view.billing_serverless(windows, m, sid)
        extra: dict[str, Any] = {"uniqueServerlessCount": len({r["serverlessId"]
                                                              for r in records})}
        if sid is not None:
            extra["serverlessId"] = sid
        return self._meta(size, windows, records, SERVERLESS_AMOUNTS, **extra)

    def _billing_pods(self, request: web.Request, m: Moment, _h: dict[str, str]) -> Any:
        size, windows = self._window(request, m)
        pid = request.query.get("podId")
        records = self.view.billing_pods(windows, m, pid)
        extra = {"podId": pid} if pid is not None else {}
        return self._meta(size, windows, records,
                          ("totalAmount", "gpuAmount", "cpuAmount", "diskAmount"), **extra)

    def _billing_volumes(self, request: web.Request, m: Moment, _h: dict[str, str]) -> Any:
        size, windows = self._window(request, m)
        vid = request.query.get("networkVolumeId")
        records = self.view.billing_volumes(windows, m, vid)
        extra: dict[str, Any] = {"uniqueNetworkVolumeCount": len({r["networkVolumeId"]
                                                                 for r in records})}
        if vid is not None:
            extra["networkVolumeId"] = vid
        return self._meta(size, windows, records,
                          ("totalAmount", "standardAmount", "highPerformanceAmount"), **extra)

    def _billing_public(self, request: web.Request, m: Moment, _h: dict[str, str]) -> Any:
        # Public Endpoints (pay-per-use model APIs), not serverless: this account has none.
        size, windows = self._window(request, m)
        return self._meta(size, windows, [], ("totalAmount",))

    # -- worker logs (server-sent events) --------------------------------------------

    async def _logs(
        self, request: web.Request, m: Moment, headers: dict[str, str]
    ) -> web.StreamResponse | None:
        eid, wid = request.match_info["endpoint_id"], request.match_info["worker_id"]
        q = request.query
        source = q.get("source")
        if source is not None and source not in ("container", "system"):
            raise BadRequest(f"source: must be container or system (got {source!r})", 422)
        tail = DEFAULT_TAIL
        if "tail" in q:
            if not q["tail"].isdigit() or int(q["tail"]) > MAX_TAIL:
                raise BadRequest(f"tail: must be an integer 0..{MAX_TAIL} (got {q['tail']!r})",
                                 422)
            tail = int(q["tail"])
        since = _time(q.get("since"), "since")
        after = _event_seq(request.headers.get("Last-Event-ID"))
        lines = self.view.logs(eid, wid, m)
        if lines is None:
            return None

        def wanted(seq: int, x: LogEntry) -> bool:
            if source is not None and x.source != source:
                return False
            if after is not None:
                return seq > after
            return since is None or self.view.wall(x.t) >= since

        numbered = [(i, x) for i, x in enumerate(lines) if wanted(i, x)]
        if after is None and since is None:
            numbered = numbered[-tail:] if tail else []
        resp = web.StreamResponse(headers={
            **headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            "Connection": "keep-alive", "X-Accel-Buffering": "no",
        })
        await resp.prepare(request)
        sent = len(lines) - 1  # every line so far was sent or filtered out
        for i, x in numbered:
            await resp.write(self._event(i, x))
        # The stream stays open to tail live output (clients read for a bounded time).
        deadline = time.monotonic() + self.settings.logs_hold_s
        while time.monotonic() < deadline and not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), LOG_POLL_S)
            now_lines = self.view.logs(eid, wid, self.host.moment()) or []
            for i in range(sent + 1, len(now_lines)):
                if wanted(i, now_lines[i]):
                    await resp.write(self._event(i, now_lines[i]))
                sent = i
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()
        return resp

    def _event(self, seq: int, x: LogEntry) -> bytes:
        ts = self.view.iso(x.t)
        data = json.dumps({"ts": ts, "source": x.source, "line": x.line})
        return f"id: {ts}/{seq:012d}\ndata: {data}\n\n".encode()


# UpdateEndpointRequest's fields (spec section 2.10); any other is a 422
MUTABLE_FIELDS = frozenset({
    "name", "gpu", "cpu", "workers", "scaling", "dataCenterIds", "networkVolumes", "timeout",
    "flashboot", "image", "args", "disk", "ports", "env", "registry", "templateId",
})
# Fields RunPod accepts that the simulator does not play (container changes, GPU pools,
# volumes): a 501 says so rather than a 200 that changed nothing.
NOT_SIMULATED = frozenset({
    "gpu", "cpu", "networkVolumes", "image", "args", "disk", "ports", "env", "registry",
    "templateId",
})
FLASHBOOT = ("OFF", "FLASHBOOT", "PRIORITY_FLASHBOOT")
SCALERS = ("QUEUE_DELAY", "REQUEST_COUNT")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_strs(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(x, str) for x in value)


def patch_changes(body: Any, current: dict[str, Any]) -> list[tuple[tuple[str, ...], Any]]:
    """Check an UpdateEndpointRequest against the endpoint's v2 body now; the overrides it
    makes, as (path in the simulated endpoint state, value). Raises BadRequest."""
    if not isinstance(body, dict):
        raise BadRequest("body: must be a JSON object", 422)
    unknown = sorted(set(body) - MUTABLE_FIELDS)
    if unknown:
        raise BadRequest(f"{unknown[0]}: unknown field (additionalProperties: false)", 422)
    kinds: dict[str, tuple[Callable[[Any], bool], str]] = {
        "name": (lambda v: isinstance(v, str) and 0 < len(v) <= 191, "a non-empty string"),
        "gpu": (lambda v: isinstance(v, dict), "an object"),
        "cpu": (lambda v: isinstance(v, dict), "an object"),
        "workers": (lambda v: isinstance(v, dict), "an object"),
        "scaling": (lambda v: isinstance(v, dict), "an object"),
        "dataCenterIds": (_is_strs, "an array of strings"),
        "networkVolumes": (_is_strs, "an array of strings"),
        "timeout": (_is_int, "an integer >= 0 (milliseconds)"),
        "flashboot": (lambda v: v in FLASHBOOT, "one of " + ", ".join(FLASHBOOT)),
        "image": (lambda v: isinstance(v, str), "a string"),
        "args": (lambda v: isinstance(v, str), "a string"),
        "disk": (_is_int, "an integer >= 0"),
        "ports": (_is_strs, "an array of strings"),
        "env": (lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
                "an object of strings"),
        "registry": (lambda v: v is None or isinstance(v, str), "a string or null"),
        "templateId": (lambda v: isinstance(v, str), "a string"),
    }
    for name, value in body.items():
        ok, what = kinds[name]
        if not ok(value):
            raise BadRequest(f"{name}: must be {what}", 422)
    if "gpu" in body and "cpu" in body:
        raise BadRequest("gpu and cpu are mutually exclusive")
    out: list[tuple[tuple[str, ...], Any]] = []
    workers = body.get("workers")
    if workers is not None:
        extra = sorted(set(workers) - {"min", "max", "idleTimeout"})
        if extra:
            raise BadRequest(f"workers.{extra[0]}: unknown field", 422)
        for k, v in workers.items():
            if not _is_int(v):
                raise BadRequest(f"workers.{k}: must be an integer >= 0", 422)
        # sent keys replace, the others stay (whether RunPod merges is unconfirmed)
        low = workers.get("min", current["workers"]["min"])
        high = workers.get("max", current["workers"]["max"])
        if low > high:
            raise BadRequest(f"workers.min ({low}) must not exceed workers.max ({high})")
    scaling = body.get("scaling")
    scaler = current["scaling"]["type"]
    if scaling is not None:
        extra = sorted(set(scaling) - {"type", "queueDelay", "requestCount"})
        if extra:
            raise BadRequest(f"scaling.{extra[0]}: unknown field", 422)
        scaler = scaling.get("type", scaler)
        if scaler not in SCALERS:
            raise BadRequest(f"scaling.type: must be one of {', '.join(SCALERS)}", 422)
        for k in ("queueDelay", "requestCount"):
            if k in scaling and not _is_int(scaling[k]):
                raise BadRequest(f"scaling.{k}: must be an integer >= 0", 422)
    if workers is not None and "idleTimeout" in workers and scaler == "REQUEST_COUNT":
        raise BadRequest("workers.idleTimeout: not valid with REQUEST_COUNT scaling", 422)
    unplayed = sorted(set(body) & NOT_SIMULATED)
    if unplayed:
        raise BadRequest(f"{unplayed[0]}: the simulator does not apply this field", 501)
    for k, item_key in (("min", "workersMin"), ("max", "workersMax"),
                        ("idleTimeout", "idleTimeout")):
        if workers is not None and k in workers:
            out.append((("item", item_key), workers[k]))
    if scaling is not None:
        out.append((("item", "scalerType"), scaler))
        value = scaling.get("queueDelay" if scaler == "QUEUE_DELAY" else "requestCount")
        if value is not None:
            out.append((("item", "scalerValue"), value))
    if "name" in body:
        out.append((("item", "name"), body["name"]))
    if "timeout" in body:
        out.append((("item", "executionTimeoutMs"), body["timeout"]))
    if "flashboot" in body:
        out.append((("item", "flashBootType"), body["flashboot"]))
    if "dataCenterIds" in body:
        out.append((("item", "locations"), ",".join(body["dataCenterIds"])))
    return out


SERVERLESS_AMOUNTS = ("totalAmount", "gpuAmount", "cpuAmount", "diskAmount", "feeAmount")
assert set(V2_ROUTES) >= ENDPOINT_ROUTES


def _find(items: list[dict[str, Any]], item_id: str) -> dict[str, Any] | None:
    return next((x for x in items if str(x.get("id")) == item_id), None)


def _csv(value: str | None) -> list[str]:
    return [p.strip() for p in (value or "").split(",") if p.strip()]


def _catalog_include(request: web.Request) -> bool:
    """The v2.9.0 rules: `product` is required with `include`, and valid only with it."""
    include = _csv(request.query.get("include"))
    product = _csv(request.query.get("product"))
    if set(include) - {"AVAILABILITY"}:
        raise BadRequest(f"include: unknown value {include[0]!r}", 422)
    if set(product) - {"POD", "CLUSTER", "SERVERLESS"}:
        raise BadRequest(f"product: unknown value {product[0]!r}", 422)
    if include and not product:
        raise BadRequest("product is required with include=AVAILABILITY")
    if product and not include:
        raise BadRequest("product is valid only with include=AVAILABILITY")
    for name in ("count", "cloud", "countryCodes", "cudaVersions", "minCudaVersion"):
        if name in request.query and not include:
            raise BadRequest(f"{name} is valid only with include=AVAILABILITY")
    return bool(include)


def _time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name}: not an RFC 3339 time (got {value!r})", 422) from None
    if parsed.tzinfo is None:
        raise BadRequest(f"{name}: needs a time zone (got {value!r})", 422)
    return parsed


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int | None:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if not text.startswith("o:") or not text[2:].isdigit():
        return None
    return int(text[2:])


def _event_seq(last_event_id: str | None) -> int | None:
    if not last_event_id or "/" not in last_event_id:
        return None
    tail = last_event_id.rsplit("/", 1)[1]
    return int(tail) if tail.isdigit() else None


__all__ = ["PROBLEM_JSON", "RestV2"]
