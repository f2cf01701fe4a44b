"""Async RunPod client: one keep-alive httpx pool, bounded concurrency, classified failures.

No call raises on a network error or a body: every outcome is `Ok` or a `Failure`. The API
key travels only in the Authorization header and is scrubbed from every message.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar
from urllib.parse import quote

import httpx
import structlog

from monitor.runpod import parse
from monitor.runpod.models import Failure, Myself, Ok, Result
from monitor.runpod.queries import MYSELF
from rules.model import Health, Job

T = TypeVar("T")
log = structlog.get_logger(__name__)

_MISSING_JOB = "request does not exist"


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
    # loading the CA bundle costs ~0.1 s; one context serves every client in the process
    return httpx.create_ssl_context()


class RunPodClient:
    """The daemon's only door to RunPod: GraphQL `myself` and the REST data plane."""

    def __init__(
        self,
        *,
        api_key: str,
        graphql_url: str = "https://api.runpod.io/graphql",
        rest_url: str = "https://api.runpod.ai/v2",
        timeout_s: float = 10.0,
        max_concurrency: int = 16,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        key = api_key.strip()
        if not key.isprintable():
            # httpx would echo an invalid header value, key included, in its exception
            raise ValueError("api_key contains characters not allowed in an HTTP header")
        if max_concurrency < 1 or timeout_s <= 0:
            raise ValueError("max_concurrency must be >= 1 and timeout_s > 0")
        self._key = key
        self._graphql_url = graphql_url
        self._rest_url = rest_url.rstrip("/")
        self._timeout_s = timeout_s
        self._sem = asyncio.Semaphore(max_concurrency)
        headers = {"Accept": "application/json", "User-Agent": "runpod-monitor"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._http = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(
                max_connections=max_concurrency, max_keepalive_connections=max_concurrency
            ),
            follow_redirects=False,
            verify=_ssl_context(),
            transport=transport,
        )

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
        await self._http.aclose()

    # -- the calls ------------------------------------------------------------------------

    async def myself(self) -> Result[Myself]:
        """One GraphQL request: the account, its endpoints, volumes and pods."""
        out = await self._call("POST", self._graphql_url, "myself", None, {"query": MYSELF})
        if isinstance(out, Failure):
            return out
        body, status, elapsed = out
        parsed = parse.parse_myself(body)
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

    # -- plumbing -------------------------------------------------------------------------

    async def _rest(
        self, endpoint_id: str, path: str, probe: str, parser: Callable[[object], T | None]
    ) -> Result[T]:
        url = f"{self._rest_url}/{quote(endpoint_id, safe='')}/{path}"
        out = await self._call("GET", url, probe, endpoint_id, None)
        if isinstance(out, Failure):
            return out
        body, status, elapsed = out
        value = parser(body)
        if value is not None:
            return Ok(value, status, elapsed)
        if parse.is_not_found(body):
            return self._fail(probe, endpoint_id, "http_404", status, "Not Found", elapsed)
        return self._fail(probe, endpoint_id, "malformed", status, f"unexpected {probe} shape",
                          elapsed)

    async def _call(
        self, method: str, url: str, probe: str, endpoint_id: str | None, payload: object
    ) -> tuple[object, int, float] | Failure:
        """Send one request; the decoded 2xx JSON body, or the classified failure."""
        async with self._sem:
            start = time.monotonic()
            try:
                # httpx's timeout is per phase; this bounds the whole exchange
                async with asyncio.timeout(self._timeout_s):
                    resp = await self._http.request(method, url, json=payload)
            except (httpx.TimeoutException, TimeoutError):
                return self._fail(probe, endpoint_id, "timeout", 0,
                                  f"no answer within {self._timeout_s:g} s", _since(start))
            except httpx.DecodingError as exc:
                return self._fail(probe, endpoint_id, "malformed", 0, _describe(exc),
                                  _since(start))
            except Exception as exc:  # any other transport error: a call never raises
                return self._fail(probe, endpoint_id, "connect", 0, _describe(exc), _since(start))
            elapsed = _since(start)
        body = parse.decode_json(resp.content)
        status = resp.status_code
        if probe == "status" and (status == 404 or parse.is_missing_job(body)):
            return self._fail(probe, endpoint_id, "http_404", status, _MISSING_JOB, elapsed)
        if not 200 <= status < 300:
            retry = parse.parse_retry_after(resp.headers.get("Retry-After"), time.time())
            message = parse.error_message(body) or f"HTTP {status} {resp.reason_phrase}".strip()
            return self._fail(probe, endpoint_id, classify_status(status), status, message,
                              elapsed, retry)
        if body is parse.NOT_JSON:
            return self._fail(probe, endpoint_id, "malformed", status, "body is not JSON",
                              elapsed)
        return body, status, elapsed

    def _fail(
        self,
        probe: str,
        endpoint_id: str | None,
        kind: str,
        status: int,
        message: str,
        elapsed_s: float,
        retry_after_s: float | None = None,
    ) -> Failure:
        """Build, scrub and log a Failure."""
        message = self._scrub(message)
        level = log.debug if kind == "http_404" else log.warning
        level("runpod_call_failed", probe=probe, endpoint_id=endpoint_id, kind=kind,
              status=status, message=message, retry_after_s=retry_after_s,
              elapsed_s=round(elapsed_s, 3))
        return Failure(kind, status, retry_after_s, message, elapsed_s)

    def _scrub(self, text: str) -> str:
        # a server or an exception may echo the key back; it never leaves this object
        return text.replace(self._key, "***") if self._key else text


def _since(start: float) -> float:
    return time.monotonic() - start


def _describe(exc: BaseException) -> str:
    detail = str(exc)
    text = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return text[: parse.MESSAGE_LIMIT]
