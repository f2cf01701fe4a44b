"""Async RunPod client: one keep-alive pool, bounded concurrency, classified failures.

Requests go straight to aiohttp's keep-alive pool (`_AiohttpSender`), the cheapest per
request we measured, through the proxy the environment names (HTTP(S)_PROXY, ALL_PROXY,
NO_PROXY, read once when the client is made). The body is read as a stream through
`monitor.bodies`: an answer over `body_limits` (compressed or decoded) is a `malformed`
failure naming the cap, and costs no more memory than the cap.

No call raises on a network error or a body: every outcome is `Ok` or a `Failure`. The API
key travels only in the Authorization header and is scrubbed from every message.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import os
import ssl
import time
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast
from urllib.parse import quote

import aiohttp
import certifi
import structlog
import yarl  # aiohttp's URL type (an aiohttp dependency)

from monitor.bodies import (
    RUNPOD_BODY_LIMITS,
    BodyError,
    BodyLimits,
    capped_session,
    iter_capped,
)
from monitor.runpod import parse, parse_v2
from monitor.runpod.models import Answer, Failure, Myself, Ok, RateHeaders, Result
from monitor.runpod.queries import MYSELF, SPEND
from monitor.runpod.rest_v2 import (
    DEFAULT_LOG_BOUNDS,
    DEFAULT_PAGINATION,
    DEFAULT_V2_PATHS,
    LogBounds,
    RestV2Calls,
    V2Pagination,
    V2Paths,
)

if TYPE_CHECKING:
    from monitor.config import Settings
from model.observation import RETIRED, Health, Job

T = TypeVar("T")
log = structlog.get_logger(__name__)

_MISSING_JOB = "request does not exist"


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `calls` per `window_s` seconds and `concurrent` at once (per endpoint)."""

    calls: int
    window_s: float
    concurrent: int


# RunPod's published per-endpoint limits for the data-plane calls the monitor makes
# (spec/runpod-api.md, Rate limits; the base values: they only grow with running workers).
RUNPOD_LIMITS: Mapping[str, RateLimit] = {
    "requests": RateLimit(10, 10.0, 2),
    "status": RateLimit(2000, 10.0, 400),
    "cancel": RateLimit(100, 10.0, 20),
    "purge-queue": RateLimit(2, 10.0, 1),
}
_LIMIT_MARGIN_S = 0.05


class _Window:
    """A sliding-window limiter for one (endpoint, operation).

    A call counts from when it is sent until `window_s` after its answer came back, so the
    server, which counts arrivals, never sees more than `calls` in any window.
    """

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self.done: deque[float] = deque()  # answer times, monotonic
        self.inflight = 0
        self._freed = asyncio.Event()

    def _prune(self, now: float) -> None:
        while self.done and self.done[0] <= now - self.limit.window_s - _LIMIT_MARGIN_S:
            self.done.popleft()

    async def acquire(self, budget_s: float) -> float | None:
        """Take a slot within `budget_s` seconds: None, or the wait that would be needed."""
        deadline = time.monotonic() + budget_s
        while True:
            now = time.monotonic()
            self._prune(now)
            full = len(self.done) + self.inflight >= self.limit.calls
            if self.inflight < self.limit.concurrent and not full:
                self.inflight += 1
                return None
            if full and self.done:
                ready_at = self.done[0] + self.limit.window_s + _LIMIT_MARGIN_S
            else:
                ready_at = deadline  # only calls in flight: until one of them ends
            if now >= deadline or ready_at > deadline:
                return max(ready_at - now, 0.0)
            self._freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._freed.wait(), ready_at - now)

    def release(self) -> None:
        self.inflight -= 1
        self.done.append(time.monotonic())
        self._freed.set()


