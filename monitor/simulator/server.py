"""The simulator's HTTP server: RunPod's data plane and GraphQL on one loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from monitor.simulator import graphql_schema as gql
from monitor.simulator.rest_v2 import RestV2
from monitor.simulator.scenario import Fault, Scenario
from monitor.simulator.wire import html_error as _html
from monitor.simulator.wire import problem
from monitor.simulator.wire import reset as _reset
from monitor.simulator.world import TERMINAL, JobMissing, Moment, World

NOT_FOUND = {"message": "Not Found"}
NO_SUCH_JOB = {"error": "request does not exist"}
UNAUTHORIZED = {"error": "Unauthorized"}
DEFAULT_WAIT_MS = 90_000
MAX_WAIT_MS = 300_000
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# RunPod's published per-endpoint limits (spec/runpod-api.md, Rate limits, base values):
# operation -> (requests per RATE_WINDOW_S, concurrent requests or None).
RATE_WINDOW_S = 10.0
RATE_LIMITS: Mapping[str, tuple[int, int | None]] = {
    "runsync": (2000, 400),
    "run": (1000, 200),
    "status": (2000, 400),  # shared by /status, /status-sync and /stream
    "cancel": (100, 20),
    "purge-queue": (2, None),
    "requests": (10, 2),
}
_RATE_GROUP = {"status-sync": "status", "stream": "status"}


def _json(body: Any, status: int = 200, **headers: str) -> web.Response:
    return web.json_response(body, status=status, headers=headers or None)


class SimulatorServer:
    """A RunPod look-alike over real HTTP, playing `scenario` on a manual or real clock."""

    def __init__(
        self,
        scenario: Scenario,
        api_key: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        timeout_hold_s: float = 30.0,
        realtime: bool = False,
    ) -> None:
        if not api_key:
            raise ValueError("the simulator needs a non-empty API key")
        self.scenario = scenario
        self.world = World(scenario)
        self.request_counts: Counter[tuple[str, str]] = Counter()
        # (endpoint_id, operation) -> the most requests seen in any RATE_WINDOW_S window
        # (real time) and the most in flight at once; operations as in RATE_LIMITS
        self.rate_peaks: Counter[tuple[str, str]] = Counter()
        self.concurrency_peaks: Counter[tuple[str, str]] = Counter()
        self._arrivals: dict[tuple[str, str], deque[float]] = {}
        self._inflight: Counter[tuple[str, str]] = Counter()
        self.timeout_hold_s = timeout_hold_s
        self.realtime = realtime
        self._key = api_key.encode()
        self._host, self._want_port = host, port
        self._port: int | None = None
        self._cycle = 1
        self._t0 = time.monotonic()
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self.v2 = RestV2(self)

    # -- the clock ---------------------------------------------------------------------

    def set_cycle(self, k: int) -> None:
        """Move the clock to cycle `k` (1-based): simulated time (k-1) * interval_s."""
        if k < 1:
            raise ValueError(f"cycle must be >= 1 (got {k})")
        self._cycle = k
        if self.realtime:
            self._t0 = time.monotonic() - (k - 1) * self.scenario.interval_s

    @property
    def now_s(self) -> float:
        if self.realtime:
            return time.monotonic() - self._t0
        return (self._cycle - 1) * self.scenario.interval_s

    @property
    def cycle(self) -> int:
        if self.realtime:
            k = math.floor(self.now_s / self.scenario.interval_s) + 1
            return min(k, self.scenario.total_cycles)
        return self._cycle

    def moment(self) -> Moment:
        return Moment(self.cycle, self.now_s)

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the simulator is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    async def start(self) -> str:
        """Listen on host:port; returns the base URL."""
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_post("/graphql", self._graphql)
        self.v2.stopping = asyncio.Event()
        self.v2.add_routes(app)  # before the data plane's catch-all /v2/{endpoint_id}/...
        for name, methods, with_job in (
            ("health", ("GET",), False), ("requests", ("GET",), False),
            ("run", ("POST",), False), ("runsync", ("POST",), False),
            ("purge-queue", ("POST",), False), ("status", ("GET", "POST"), True),
            ("status-sync", ("GET", "POST"), True), ("stream", ("GET", "POST"), True),
            ("cancel", ("POST",), True), ("retry", ("POST",), True),
        ):
            path = f"/v2/{{endpoint_id}}/{name}" + ("/{job_id}" if with_job else "")
            for method in methods:
                app.router.add_route(method, path, self._data_plane(name))
        app.router.add_route("*", "/v2/{endpoint_id}/{tail:.*}", self._data_plane("unknown"))
        # No access log: GraphQL callers may put the key in the query string.
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._want_port)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        self._t0 = time.monotonic() - (self._cycle - 1) * self.scenario.interval_s
        return self.url

    async def stop(self) -> None:
        """Release held requests and close the port."""
        if self._stopping is not None:
            self._stopping.set()
        self.v2.stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- shared pieces -----------------------------------------------------------------

    def _authorized(self, request: web.Request, *, query_ok: bool) -> bool:
        given = request.headers.get("Authorization", "").strip()
        if given[:7].lower() == "bearer ":
            given = given[7:].strip()
        if not given and query_ok:
            given = request.query.get("api_key", "")
        return bool(given) and hmac.compare_digest(given.encode(), self._key)

    async def _hold(self) -> None:
        """Wait until the client gives up (the task is cancelled), the hold ends, or stop()."""
        assert self._stopping is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self.timeout_hold_s)

    async def _fault(self, request: web.Request, fault: Fault, *, graphql: bool) -> web.Response:
        kind = fault.kind
        if kind == "timeout":
            await self._hold()
            return _json({"error": "upstream request timeout"}, 504)
        if kind == "reset":
            _reset(request)
            raise asyncio.CancelledError
        if kind == "malformed":
            return _html(502, 200)
        if kind == "errors":
            return _json({"errors": [{"message": fault.message}], "data": None})
        if kind == "retired":
            if fault.status == 200:
                return _json({"errors": [{"message": fault.message}], "data": None})
            return problem(fault.status, fault.message)
        code = int(kind)
        if code == 502:
            return _html(502, 502)
        if code == 503:
            return web.Response(text="upstream connect error or disconnect/reset before headers",
                                status=503, content_type="text/plain")
        if code == 404:
            return _json(NOT_FOUND, 404)
        headers = {"Retry-After": str(fault.retry_after)} if code == 429 else {}
        message = {401: "Unauthorized", 403: "Forbidden", 429: "Too Many Requests",
                   500: "Internal Server Error"}[code]
        if graphql:
            return _json({"errors": [{"message": message}]}, code, **headers)
        return _json({"error": message}, code, **headers)

    # -- GraphQL -----------------------------------------------------------------------

    async def _graphql(self, request: web.Request) -> web.StreamResponse:
        try:
            payload = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            payload = None
        if not isinstance(payload, dict):
            payload = {}
        doc, ops, invalid = gql.parse_request(payload.get("query"))
        for op in ops or ("invalid",):
            self.request_counts[("graphql", op)] += 1
        m = self.moment()
        fault = self.world.state(m).graphql
        if fault.kind == "retired":  # gone for everyone, whatever the key
            return await self._fault(request, fault, graphql=True)
        if not self._authorized(request, query_ok=True):
            return _json({"errors": [{"message": "Unauthorized"}]}, 401)
        if not fault.ok:
            return await self._fault(request, fault, graphql=True)
        if invalid is not None or doc is None:
            out = invalid or gql.Outcome(400, {"errors": [{"message": "bad request"}]}, ())
            return _json(out.body, out.status)
        ctx = gql.Context(self.world, m)
        out = gql.run(doc, payload.get("variables"), payload.get("operationName"), ctx)
        return _json(out.body, out.status)

    # -- the data plane ------------------------------------------------------------------

    def _data_plane(self, op: str) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            endpoint_id = request.match_info["endpoint_id"]
            self.request_counts[(endpoint_id, op)] += 1
            key = (endpoint_id, _RATE_GROUP.get(op, op))
            self._arrived(key)
            try:
                return await answer(request, endpoint_id)
            finally:
                self._inflight[key] -= 1

        async def answer(request: web.Request, endpoint_id: str) -> web.StreamResponse:
            if not self._authorized(request, query_ok=False):
                return _json(UNAUTHORIZED, 401)
            m = self.moment()
            ep = self.world.state(m).listed(endpoint_id)
            if ep is None or op == "unknown":
                return _json(NOT_FOUND, 404)
            if not ep.rest.ok:
                return await self._fault(request, ep.rest, graphql=False)
            try:
                return await self._operate(op, request, endpoint_id, m)
            except JobMissing:
                return _json(NO_SUCH_JOB, 404)

        return handle

    def _arrived(self, key: tuple[str, str]) -> None:
        """Count one request in its sliding window and as in flight; keep the peaks."""
        now = time.monotonic()
        arrivals = self._arrivals.get(key)
        if arrivals is None:
            arrivals = self._arrivals[key] = deque()
        while arrivals and arrivals[0] <= now - RATE_WINDOW_S:
            arrivals.popleft()
        arrivals.append(now)
        self.rate_peaks[key] = max(self.rate_peaks[key], len(arrivals))
        self._inflight[key] += 1
        self.concurrency_peaks[key] = max(self.concurrency_peaks[key], self._inflight[key])

    async def _operate(
        self, op: str, request: web.Request, endpoint_id: str, m: Moment
    ) -> web.StreamResponse:
        world, job_id = self.world, request.match_info.get("job_id", "")
        if op == "health":
            return _json(world.health(endpoint_id, m))
        if op == "requests":
            return _json({"requests": world.jobs(endpoint_id, m)})
        if op == "status":
            return _json(world.job(endpoint_id, job_id, m))
        if op == "stream":
            return _json({"status": world.job(endpoint_id, job_id, m)["status"], "stream": []})
        if op == "status-sync":
            world.job(endpoint_id, job_id, m)
            return _json(await self._wait_for(endpoint_id, job_id, request))
        if op == "cancel":
            return _json(world.cancel(endpoint_id, job_id, m))
        if op == "retry":
            out = world.retry(endpoint_id, job_id, m)
            if out is None:
                return _json({"error": "only FAILED or TIMED_OUT jobs can be retried"}, 400)
            return _json(out)
        if op == "purge-queue":
            return _json({"removed": world.purge(endpoint_id, m), "status": "completed"})
        # run / runsync
        body = await _read_json(request)
        if not isinstance(body, dict) or "input" not in body:
            detail = "bad request: body: the request needs an `input` object"
            return _json({"status": 400, "title": "Bad Request", "detail": detail}, 400)
        new_id = world.submit(endpoint_id, body["input"], m, sync=op == "runsync")
        if op == "run":
            return _json({"id": new_id, "status": "IN_QUEUE"})
        return _json(await self._wait_for(endpoint_id, new_id, request))

    async def _wait_for(self, endpoint_id: str, job_id: str, request: web.Request) -> Any:
        """The job once finished, or as it stands when `?wait=` ms run out (realtime only)."""
        try:
            wait_ms = int(request.query.get("wait", DEFAULT_WAIT_MS))
        except ValueError:
            wait_ms = DEFAULT_WAIT_MS
        deadline = time.monotonic() + min(max(wait_ms, 0), MAX_WAIT_MS) / 1000
        assert self._stopping is not None
        while True:
            job = self.world.job(endpoint_id, job_id, self.moment())
            done = job["status"] in TERMINAL
            if done or not self.realtime or time.monotonic() >= deadline or self._stopping.is_set():
                return job
            await asyncio.sleep(0.02)


async def _read_json(request: web.Request) -> Any:
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


class BackgroundSimulator:
    """Runs a SimulatorServer on its own event loop in a thread, for synchronous callers."""

    def __init__(self, server: SimulatorServer) -> None:
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> str:
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> BackgroundSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
