"""The RunPod client over real loopback HTTP against a small aiohttp server with faults."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

import pytest
from aiohttp import web
from proxykit import LoopbackProxy
from structlog.testing import capture_logs

from model.observation import Health, Job
from monitor.runpod import Failure, Myself, Ok, RunPodClient
from monitor.runpod.client import EnvProxies, _bypass
from monitor.runpod.queries import MYSELF

KEY = "rpa_TESTSECRET0123456789abcdef"
TIMEOUT_S = 0.3

HEALTH = {"jobs": {"completed": 241, "failed": 16, "inProgress": 0, "inQueue": 0, "retried": 0},
          "workers": {"idle": 0, "initializing": 0, "ready": 0, "running": 0, "throttled": 5,
                      "unhealthy": 0}}
REQUESTS = {"requests": [{"id": "a", "status": "IN_PROGRESS", "delayTime": 1234, "workerId": "w"}]}
MYSELF_OK = {"data": {"myself": {
    "id": "u", "clientBalance": 12.5, "currentSpendPerHr": 0.047, "spendLimit": 180,
    "endpoints": [{"id": "ep1", "name": "sdxl", "gpuIds": "ADA_24", "workersMax": 3}],
    "networkVolumes": [], "pods": []}}}


@dataclass
class Server:
    """What the fake RunPod saw: requests, client ports, in-flight high-water mark."""

    base: str = ""
    seen: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    ports: set[int] = field(default_factory=set)
    in_flight: int = 0
    max_in_flight: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)


def _json(status: int, payload: object, **headers: str) -> web.Response:
    return web.Response(status=status, text=json.dumps(payload),
                        content_type="application/json", headers=headers)


async def _fault(srv: Server, request: web.Request, fault: str) -> web.StreamResponse | None:
    """The response for a named fault, None for a normal answer."""
    if fault == "401":
        return _json(401, {"status": 401, "title": "Unauthorized", "detail": "bad key"})
    if fault == "403":
        return _json(403, {"title": "Forbidden", "status": 403, "detail": "access denied"})
    if fault == "404":
        return _json(404, {"message": "Not Found"})
    if fault == "400":
        return _json(400, {"status": 400, "title": "Bad Request", "detail": "bad request: body"})
    if fault == "429":
        return _json(429, {"message": "slow down"}, **{"Retry-After": "3"})
    if fault == "500":
        return web.Response(status=500, text="Internal Server Error")
    if fault == "502":
        return web.Response(status=502, text="<html>Bad Gateway</html>", content_type="text/html")
    if fault == "503":
        later = formatdate(time.time() + 120, usegmt=True)
        return web.Response(status=503, text="unavailable", headers={"Retry-After": later})
    if fault == "hang":
        await srv.release.wait()  # past the client's timeout; freed at teardown
        return web.Response(text="{}")
    if fault == "reset":
        assert request.transport is not None
        request.transport.abort()
        return web.Response(text="{}")
    if fault == "html":
        return web.Response(text="<html>maintenance</html>", content_type="text/html")
    if fault == "echo":
        return _json(400, {"message": f"rejected {request.headers.get('Authorization')}"})
    if fault == "nf200":
        return _json(200, {"message": "Not Found"})
    if fault == "slow":
        srv.in_flight += 1
        srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
        await asyncio.sleep(0.05)
        srv.in_flight -= 1
    return None


def _graphql(fault: str) -> web.Response:
    if fault == "errors":
        return _json(200, {"errors": [{"message": "x"}]})
    if fault == "gql400":
        return _json(400, {"errors": [{"message": "Syntax Error: Unexpected Name"}]})
    if fault == "partial":
        return _json(200, {"errors": [{"message": "no permission: clientBalance"}],
                           "data": {"myself": {"clientBalance": None, "endpoints": []}}})
    return _json(200, MYSELF_OK)


def _rest(parts: list[str]) -> web.Response:
    op = parts[2] if len(parts) > 2 else ""
    if op == "health":
        return _json(200, HEALTH)
    if op == "requests":
        return _json(200, {"requests": None} if parts[1] == "empty" else REQUESTS)
    if op == "status" and len(parts) > 3:
        job = parts[3]
        if job == "gone":
            return _json(404, {"error": "request does not exist"})
        if job == "gone200":
            return _json(200, {"error": "request does not exist"})
        return _json(200, {"id": job, "status": "COMPLETED", "delayTime": 515,
                           "executionTime": 7744, "workerId": "w1", "output": {"x": 1}})
    return _json(404, {"message": "Not Found"})


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    """A fake RunPod on 127.0.0.1: /graphql/{fault} and /v2/{fault}/{op}[/{job}]."""
    srv = Server()

    async def handle(request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            srv.ports.add(peer[1])
        srv.seen.append((request.method, request.path_qs, dict(request.headers),
                         await request.read()))
        parts = request.path.strip("/").split("/")
        fault = parts[1] if len(parts) > 1 else "ok"
        response = await _fault(srv, request, fault)
        if response is not None:
            return response
        return _graphql(fault) if parts[0] == "graphql" else _rest(parts)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    srv.base = f"http://127.0.0.1:{port}"
    yield srv
    srv.release.set()
    await runner.cleanup()


def client_for(srv: Server, fault: str = "ok", **kw: Any) -> RunPodClient:
    """A client whose GraphQL URL selects `fault`."""
    kw.setdefault("timeout_s", TIMEOUT_S)
    return RunPodClient(api_key=KEY, graphql_url=f"{srv.base}/graphql/{fault}",
                        rest_url=f"{srv.base}/v2", **kw)


async def call(srv: Server, probe: str, fault: str) -> Ok[object] | Failure:
    """Run one probe against a fault (the endpoint id names it)."""
    async with client_for(srv, fault) as c:
        if probe == "myself":
            return await c.myself()
        if probe == "health":
            return await c.health(fault)
        if probe == "requests":
            return await c.requests(fault)
        return await c.status(fault, "job-1")


FAULTS = [
    # fault, kind, status, retry_after_s
    ("401", "http_401", 401, None),
    ("403", "http_403", 403, None),
    ("400", "http_4xx", 400, None),
    ("429", "http_429", 429, 3.0),
    ("500", "http_5xx", 500, None),
    ("502", "http_5xx", 502, None),
    ("hang", "timeout", 0, None),
    ("reset", "connect", 0, None),
    ("html", "malformed", 200, None),
]


@pytest.mark.parametrize("probe", ["myself", "health", "requests", "status"])
@pytest.mark.parametrize(("fault", "kind", "status", "retry"), FAULTS)
async def test_fault_is_classified(
    server: Server, probe: str, fault: str, kind: str, status: int, retry: float | None
) -> None:
    """Each fault comes back as the right Failure kind, status and Retry-After, never raised."""
    result = await call(server, probe, fault)
    assert isinstance(result, Failure), result
    assert (result.kind, result.status, result.retry_after_s) == (kind, status, retry)
    assert result.elapsed_s >= 0
    if fault == "hang":
        assert result.elapsed_s < TIMEOUT_S + 0.5


async def test_404_and_503_on_rest(server: Server) -> None:
    """REST 404 `{"message": "Not Found"}` is http_404; 503 with an HTTP-date Retry-After."""
    nf = await call(server, "health", "404")
    assert nf == Failure("http_404", 404, None, "Not Found", nf.elapsed_s)
    busy = await call(server, "health", "503")
    assert isinstance(busy, Failure)
    assert (busy.kind, busy.status) == ("http_5xx", 503)
    assert busy.retry_after_s is not None
    assert 100 < busy.retry_after_s <= 121


async def test_not_found_body_with_200_is_404(server: Server) -> None:
    """A 200 `{"message": "Not Found"}` (no-balance account) is http_404, status kept."""
    result = await call(server, "health", "nf200")
    assert isinstance(result, Failure)
    assert (result.kind, result.status) == ("http_404", 200)


async def test_connection_refused_is_connect() -> None:
    """Nothing listening on the port: connect, not an exception."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with RunPodClient(api_key=KEY, rest_url=f"http://127.0.0.1:{port}/v2",
                            graphql_url=f"http://127.0.0.1:{port}/graphql",
                            timeout_s=TIMEOUT_S) as c:
        for result in (await c.health("ep"), await c.myself()):
            assert isinstance(result, Failure)
            assert result.kind == "connect"
            assert KEY not in result.message