class _Deadlines:
    """`timeout_s` for each call, all on one timer. asyncio.timeout per call pushes a timer
    onto the loop's heap (whose order is kept in Python, and cancelled ones stay there):
    ~15 us of CPU per request at 1000 concurrent /health calls, against ~1 us here. The
    calls all wait the same time, so their deadlines come in the order they start: the
    timer waits for the oldest one in flight. An expired call's task is cancelled and its
    `expired` is True; as asyncio.timeout, it is a timeout only if nobody else cancelled the
    task meanwhile."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._order: deque[tuple[float, int]] = deque()  # (deadline, call), oldest first
        self._live: dict[int, asyncio.Task[Any]] = {}
        self._expired: set[int] = set()
        self._handle: asyncio.TimerHandle | None = None
        self._count = 0

    def start(self, task: asyncio.Task[Any]) -> int:
        """A call begins in `task` (the current one): its key for `end` / `expired`."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (asyncio.run again): start afresh
            self._loop, self._handle = loop, None
            self._order.clear()
            self._live.clear()
            self._expired.clear()
        self._count += 1
        key = self._count
        deadline = loop.time() + self.timeout_s
        self._order.append((deadline, key))
        self._live[key] = task
        if self._handle is None:
            self._handle = loop.call_at(deadline, self._fire)
        return key

    def end(self, key: int) -> None:
        self._live.pop(key, None)

    def expired(self, key: int) -> bool:
        """Whether the call `key` was cancelled for its deadline (asked once, in its
        CancelledError handler)."""
        if key not in self._expired:
            return False
        self._expired.discard(key)
        return True

    def _fire(self) -> None:
        self._handle = None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        order, live = self._order, self._live
        while order:
            deadline, key = order[0]
            task = live.get(key)
            if task is not None and deadline > now:
                self._handle = loop.call_at(deadline, self._fire)
                return
            order.popleft()
            if task is not None:
                del live[key]
                self._expired.add(key)
                task.cancel()


def classify_status(status: int) -> str:
    """The failure kind of a non-2xx HTTP status."""
    if status in (401, 403, 404, 429):
        return f"http_{status}"
    if 400 <= status < 500:
        return "http_4xx"
    if status >= 500:
        return "http_5xx"
    return "malformed"  # 1xx/3xx: we follow no redirects, so nothing usable came back


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # loading the CA bundle costs ~0.1 s; one context serves every client in the process.
    # The bundle httpx used before (certifi), or the one SSL_CERT_FILE / SSL_CERT_DIR names.
    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    return ssl.create_default_context(cafile=certifi.where())


# the data-plane reads whose last 2xx answer is kept, to skip decoding and parsing the same
# bytes again; answers up to this size (a /health is ~200 bytes)
_REUSED = frozenset({"health", "requests"})
_REUSE_MAX_BYTES = 16 * 1024


@dataclass(slots=True)
class _Last:
    """One URL's last 2xx answer: its bytes, their JSON, and the value parsed from it (None
    until `_rest` parsed it, or when the parser would not take it)."""

    content: bytes
    body: object
    value: object = None


# parsed URLs kept (2 per endpoint at most on the data plane, the rest /status and v2 reads)
_TARGETS_MAX = 20_000
# httpx's default keep-alive expiry: an idle connection is closed after this many seconds
_KEEPALIVE_S = 5.0
_PROXY_SCHEMES = ("http", "https")

Proxy = tuple[yarl.URL, Mapping[str, str]]  # the proxy, the headers it is sent (its auth)


