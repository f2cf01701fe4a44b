"""The REST v2 control plane's calls (`https://api.runpod.io/v2`, Bearer key), mixed into
`RunPodClient`: they share its keep-alive pool, semaphore, body caps, scrubbing and
`Ok`/`Failure` results, and each result carries the answer's `RateLimit`,
`RateLimit-Policy` and `x-request-id` (`RateHeaders`) for `monitor.pipeline.budget`.

Errors are `application/problem+json`; a failure's message is its `detail` (else `title`)
plus the first of `errors[]`, its kind `classify_status`'s, and a 429's `Retry-After` is
kept as on the data plane. What the spec leaves UNCONFIRMED (the balance and limits paths,
the pagination's names) comes from the config (`runpod.v2_paths`, `runpod.v2_pagination`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import structlog

from model.observation import (
    EndpointConfig,
    GpuStock,
    LogLine,
    NetworkVolume,
    Pod,
    Releases,
    WorkerLogs,
    Workers,
)
from monitor.runpod import parse, parse_v2
from monitor.runpod.models import (
    AccountLimits,
    Answer,
    Balance,
    Failure,
    Ok,
    RateHeaders,
    Result,
    ServerlessSpend,
)

T = TypeVar("T")
log = structlog.get_logger(__name__)
EVENT_STREAM = "text/event-stream"


@dataclass(frozen=True, slots=True)
class V2Paths:
    """Paths under `v2_url` of the routes whose request lines no stored source showed."""

    balance: str = "/billing/balance"
    account_limits: str = "/account/limits"
    account: str = "/account"


@dataclass(frozen=True, slots=True)
class V2Pagination:
    """How the paged lists page (names UNCONFIRMED; the defaults are the simulator's):
    `limit_param`=`page_size` per request, `cursor_param` from the answer's `next_field`
    until it is null, at most `max_pages` requests per listing."""

    limit_param: str = "limit"
    cursor_param: str = "cursor"
    next_field: str = "nextCursor"
    page_size: int = 100
    max_pages: int = 50


@dataclass(frozen=True, slots=True)
class LogBounds:
    """A worker-log stream stays open: read at most this many lines, bytes and seconds."""

    max_lines: int = 200
    max_bytes: int = 32768
    max_seconds: float = 3.0


DEFAULT_V2_PATHS = V2Paths()
DEFAULT_PAGINATION = V2Pagination()
DEFAULT_LOG_BOUNDS = LogBounds()


@dataclass
class _LogReader:
    """Feeds a worker-log stream through `SseDecoder` within `LogBounds`."""

    bounds: LogBounds
    decoder: parse_v2.SseDecoder = field(default_factory=parse_v2.SseDecoder)
    lines: list[LogLine] = field(default_factory=list)
    read: int = 0
    events: int = 0
    malformed: int = 0
    cut: bool = False  # the line or byte bound stopped the read

    def feed(self, chunk: bytes) -> bool:
        """Take one chunk; True to stop reading."""
        room = self.bounds.max_bytes - self.read
        if len(chunk) > room:
            chunk, self.cut = chunk[:room], True
        self.read += len(chunk)
        for event in self.decoder.feed(chunk):
            self.events += 1
            line = parse_v2.parse_log_event(event.data)
            if line is None:
                self.malformed += 1
                continue
            self.lines.append(line)
            if len(self.lines) >= self.bounds.max_lines:
                self.cut = True
                return True
        return self.cut


class RestV2Calls:
    """The REST v2 methods of `RunPodClient` (which provides the transport below)."""

    _v2_url: str
    _v2_paths: V2Paths
    _v2_pages: V2Pagination
    _log_bounds: LogBounds

    # -- provided by RunPodClient -----------------------------------------------------------

    async def _exchange(
        self, method: str, url: str, probe: str, endpoint_id: str | None, payload: object
    ) -> Answer | Failure:
        raise NotImplementedError

    async def _exchange_stream(
        self, url: str, probe: str, endpoint_id: str | None, feed: Callable[[bytes], bool],
        max_s: float,
    ) -> tuple[Answer, bool] | Failure:
        raise NotImplementedError

    def _interpret(
        self, answer: Answer, body: object, probe: str, endpoint_id: str | None
    ) -> Failure | None:
        raise NotImplementedError

    def _fail(
        self, probe: str, endpoint_id: str | None, kind: str, status: int, message: str,
        elapsed_s: float, retry_after_s: float | None = None, *,
        rate: RateHeaders | None = None,
    ) -> Failure:
        raise NotImplementedError

    # -- reads ------------------------------------------------------------------------------

    async def list_endpoints(self) -> Result[tuple[EndpointConfig, ...]]:
        """`GET /serverless`, every page: the account's endpoints. A failed page, or more
        pages than `max_pages`, fails the whole listing (a partial list is not a list)."""
        p = self._v2_pages
        return await self._pages(
            "/serverless", "list-endpoints",
            lambda body: parse_v2.parse_endpoints_page(body, "endpoints", p.next_field))

    async def get_endpoint(self, endpoint_id: str) -> Result[EndpointConfig]:
        """`GET /serverless/{id}`: one endpoint's configuration."""
        return await self._v2("GET", f"/serverless/{_q(endpoint_id)}", "get-endpoint",
                              endpoint_id, parse_v2.parse_endpoint_v2)

    async def endpoint_workers(self, endpoint_id: str) -> Result[Workers]:
        """`GET /serverless/{id}/workers`: the active workers, their status and release."""
        return await self._v2("GET", f"/serverless/{_q(endpoint_id)}/workers", "workers",
                              endpoint_id, parse_v2.parse_workers)

    async def endpoint_releases(self, endpoint_id: str) -> Result[Releases]:
        """`GET /serverless/{id}/releases`: release history, newest first, and rollout."""
        return await self._v2("GET", f"/serverless/{_q(endpoint_id)}/releases", "releases",
                              endpoint_id, parse_v2.parse_releases)

    async def worker_logs(
        self, endpoint_id: str, worker_id: str, *, source: str | None = "system",
        tail: int | None = None,
    ) -> Result[WorkerLogs]:
        """`GET /serverless/{id}/workers/{wid}/logs?tail=&source=` (server-sent events).

        The stream stays open: it is read for at most `max_lines` lines, `max_bytes` bytes
        and `max_seconds` seconds from its start (`runpod.logs`), then closed. `truncated`
        when the line or byte bound stopped it, or the time ran out inside an event.
        `tail` defaults to `max_lines`; `source` None asks for both sources."""
        bounds = self._log_bounds
        params: dict[str, Any] = {"tail": bounds.max_lines if tail is None else tail}
        if source is not None:
            params["source"] = source
        path = f"/serverless/{_q(endpoint_id)}/workers/{_q(worker_id)}/logs"
        reader = _LogReader(bounds)
        out = await self._exchange_stream(self._url(path, params), "logs", endpoint_id,
                                          reader.feed, bounds.max_seconds)
        if isinstance(out, Failure):
            return out
        answer, timed_out = out
        status, elapsed, rate = answer.status, answer.elapsed_s, answer.rate
        if not 200 <= status < 300:
            failure = self._interpret(answer, parse.decode_json(answer.content), "logs",
                                      endpoint_id)
            assert failure is not None  # a non-2xx answer is always a failure
            return failure
        if not answer.content_type.lower().startswith(EVENT_STREAM):
            return self._fail("logs", endpoint_id, "malformed", status,
                              f"worker logs are not {EVENT_STREAM}", elapsed, rate=rate)
        if reader.malformed:
            log.warning("runpod_log_events_malformed", endpoint_id=endpoint_id,
                        malformed=reader.malformed, events=reader.events)
            if not reader.lines:
                return self._fail("logs", endpoint_id, "malformed", status,
                                  f"no usable event among {reader.events}", elapsed, rate=rate)
        truncated = reader.cut or (timed_out and reader.decoder.pending)
        return Ok(WorkerLogs(worker_id, tuple(reader.lines), truncated), status, elapsed, rate)

    async def balance(self) -> Result[Balance]:
        """The balance route (`runpod.v2_paths.balance`): USD and PREPAID | POSTPAID."""
        return await self._v2("GET", self._v2_paths.balance, "balance", None,
                              parse_v2.parse_balance)

    async def account_limits(self) -> Result[AccountLimits]:
        """The account-limits route (`runpod.v2_paths.account_limits`): the spend cap
        (`spendRate.limit`, None when absent) and the worker quota."""
        return await self._v2("GET", self._v2_paths.account_limits, "account-limits", None,
                              parse_v2.parse_account_limits)

    async def account_id(self) -> Result[str]:
        """The account route (`runpod.v2_paths.account`): the account's id."""
        return await self._v2("GET", self._v2_paths.account, "account", None,
                              parse_v2.parse_account)

    async def serverless_spend(self) -> Result[ServerlessSpend]:
        """`GET /billing/serverless?bucketSize=hour&lastN=2`: USD/h per endpoint and in all,
        from the last complete hour (never the in-progress one)."""
        return await self._v2(
            "GET", "/billing/serverless", "billing-serverless", None,
            lambda body: parse_v2.parse_serverless_billing(body, time.time()),
            {"bucketSize": "hour", "lastN": 2})

    async def network_volumes(self) -> Result[tuple[NetworkVolume, ...]]:
        """`GET /network-volumes`: the account's network volumes."""
        return await self._v2("GET", "/network-volumes", "network-volumes", None,
                              parse_v2.parse_network_volumes)

    async def pods(self) -> Result[tuple[Pod, ...]]:
        """`GET /pods`, every page: the account's pods (status, USD/h)."""
        p = self._v2_pages
        return await self._pages(
            "/pods", "pods", lambda body: parse_v2.parse_pods_page(body, "pods", p.next_field))

    async def gpu_stock(self) -> Result[tuple[GpuStock, ...]]:
        """`GET /catalog/gpus?include=AVAILABILITY&product=SERVERLESS`: live stock."""
        return await self._v2("GET", "/catalog/gpus", "catalog-gpus", None,
                              parse_v2.parse_gpus,
                              {"include": "AVAILABILITY", "product": "SERVERLESS"})

    # -- writes -----------------------------------------------------------------------------

    async def patch_endpoint(
        self, endpoint_id: str, body: Mapping[str, object]
    ) -> Result[EndpointConfig]:
        """`PATCH /serverless/{id}` with `body` (only its fields change; `env` replaces the
        whole map): the endpoint as RunPod now reports it. Not proof: read it back."""
        return await self._v2("PATCH", f"/serverless/{_q(endpoint_id)}", "patch-endpoint",
                              endpoint_id, parse_v2.parse_endpoint_v2, payload=dict(body))

    # -- plumbing ---------------------------------------------------------------------------

    def _url(self, path: str, params: Mapping[str, Any] | None = None) -> str:
        url = f"{self._v2_url}{path}"
        return f"{url}?{urlencode(params, quote_via=quote)}" if params else url

    async def _v2(
        self, method: str, path: str, probe: str, endpoint_id: str | None,
        parser: Callable[[object], T | None], params: Mapping[str, Any] | None = None,
        *, payload: object = None,
    ) -> Result[T]:
        answer = await self._exchange(method, self._url(path, params), probe, endpoint_id,
                                      payload)
        if isinstance(answer, Failure):
            return answer
        body = parse.decode_json(answer.content)
        failure = self._interpret(answer, body, probe, endpoint_id)
        if failure is not None:
            return failure
        value = parser(body)
        if value is None:
            return self._fail(probe, endpoint_id, "malformed", answer.status,
                              f"unexpected {probe} shape", answer.elapsed_s, rate=answer.rate)
        return Ok(value, answer.status, answer.elapsed_s, answer.rate)

    async def _pages(
        self, path: str, probe: str, parser: Callable[[object], parse_v2.Page | None]
    ) -> Result[tuple[Any, ...]]:
        p = self._v2_pages
        items: list[Any] = []
        cursor: str | None = None
        seen: set[str] = set()
        elapsed = 0.0
        rate: RateHeaders | None = None
        for _ in range(p.max_pages):
            params: dict[str, Any] = {p.limit_param: p.page_size}
            if cursor is not None:
                params[p.cursor_param] = cursor
            page = await self._v2("GET", path, probe, None, parser, params)
            if isinstance(page, Failure):
                return page
            elapsed += page.elapsed_s
            rate = page.rate
            items.extend(page.value.items)
            cursor = page.value.next_cursor
            if not page.value.cursor_named and len(page.value.items) >= p.page_size:
                # a full page and no cursor member: a server that pages under other names
                # would be read as a short list (endpoints "gone"): unknown, not a list
                return self._fail(
                    probe, None, "malformed", page.status,
                    f"a full page without {p.next_field!r}: check runpod.v2_pagination",
                    elapsed, rate=rate)
            if cursor is None:
                return Ok(tuple(items), page.status, elapsed, page.rate)
            if cursor in seen:
                return self._fail(probe, None, "malformed", page.status,
                                  f"{p.next_field} repeats a cursor", elapsed, rate=page.rate)
            seen.add(cursor)
        return self._fail(probe, None, "malformed", 200,
                          f"more than {p.max_pages} pages (runpod.v2_pagination.max_pages)",
                          elapsed, rate=rate)


def _q(part: str) -> str:
    return quote(part, safe="")