async def test_graphql_errors(server: Server) -> None:
    """Errors without data are graphql_error (errors[0].message); a 400 with errors is 4xx."""
    only = await call(server, "myself", "errors")
    assert isinstance(only, Failure)
    assert (only.kind, only.status, only.message) == ("graphql_error", 200, "x")
    bad = await call(server, "myself", "gql400")
    assert isinstance(bad, Failure)
    assert (bad.kind, bad.status, bad.message) == ("http_4xx", 400, "Syntax Error: Unexpected Name")


async def test_graphql_ok_and_partial(server: Server) -> None:
    """A full answer and a partial one (data plus errors) are both Ok."""
    full = await call(server, "myself", "ok")
    assert isinstance(full, Ok)
    assert isinstance(full.value, Myself)
    assert full.value.account is not None
    assert full.value.account.balance == 12.5
    assert [e.id for e in full.value.endpoints] == ["ep1"]
    assert full.elapsed_s > 0
    partial = await call(server, "myself", "partial")
    assert isinstance(partial, Ok)
    assert isinstance(partial.value, Myself)
    assert partial.value.errors == ("no permission: clientBalance",)
    assert partial.value.account is None


async def test_graphql_request_shape(server: Server) -> None:
    """myself() is ONE POST carrying the MYSELF query as JSON."""
    await call(server, "myself", "ok")
    assert len(server.seen) == 1
    method, _, headers, payload = server.seen[0]
    assert method == "POST"
    assert headers["Content-Type"] == "application/json"
    assert json.loads(payload) == {"query": MYSELF}