class EnvProxies:
    """The proxies the environment names, as httpx read them: HTTP_PROXY / HTTPS_PROXY by
    the target's scheme, else ALL_PROXY; NO_PROXY's hosts, domains (and their subdomains),
    host:port or `*` go direct. Read once; each origin's answer is kept.

    Not aiohttp's `trust_env`: it re-reads the environment and ~/.netrc in a thread on
    every request (0.3-0.45 ms of CPU each, benchmarks/README.md) and ignores ALL_PROXY and
    https:// proxies."""

    def __init__(self, proxies: Mapping[str, str] | None = None) -> None:
        self._env = dict(urllib.request.getproxies() if proxies is None else proxies)
        self._by_origin: dict[str, Proxy | None] = {}
        for key in ("http", "https", "all"):  # a bad setting fails when the client is made
            if self._env.get(key):
                _proxy_url(self._env[key])

    def __bool__(self) -> bool:
        return any(self._env.get(k) for k in ("http", "https", "all"))

    def for_url(self, url: yarl.URL) -> Proxy | None:
        """The proxy (URL without credentials, its headers) for `url`, None: direct."""
        origin = f"{url.scheme}://{url.raw_authority}"
        if origin not in self._by_origin:
            self._by_origin[origin] = self._lookup(url)
        return self._by_origin[origin]

    def _lookup(self, url: yarl.URL) -> Proxy | None:
        value = self._env.get(url.scheme) or self._env.get("all")
        if not value or not url.host:
            return None
        if _bypass(url.host, url.port, self._env.get("no", "")):
            return None
        return _proxy_url(value)


def _bypass(host: str, port: int | None, no_proxy: str) -> bool:
    """Whether NO_PROXY sends `host` direct: `*`, the host itself, a domain it is in
    (`example.com`, `.example.com`, `*.example.com`), or `host:port`."""
    host = host.strip("[]").lower()
    for entry in no_proxy.lower().split(","):
        entry = entry.strip()
        if entry == "*":
            return True
        name, _, want = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if want and (not want.isdigit() or int(want) != port):
            continue
        name = name.strip("[]").removeprefix("*").lstrip(".")
        if name and (host == name or host.endswith(f".{name}")):
            return True
    return False


def _proxy_url(value: str) -> Proxy:
    """A proxy setting as aiohttp takes it; the credentials apart, so that no message about
    the proxy carries them. ValueError for a scheme aiohttp cannot speak (socks)."""
    url = yarl.URL(value if "://" in value else f"http://{value}")
    if url.scheme not in _PROXY_SCHEMES or not url.host:
        # the setting itself may hold a password: name only its scheme
        raise ValueError(f"proxy from the environment: scheme {url.scheme or '(none)'!r} "
                         "not supported (http and https are)")
    headers = {}
    if url.user is not None or url.password is not None:
        pair = f"{url.user or ''}:{url.password or ''}".encode()
        headers["Proxy-Authorization"] = f"Basic {base64.b64encode(pair).decode()}"
    return url.with_user(None), headers