async def test_rest_ok_answers(server: Server) -> None:
    """health, requests (also null requests) and status parse into the rules' types."""
    async with client_for(server) as c:
        health = await c.health("ep1")
        assert isinstance(health, Ok)
        assert health.value == Health(completed=241, failed=16, throttled=5)
        jobs = await c.requests("ep1")
        assert isinstance(jobs, Ok)
        assert jobs.value == (Job("a", "IN_PROGRESS", 1234, None, "w"),)
        job = await c.status("ep1", "job-7")
        assert isinstance(job, Ok)
        assert job.value == Job("job-7", "COMPLETED", 515, 7744, "w1",
                                output_kind="value", output_bytes=7)
    paths = [p for _, p, _, _ in server.seen]
    assert "/v2/ep1/health" in paths
    assert "/v2/ep1/status/job-7" in paths


async def test_null_requests_is_empty(server: Server) -> None:
    """`{"requests": null}` is an empty Ok."""
    async with client_for(server) as c:
        result = await c.requests("empty")
    assert isinstance(result, Ok)
    assert result.value == ()


async def test_purged_job_is_404(server: Server) -> None:
    """`/status` 404, or `{"error": "request does not exist"}` at 200, is http_404."""
    async with client_for(server) as c:
        gone = await c.status("ep1", "gone")
        gone200 = await c.status("ep1", "gone200")
        unknown_endpoint = await c.status("404", "job-1")
    for result, status in ((gone, 404), (gone200, 200), (unknown_endpoint, 404)):
        assert isinstance(result, Failure)
        assert (result.kind, result.status, result.message) == (
            "http_404", status, "request does not exist")


async def test_ids_are_escaped_in_urls(server: Server) -> None:
    """An id with a slash or a query character cannot change the path."""
    async with client_for(server) as c:
        await c.status("ep1", "../../graphql?x=1")
    assert server.seen[-1][1] == "/v2/ep1/status/..%2F..%2Fgraphql%3Fx%3D1"


async def test_key_only_in_bearer_header(server: Server) -> None:
    """The key travels as `Authorization: Bearer KEY` and appears in no URL, Failure or log."""
    failures: list[Failure] = []
    with capture_logs() as logs:
        for probe in ("myself", "health", "status"):
            for fault in ("401", "429", "500", "hang", "reset", "html", "echo", "errors"):
                result = await call(server, probe, fault)
                if isinstance(result, Failure):  # "errors" is a GraphQL-only fault
                    failures.append(result)
    assert server.seen
    for _, path_qs, headers, _ in server.seen:
        assert headers["Authorization"] == f"Bearer {KEY}"
        assert KEY not in path_qs
        assert "api_key" not in path_qs
    for f in failures:
        assert KEY not in repr(f)
    echoed = [f for f in failures if f.status == 400]
    assert echoed
    assert all("***" in f.message for f in echoed)
    assert logs
    assert KEY not in repr(logs)
    assert {entry["probe"] for entry in logs} == {"myself", "health", "status"}