class _SendError(Exception):
    """A request that brought no usable answer: `kind` is timeout, connect or malformed."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class _Sender(Protocol):
    """Sends one request and reads the whole answer, within its body limits; raises
    `_SendError`, nothing else."""

    async def send(self, method: str, url: str, payload: object) -> Answer: ...

    async def stream(
        self, url: str, feed: Callable[[bytes], bool], max_s: float
    ) -> tuple[Answer, bool]:
        """GET `url`; a 2xx body goes to `feed` piece by piece until it returns True, the
        body ends, or `max_s` seconds pass (then the second item is True); the connection
        is closed, not reused. Any other answer is read whole, as `send` does."""
        ...

    async def aclose(self) -> None: ...


class _AiohttpSender:
    """aiohttp's keep-alive pool, called directly: the client's only HTTP stack.

    Measured at 1000 endpoints: httpx's own pool (httpcore) spends 1.5 to 4 ms of CPU per
    request here, httpx's request layer over aiohttp's pool ~0.5 ms, aiohttp alone ~0.25 ms
    (benchmarks/README.md). Pool size and keep-alive expiry as httpx's; no redirects.
    """

    def __init__(
        self, headers: Mapping[str, str], max_connections: int, limits: BodyLimits,
        proxies: EnvProxies,
    ) -> None:
        self._headers = {k: v for k, v in headers.items() if k != "Authorization"}
        # the key goes with each request, not as a session default: aiohttp copies a
        # session's default Authorization into Proxy-Authorization, in clear text even in
        # the CONNECT that opens an HTTPS tunnel
        self._auth = {k: v for k, v in headers.items() if k == "Authorization"}
        self._proxies = proxies
        self._max_connections = max_connections
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # each URL parsed once: the data plane asks the same 1-2 per endpoint every cycle
        self._targets: dict[str, tuple[yarl.URL, dict[str, Any]]] = {}

    def _open(self) -> aiohttp.ClientSession:
        # made on first use: a session belongs to the event loop it is created in
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._loop = loop
            self._session = capped_session(
                self._limits,
                connector=aiohttp.TCPConnector(
                    limit=self._max_connections,
                    limit_per_host=0,
                    ssl=_ssl_context(),
                    keepalive_timeout=_KEEPALIVE_S,
                ),
                headers=self._headers,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None),  # the caller bounds each call
            )
        return self._session

    def _options(self, url: yarl.URL) -> dict[str, Any]:
        proxy = self._proxies.for_url(url) if self._proxies else None
        if proxy is None:
            return {"headers": self._auth}
        if url.scheme == "https":  # the proxy's headers go in the CONNECT that opens a tunnel
            return {"headers": self._auth, "proxy": proxy[0], "proxy_headers": proxy[1]}
        # plain HTTP: aiohttp sends no proxy_headers, the request itself goes to the proxy
        return {"headers": {**self._auth, **proxy[1]}, "proxy": proxy[0]}

    def _target(self, url: str) -> tuple[yarl.URL, dict[str, Any]]:
        """`url` parsed (the client quoted each part itself) and its request options."""
        found = self._targets.get(url)
        if found is None:
            if len(self._targets) >= _TARGETS_MAX:
                self._targets.clear()  # job ids in /status URLs: bounded, not an LRU's upkeep
            target = yarl.URL(url, encoded=True)
            found = self._targets[url] = (target, self._options(target))
        return found

    async def send(self, method: str, url: str, payload: object) -> Answer:
        target, options = self._target(url)
        try:
            async with self._open().request(
                method, target, json=payload, allow_redirects=False, **options,
            ) as resp:
                content = await resp.read()  # capped: monitor.bodies.CappedResponse
                return _answer(resp.status, resp.reason or "", resp.headers, content)
        except TimeoutError as exc:  # aiohttp's own timeouts are TimeoutErrors too
            raise _SendError("timeout", _describe(exc)) from exc
        except BodyError as exc:  # over a cap, or a body its Content-Encoding cannot decode
            raise _SendError("malformed", str(exc)) from exc
        except (aiohttp.ClientError, OSError, ValueError) as exc:  # refused, reset, bad HTTP
            raise _SendError("connect", _describe(exc)) from exc

    async def stream(
        self, url: str, feed: Callable[[bytes], bool], max_s: float
    ) -> tuple[Answer, bool]:
        target = yarl.URL(url, encoded=True)
        try:
            async with self._open().get(
                target, allow_redirects=False, **self._options(target)
            ) as resp:
                if not 200 <= resp.status < 300:
                    content = await resp.read()
                    return _answer(resp.status, resp.reason or "", resp.headers, content), False
                chunks = iter_capped(
                    resp.content.iter_any(), limits=self._limits,
                    content_encoding=resp.headers.get("Content-Encoding"),
                    content_length=resp.headers.get("Content-Length"))
                try:
                    timed_out = await _pump(chunks, feed, max_s)
                finally:
                    resp.close()  # an open stream: the connection is not reusable
                return _answer(resp.status, resp.reason or "", resp.headers, b""), timed_out
        except TimeoutError as exc:
            raise _SendError("timeout", _describe(exc)) from exc
        except BodyError as exc:
            raise _SendError("malformed", str(exc)) from exc
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise _SendError("connect", _describe(exc)) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _answer(status: int, reason: str, headers: Mapping[str, str], content: bytes) -> Answer:
    return Answer(status, reason, headers.get("Retry-After"), content, RateHeaders.of(headers),
                  headers.get("Content-Type") or "")


async def _pump(chunks: AsyncIterator[bytes], feed: Callable[[bytes], bool],
                max_s: float) -> bool:
    """Feed `chunks` until `feed` says stop or they end (False), or `max_s` passes (True)."""
    timer = asyncio.timeout(max_s)
    try:
        async with timer:
            async for piece in chunks:
                if feed(piece):
                    return False
    except TimeoutError:
        if timer.expired():
            return True
        raise
    return False


def v2_url_of(graphql_url: str) -> str:
    """The REST v2 control plane beside a GraphQL URL: its origin + `/v2` (RunPod serves
    both on api.runpod.io; so does the simulator, on its own port)."""
    parts = urllib.parse.urlsplit(graphql_url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/v2", "", ""))


def client_for(settings: Settings, **overrides: Any) -> RunPodClient:
    """The client `settings.runpod` describes, with the key `require_api_key` gives."""
    from monitor.config import require_api_key  # config is the caller's edge, not ours

    runpod = settings.runpod
    paths, pages, logs = runpod.v2_paths, runpod.v2_pagination, runpod.logs
    options: dict[str, Any] = {
        "api_key": require_api_key(settings),
        "graphql_url": runpod.graphql_url,
        "rest_url": runpod.rest_url,
        "v2_url": runpod.v2_url,
        "timeout_s": runpod.timeout_s,
        "max_concurrency": runpod.max_concurrency,
        "body_limits": BodyLimits(runpod.max_answer_bytes, runpod.max_decoded_bytes, "runpod"),
        "v2_paths": V2Paths(paths.balance, paths.account_limits, paths.account),
        "v2_pagination": V2Pagination(pages.limit_param, pages.cursor_param, pages.next_field,
                                      pages.page_size, pages.max_pages),
        "log_bounds": LogBounds(logs.max_lines, logs.max_bytes, logs.max_seconds),
    }
    return RunPodClient(**{**options, **overrides})


class RunPodClient(RestV2Calls):
    """The daemon's only door to RunPod: GraphQL `myself`, the REST data plane, and the
    REST v2 control plane (`RestV2Calls`, monitor/runpod/rest_v2.py)."""

    def __init__(
        self,
        *,
        api_key: str,
        graphql_url: str = "https://api.runpod.io/graphql",
        rest_url: str = "https://api.runpod.ai/v2",
        v2_url: str | None = None,
        timeout_s: float = 10.0,
        max_concurrency: int = 16,
        limits: Mapping[str, RateLimit] | None = None,
        body_limits: BodyLimits = RUNPOD_BODY_LIMITS,
        v2_paths: V2Paths = DEFAULT_V2_PATHS,
        v2_pagination: V2Pagination = DEFAULT_PAGINATION,
        log_bounds: LogBounds = DEFAULT_LOG_BOUNDS,
    ) -> None:
        """`limits`: per-endpoint client-side rate limits by probe (`RUNPOD_LIMITS` for the
        daemon); a call that would wait longer than `timeout_s` for its slot fails at once
        as `http_429` (status 0) without being sent. None: no limiter (replay, whose cycles
        run faster than real time against the simulator). `body_limits`: what one answer
        may cost (bytes read, bytes decoded); over it, the call is `malformed`. `v2_paths`,
        `v2_pagination`, `log_bounds`: the REST v2 facts the spec leaves UNCONFIRMED and
        the worker-log bounds (config `runpod.v2_paths`, `v2_pagination`, `logs`)."""
        key = api_key.strip()
        if not key.isprintable():
            # an HTTP library may echo an invalid header value, key included, in its error
            raise ValueError("api_key contains characters not allowed in an HTTP header")
        if max_concurrency < 1 or timeout_s <= 0:
            raise ValueError("max_concurrency must be >= 1 and timeout_s > 0")
        self._key = key
        self._graphql_url = graphql_url
        self._rest_url = rest_url.rstrip("/")
        self._v2_url = (v2_url or v2_url_of(graphql_url)).rstrip("/")
        self._v2_paths = v2_paths
        self._v2_pages = v2_pagination
        self._log_bounds = log_bounds
        self._timeout_s = timeout_s
        self._sem = asyncio.Semaphore(max_concurrency)
        self._deadlines = _Deadlines(timeout_s)
        self._limits = dict(limits or {})
        self._windows: dict[tuple[str, str], _Window] = {}
        # per data-plane URL: its last 2xx answer (bytes, JSON, value)
        self._last: dict[str, _Last] = {}
        self._endpoint_urls: dict[str, str] = {}
        self._endpoint_items = parse.EndpointItems()
        headers = {"Accept": "application/json", "User-Agent": "runpod-monitor"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._sender: _Sender = _AiohttpSender(headers, max_concurrency, body_limits,
                                               EnvProxies())

    async def __aenter__(self) -> RunPodClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._sender.aclose()

    # -- the calls ------------------------------------------------------------------------

    async def spend(self) -> Result[Myself]:
        """GraphQL `myself` asked only for the balance, spend per hour and spend limit: what
        REST v2 lacks (`currentSpendPerHr`), for `runpod.control_plane: auto`."""
        return await self.myself(SPEND)

    async def myself(self, query: str = MYSELF) -> Result[Myself]:
        """One GraphQL request: the account, its endpoints, volumes and pods.

        A GraphQL that answers it is gone (404, 410, or an error message saying it was
        retired) is a `RETIRED` failure: a known state, not an API error."""
        out = await self._call("POST", self._graphql_url, "myself", None, {"query": query})
        if isinstance(out, Failure):
            return out
        body, status, elapsed = out
        parsed = parse.parse_myself(body, self._endpoint_items)
        if parsed is not None:
            return Ok(parsed, status, elapsed)
        errors = parse.graphql_errors(body)
        if errors:
            return self._fail("myself", None, "graphql_error", status, errors[0], elapsed)
        return self._fail("myself", None, "malformed", status, "unexpected myself shape", elapsed)

    async def health(self, endpoint_id: str) -> Result[Health]:
        """`GET /{id}/health`: worker and job counts."""
        return await self._rest(endpoint_id, "health", "health", parse.parse_health)

    async def requests(self, endpoint_id: str) -> Result[tuple[Job, ...]]:
        """`GET /{id}/requests`: the endpoint's current jobs."""
        return await self._rest(endpoint_id, "requests", "requests", parse.parse_jobs)

    async def status(self, endpoint_id: str, job_id: str) -> Result[Job]:
        """`GET /{id}/status/{job}`; a purged or unknown job is `http_404`."""
        path = f"status/{quote(job_id, safe='')}"
        return await self._rest(endpoint_id, path, "status", parse.parse_job)

    async def cancel_job(self, endpoint_id: str, job_id: str) -> Result[Job]:
        """`POST /{id}/cancel/{job}` (a write): the job as RunPod says it now stands (a
        finished job keeps its status); an unknown job is `http_404`."""
        path = f"cancel/{quote(job_id, safe='')}"
        return await self._rest(endpoint_id, path, "cancel", parse.parse_job, method="POST")

    async def purge_queue(self, endpoint_id: str) -> Result[int]:
        """`POST /{id}/purge-queue` (a write): how many queued jobs were removed (jobs in
        progress are not touched). RunPod allows 2 per 10 s per endpoint."""
        return await self._rest(endpoint_id, "purge-queue", "purge-queue",
                                parse_v2.parse_purge, method="POST")

    # -- plumbing -------------------------------------------------------------------------

    async def _rest(
        self, endpoint_id: str, path: str, probe: str, parser: Callable[[object], T | None],
        *, method: str = "GET",
    ) -> Result[T]:
        url = f"{self._endpoint_url(endpoint_id)}/{path}"
        limit = self._limits.get(probe)
        if limit is None:
            out = await self._call(method, url, probe, endpoint_id, None)
        else:
            window = self._windows.get((endpoint_id, probe))
            if window is None:
                window = self._windows[(endpoint_id, probe)] = _Window(limit)
            wait = await window.acquire(self._timeout_s)
            if wait is not None:
                return self._fail(
                    probe, endpoint_id, "http_429", 0,
                    f"not sent: RunPod allows {limit.calls} /{probe} per "
                    f"{limit.window_s:g} s per endpoint (next slot in {wait:.1f} s)", 0.0,
                )
            try:
                out = await self._call(method, url, probe, endpoint_id, None)
            finally:
                window.release()
        if isinstance(out, Failure):
            return out
        body, status, elapsed = out
        last = self._last.get(url)
        if last is not None and last.body is body and last.value is not None:
            return Ok(cast(T, last.value), status, elapsed)  # the same bytes as last time
        value = parser(body)
        if value is not None:
            if last is not None and last.body is body:
                last.value = value
            return Ok(value, status, elapsed)
        if parse.is_not_found(body):
            return self._fail(probe, endpoint_id, "http_404", status, "Not Found", elapsed)
        return self._fail(probe, endpoint_id, "malformed", status, f"unexpected {probe} shape",
                          elapsed)

    def _endpoint_url(self, endpoint_id: str) -> str:
        """The data plane's base URL of one endpoint (its id quoted once, not per call)."""
        url = self._endpoint_urls.get(endpoint_id)
        if url is None:
            if len(self._endpoint_urls) >= _TARGETS_MAX:
                self._endpoint_urls.clear()
            url = self._endpoint_urls[endpoint_id] = (
                f"{self._rest_url}/{quote(endpoint_id, safe='')}")
        return url

    async def _call(
        self, method: str, url: str, probe: str, endpoint_id: str | None, payload: object
    ) -> tuple[object, int, float] | Failure:
        """Send one request; the decoded 2xx JSON body, or the classified failure."""
        answer = await self._exchange(method, url, probe, endpoint_id, payload)
        if isinstance(answer, Failure):
            return answer
        if probe in _REUSED and 200 <= answer.status < 300:
            return self._reused(url, answer, probe, endpoint_id)
        body = parse.decode_json(answer.content)
        if probe == "myself" and parse_v2.is_graphql_retired(answer.status, body):
            status = answer.status
            message = parse.error_message(body) or f"HTTP {status} {answer.reason}".strip()
            return self._fail(probe, None, RETIRED, status, message, answer.elapsed_s)
        out = self._interpret(answer, body, probe, endpoint_id)
        if isinstance(out, Failure):
            return out
        return body, answer.status, answer.elapsed_s

    def _reused(
        self, url: str, answer: Answer, probe: str, endpoint_id: str | None
    ) -> tuple[object, int, float] | Failure:
        """A data-plane 2xx answer decoded, or, when its bytes are the last answer's, that
        answer's JSON (whose parsed value `_rest` then reuses): most endpoints of a large
        account answer /health the same every cycle."""
        content = answer.content
        last = self._last.get(url)
        if last is not None and last.content == content:
            return last.body, answer.status, answer.elapsed_s
        body = parse.decode_json(content)
        failure = self._interpret(answer, body, probe, endpoint_id)
        if failure is not None or len(content) > _REUSE_MAX_BYTES:
            self._last.pop(url, None)
        else:
            if len(self._last) >= _TARGETS_MAX:
                self._last.clear()
            self._last[url] = _Last(content, body)
        return failure or (body, answer.status, answer.elapsed_s)

    def _interpret(
        self, answer: Answer, body: object, probe: str, endpoint_id: str | None
    ) -> Failure | None:
        """The failure a non-2xx or non-JSON answer is, None for a usable one."""
        status, elapsed, rate = answer.status, answer.elapsed_s, answer.rate
        if probe in ("status", "cancel") and (status == 404 or parse.is_missing_job(body)):
            return self._fail(probe, endpoint_id, "http_404", status, _MISSING_JOB, elapsed,
                              rate=rate)
        if not 200 <= status < 300:
            retry = parse.parse_retry_after(answer.retry_after, time.time())
            message = (parse_v2.problem_message(body) or parse.error_message(body)
                       or f"HTTP {status} {answer.reason}".strip())
            return self._fail(probe, endpoint_id, classify_status(status), status, message,
                              elapsed, retry, rate=rate)
        if body is parse.NOT_JSON:
            return self._fail(probe, endpoint_id, "malformed", status, "body is not JSON",
                              elapsed, rate=rate)
        return None

    async def _exchange(
        self, method: str, url: str, probe: str, endpoint_id: str | None, payload: object
    ) -> Answer | Failure:
        """Send one request within the semaphore and `timeout_s`: the answer, whatever its
        status, or the failure of a request that brought none."""
        async with self._sem:
            start = time.monotonic()
            task = asyncio.current_task()
            assert task is not None
            cancelling = task.cancelling()
            call = self._deadlines.start(task)  # the whole exchange
            try:
                answer = await self._sender.send(method, url, payload)
            except asyncio.CancelledError:
                if self._deadlines.expired(call) and task.uncancel() <= cancelling:
                    return self._fail(probe, endpoint_id, "timeout", 0,
                                      f"no answer within {self._timeout_s:g} s", _since(start))
                raise
            except _SendError as exc:
                return self._fail(probe, endpoint_id, exc.kind, 0, str(exc), _since(start))
            finally:
                self._deadlines.end(call)
            return self._completed(answer, start)

    async def _exchange_stream(
        self, url: str, probe: str, endpoint_id: str | None, feed: Callable[[bytes], bool],
        max_s: float,
    ) -> tuple[Answer, bool] | Failure:
        """`_exchange` for a stream (`_Sender.stream`): `timeout_s` for the answer to
        start, then at most `max_s` of reading."""
        async with self._sem:
            start = time.monotonic()
            try:
                async with asyncio.timeout(self._timeout_s + max_s):
                    answer, timed_out = await self._sender.stream(url, feed, max_s)
            except TimeoutError:
                return self._fail(probe, endpoint_id, "timeout", 0,
                                  f"no answer within {self._timeout_s:g} s", _since(start))
            except _SendError as exc:
                return self._fail(probe, endpoint_id, exc.kind, 0, str(exc), _since(start))
            return self._completed(answer, start), timed_out

    def _fail(
        self,
        probe: str,
        endpoint_id: str | None,
        kind: str,
        status: int,
        message: str,
        elapsed_s: float,
        retry_after_s: float | None = None,
        *,
        rate: RateHeaders | None = None,
    ) -> Failure:
        """Build, scrub and log a Failure (with the answer's x-request-id, if any)."""
        message = self._scrub(message)
        extra = {"request_id": rate.request_id} if rate and rate.request_id else {}
        level = log.debug if kind == "http_404" else log.warning
        level("runpod_call_failed", probe=probe, endpoint_id=endpoint_id, kind=kind,
              status=status, message=message, retry_after_s=retry_after_s,
              elapsed_s=round(elapsed_s, 3), **extra)
        return Failure(kind, status, retry_after_s, message, elapsed_s, rate)

    def _scrub(self, text: str) -> str:
        # a server or an exception may echo the key back; it never leaves this object
        return text.replace(self._key, "***") if self._key else text

    def _completed(self, answer: Answer, start: float) -> Answer:
        """The sender's answer with its elapsed time and its quota headers scrubbed."""
        answer.elapsed_s = _since(start)
        answer.rate = self._scrub_rate(answer.rate)
        return answer

    def _scrub_rate(self, rate: RateHeaders | None) -> RateHeaders | None:
        if rate is None or not self._key:
            return rate
        parts = (rate.rate_limit, rate.rate_limit_policy, rate.request_id)
        if not any(p and self._key in p for p in parts):
            return rate
        return RateHeaders(*(self._scrub(p) if p else p for p in parts))


def _since(start: float) -> float:
    return time.monotonic() - start


def _describe(exc: BaseException) -> str:
    detail = str(exc)
    text = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return text[: parse.MESSAGE_LIMIT]