async def test_failures_are_logged_with_context(server: Server) -> None:
    """A failure log line names the probe, endpoint, kind and status."""
    with capture_logs() as logs:
        await call(server, "health", "500")
    assert logs == [{"event": "runpod_call_failed", "log_level": "warning", "probe": "health",
                     "endpoint_id": "500", "kind": "http_5xx", "status": 500,
                     "message": "HTTP 500 Internal Server Error", "retry_after_s": None,
                     "elapsed_s": logs[0]["elapsed_s"]}]


async def test_bounded_concurrency(server: Server) -> None:
    """With max_concurrency=3, ten concurrent calls never have more than three in flight."""
    async with client_for(server, max_concurrency=3, timeout_s=5.0) as c:
        results = await asyncio.gather(*(c.health("slow") for _ in range(10)))
    assert all(isinstance(r, Ok) for r in results)
    assert server.max_in_flight == 3


async def test_keep_alive_reuses_one_connection(server: Server) -> None:
    """Sequential calls, REST and GraphQL, reuse a single TCP connection."""
    async with client_for(server) as c:
        for _ in range(3):
            assert isinstance(await c.health("ep1"), Ok)
            assert isinstance(await c.myself(), Ok)
            assert isinstance(await c.status("ep1", "j"), Ok)
    assert len(server.seen) == 9
    assert len(server.ports) == 1


async def test_an_unchanged_answer_is_the_same_value_a_changed_one_is_read_anew() -> None:
    """The same /health and /requests bytes as last time give the last value (the same
    object); any other answer of the same URL is read afresh, whatever came before it."""
    busy = {**HEALTH, "jobs": {**HEALTH["jobs"], "inQueue": 2}}
    answers: list[tuple[int, str]] = [
        (200, json.dumps(HEALTH)), (200, json.dumps(HEALTH)), (200, json.dumps(busy)),
        (200, json.dumps(busy)), (200, "<html>maintenance</html>"), (200, json.dumps(busy)),
        (200, '{"jobs": "many"}'), (200, '{"jobs": "many"}'), (404, '{"message": "Not Found"}'),
        (200, '{"message": "Not Found"}'), (200, json.dumps(busy)),
    ]
    jobs = [json.dumps(REQUESTS), json.dumps(REQUESTS), json.dumps({"requests": None})]

    async def handle(request: web.Request) -> web.Response:
        status, text = (200, jobs.pop(0)) if request.path.endswith("/requests") else (
            answers.pop(0))
        return web.Response(status=status, text=text, content_type="application/json")

    app = web.Application()
    app.router.add_get("/v2/{id}/{op}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with RunPodClient(api_key=KEY, rest_url=f"http://127.0.0.1:{port}/v2",
                                graphql_url=f"http://127.0.0.1:{port}/graphql") as c:
            got = [await c.health("ep1") for _ in range(11)]
            listed = [await c.requests("ep1") for _ in range(3)]
    finally:
        await runner.cleanup()
    values = [r.value if isinstance(r, Ok) else r.kind for r in got]
    idle, queued = Health(completed=241, failed=16, throttled=5), Health(
        completed=241, failed=16, in_queue=2, throttled=5)
    assert values == [idle, idle, queued, queued, "malformed", queued, "malformed",
                      "malformed", "http_404", "http_404", queued]
    ok = [r for r in got if isinstance(r, Ok)]
    assert ok[1].value is ok[0].value
    assert ok[3].value is ok[2].value
    assert [r.value if isinstance(r, Ok) else r.kind for r in listed] == [
        (Job("a", "IN_PROGRESS", 1234, None, "w"),)] * 2 + [()]
    ok = [r for r in listed if isinstance(r, Ok)]
    assert ok[1].value is ok[0].value


async def test_each_call_has_its_own_deadline_and_a_cancel_is_not_a_timeout(
    server: Server,
) -> None:
    """Hanging calls started apart each time out `timeout_s` after their own start, calls
    that answer in between are Ok, and a call cancelled from outside is cancelled (not
    reported as a timeout), the client still usable after it."""
    async with client_for(server, timeout_s=0.4) as c:

        async def hang_after(delay: float) -> tuple[float, Ok[object] | Failure]:
            await asyncio.sleep(delay)
            started = time.monotonic()
            result = await c.health("hang")
            return time.monotonic() - started, result

        hangs = [asyncio.create_task(hang_after(d)) for d in (0.0, 0.15, 0.3)]
        await asyncio.sleep(0.05)
        quick = [await c.health("ok") for _ in range(3)]
        done = await asyncio.gather(*hangs)
        assert all(isinstance(r, Ok) for r in quick)
        for took, result in done:
            assert isinstance(result, Failure)
            assert (result.kind, result.message) == ("timeout", "no answer within 0.4 s")
            assert 0.35 <= took < 0.4 + 0.5

        outer = asyncio.create_task(c.health("hang"))
        await asyncio.sleep(0.1)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        await asyncio.sleep(0.5)  # past the cancelled call's deadline: nothing fires at us
        assert isinstance(await c.health("ok"), Ok)


def test_bad_key_rejected_without_echo() -> None:
    """A key that cannot be a header value fails at construction, without the key in the error."""
    with pytest.raises(ValueError, match="api_key") as info:
        RunPodClient(api_key="secret\nvalue")
    assert "secret" not in str(info.value)


async def test_proxy_from_the_environment_is_honoured(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With HTTP_PROXY set, calls go through the proxy, not straight to the host: the
    proxy here answers for a host where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # released: nothing listens there
    monkeypatch.setenv("HTTP_PROXY", server.base)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with RunPodClient(api_key=KEY, rest_url=f"http://127.0.0.1:{closed}/v2",
                            timeout_s=TIMEOUT_S) as c:
        result = await c.health("ep1")
    assert isinstance(result, Ok), result
    method, target, headers, _ = server.seen[-1]
    assert (method, target) == ("GET", "/v2/ep1/health")
    assert headers["Host"] == f"127.0.0.1:{closed}"


ENCODED = {
    "gzip": ("gzip", gzip.compress(json.dumps(HEALTH).encode()), "ok"),
    "deflate": ("deflate", zlib.compress(json.dumps(HEALTH).encode()), "ok"),
    "identity": ("identity", json.dumps(HEALTH).encode(), "ok"),
    "gzip-not-gzip": ("gzip", b"not gzip at all", "malformed"),
    "gzip-cut": ("gzip", gzip.compress(json.dumps(HEALTH).encode())[:10], "malformed"),
    "deflate-garbage": ("deflate", b"\x00\x01garbage", "malformed"),
    "br-garbage": ("br", b"garbage", "malformed"),
    "zstd-garbage": ("zstd", b"garbage", "malformed"),
}


@pytest.mark.parametrize("case", list(ENCODED))
async def test_content_encoding_over_the_wire(case: str) -> None:
    """Compressed bodies decode; a body its Content-Encoding cannot decode is `malformed`,
    never an exception (aiohttp's own decoders, the client's default path)."""
    async def handle(request: web.Request) -> web.Response:
        encoding, body, _ = ENCODED[request.match_info["case"]]
        return web.Response(body=body, headers={"Content-Encoding": encoding,
                                                "Content-Type": "application/json"})

    app = web.Application()
    app.router.add_get("/v2/{case}/health", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with RunPodClient(api_key=KEY, rest_url=f"http://127.0.0.1:{port}/v2",
                                timeout_s=2.0) as c:
            result = await c.health(case)
    finally:
        await runner.cleanup()
    expected = ENCODED[case][2]
    if expected == "ok":
        assert isinstance(result, Ok), result
        assert result.value.throttled == 5
    else:
        assert isinstance(result, Failure), result
        assert result.kind == expected


@pytest.mark.parametrize("path", ["direct", "proxy"])
async def test_only_the_encodings_we_decode_with_a_cap_are_asked_for(
    server: Server, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Direct and through a proxy, the client sends Accept-Encoding: gzip, deflate
    (monitor.bodies decodes those two with a bound on the output)."""
    async with _maybe_proxy(path, monkeypatch) as proxy, client_for(server, timeout_s=2.0) as c:
        assert isinstance(await c.health("ep1"), Ok)
    if proxy is not None:
        assert [x.target for x in proxy.seen] == [f"{server.base}/v2/ep1/health"]
    _, _, headers, _ = server.seen[-1]
    assert headers["Accept-Encoding"] == "gzip, deflate"


@pytest.mark.parametrize("path", ["direct", "proxy"])
async def test_a_content_encoding_echoing_the_key_is_scrubbed(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refusal of an unknown Content-Encoding names it only when it looks like coding
    names: never the key, nor a piece of it."""
    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=b"{}", headers={"Content-Encoding": f"x-{KEY}"})

    app = web.Application()
    app.router.add_get("/v2/ep1/health", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        url = f"http://127.0.0.1:{port}/v2"
        async with (_maybe_proxy(path, monkeypatch) as proxy,
                    RunPodClient(api_key=KEY, rest_url=url, timeout_s=2.0) as c):
            result = await c.health("ep1")
        assert proxy is None or len(proxy.seen) == 1
    finally:
        await runner.cleanup()
    assert isinstance(result, Failure), result
    assert result.kind == "malformed"
    assert "Content-Encoding (unknown) not supported" in result.message
    assert KEY[:8] not in result.message


def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@asynccontextmanager
async def _maybe_proxy(path: str, monkeypatch: pytest.MonkeyPatch,
                       variable: str = "HTTP_PROXY") -> AsyncIterator[LoopbackProxy | None]:
    """For `path` "proxy", a loopback proxy the environment names; else no proxy at all."""
    _no_proxy_env(monkeypatch)
    if path != "proxy":
        yield None
        return
    async with LoopbackProxy() as proxy:
        monkeypatch.setenv(variable, proxy.url)
        yield proxy


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
async def test_calls_go_through_a_forwarding_proxy(
    server: Server, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    """Every call, GraphQL and REST, reaches the host through the proxy the environment
    names (by the target's scheme, else ALL_PROXY), on one kept-alive connection."""
    async with _maybe_proxy("proxy", monkeypatch, variable) as proxy:
        assert proxy is not None
        async with client_for(server) as c:
            assert isinstance(await c.myself(), Ok)
            assert isinstance(await c.health("ep1"), Ok)
            assert isinstance(await c.status("ep1", "j"), Ok)
    assert [(x.method, x.target) for x in proxy.seen] == [
        ("POST", f"{server.base}/graphql/ok"), ("GET", f"{server.base}/v2/ep1/health"),
        ("GET", f"{server.base}/v2/ep1/status/j")]
    assert proxy.connections == 1
    assert [path for _, path, _, _ in server.seen] == ["/graphql/ok", "/v2/ep1/health",
                                                         "/v2/ep1/status/j"]
    assert server.seen[-1][2]["Authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize(("no_proxy", "through"), [
    ("127.0.0.1", False), ("localhost,127.0.0.1", False), ("*", False),
    ("example.com", True), ("127.0.0.2", True), ("", True),
])
async def test_no_proxy_sends_its_hosts_direct(
    server: Server, monkeypatch: pytest.MonkeyPatch, no_proxy: str, through: bool
) -> None:
    async with _maybe_proxy("proxy", monkeypatch) as proxy:
        assert proxy is not None
        monkeypatch.setenv("NO_PROXY", no_proxy)
        async with client_for(server) as c:
            assert isinstance(await c.health("ep1"), Ok)
    assert len(proxy.seen) == (1 if through else 0)
    assert len(server.seen) == 1


async def test_proxy_credentials_go_to_the_proxy_never_into_a_message(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """user:password in the proxy's URL: Basic auth to the proxy, not to RunPod; a proxy
    that is down is a `connect` failure whose message does not hold the password."""
    async with LoopbackProxy() as proxy:
        _no_proxy_env(monkeypatch)
        monkeypatch.setenv("HTTP_PROXY", proxy.url.replace("//", "//ops:pr0xyPASS@"))
        async with client_for(server) as c:
            assert isinstance(await c.health("ep1"), Ok)
        assert proxy.seen[0].headers["Proxy-Authorization"] == "Basic b3BzOnByMHh5UEFTUw=="
        assert "Proxy-Authorization" not in server.seen[-1][2]
    async with client_for(server) as c:  # the proxy has gone: nothing listens there
        down = await c.health("ep1")
    assert isinstance(down, Failure)
    assert down.kind == "connect"
    assert "pr0xyPASS" not in down.message


def test_a_proxy_scheme_aiohttp_cannot_speak_fails_when_the_client_is_made(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_proxy_env(monkeypatch)
    monkeypatch.setenv("ALL_PROXY", "socks5://ops:pr0xyPASS@127.0.0.1:1080")
    with pytest.raises(ValueError, match="scheme 'socks5' not supported") as info:
        RunPodClient(api_key=KEY)
    assert "pr0xyPASS" not in str(info.value)


@pytest.mark.parametrize(("host", "port", "no_proxy", "direct"), [
    ("api.runpod.ai", 443, "runpod.ai", True),
    ("api.runpod.ai", 443, ".runpod.ai", True),
    ("api.runpod.ai", 443, "*.runpod.ai", True),
    ("runpod.ai", 443, ".runpod.ai", True),
    ("API.RunPod.ai", 443, "api.runpod.ai", True),
    ("api.runpod.ai", 443, "notrunpod.ai", False),
    ("xrunpod.ai", 443, "runpod.ai", False),
    ("api.runpod.ai", 443, "api.runpod.ai:443", True),
    ("api.runpod.ai", 443, "api.runpod.ai:8443", False),
    ("::1", 80, "::1", True),
    ("10.0.0.1", 80, " 10.0.0.2 , 10.0.0.1 ", True),
    ("10.0.0.1", 80, "", False),
    ("10.0.0.1", 80, "*", True),
])
def test_no_proxy_matching(host: str, port: int, no_proxy: str, direct: bool) -> None:
    """NO_PROXY as httpx and urllib read it: hosts, domains with their subdomains, host:port."""
    assert _bypass(host, port, no_proxy) is direct


def test_env_proxies_by_scheme() -> None:
    import yarl

    proxies = EnvProxies({"https": "proxy.corp:3128", "all": "http://other:8080",
                          "no": "internal"})
    https, headers = proxies.for_url(yarl.URL("https://api.runpod.ai/v2")) or (None, None)
    assert (str(https), headers) == ("http://proxy.corp:3128", {})
    other = proxies.for_url(yarl.URL("http://api.runpod.ai/v2"))
    assert other is not None
    assert str(other[0]) == "http://other:8080"
    assert proxies.for_url(yarl.URL("https://svc.internal/x")) is None
    assert not EnvProxies({})


async def test_the_key_is_never_sent_to_the_proxy_as_its_credentials(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiohttp copies a session's default Authorization into Proxy-Authorization, even in
    the CONNECT of an HTTPS tunnel (which the proxy reads in clear text): the client sends
    the key with each request instead, so neither a plain proxied request nor a CONNECT
    carries it as the proxy's credentials."""
    async with _maybe_proxy("proxy", monkeypatch) as proxy:
        assert proxy is not None
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        async with client_for(server) as c:
            assert isinstance(await c.health("ep1"), Ok)
        port = server.base.rsplit(":", 1)[1]
        async with RunPodClient(api_key=KEY, rest_url=f"https://127.0.0.1:{port}/v2",
                                timeout_s=2.0) as c:
            tunnelled = await c.health("ep1")  # TLS to a plain HTTP server: no answer
    assert isinstance(tunnelled, Failure)
    plain, connect = proxy.seen
    assert "Proxy-Authorization" not in plain.headers
    assert plain.headers["Authorization"] == f"Bearer {KEY}"  # for RunPod, as without one
    assert (connect.method, connect.target) == ("CONNECT", f"127.0.0.1:{port}")
    assert not [v for v in connect.headers.values() if KEY in v]
