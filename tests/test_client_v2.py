"""The REST v2 client over real loopback HTTP: against the simulator (pages, problem+json,
the quota, Retry-After, worker-log streams, billing, the catalog, a retired GraphQL) and,
for PATCH (which the simulator does not serve yet), a small aiohttp server."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from conftest import SIM_KEY, SimStart
from proxykit import LoopbackProxy
from structlog.testing import capture_logs

from model.observation import FAILURE_KINDS, RETIRED, UNKNOWN_OUTCOMES, Job
from monitor.runpod import Failure, Ok, RunPodClient
from monitor.runpod.client import RUNPOD_LIMITS
from monitor.runpod.rest_v2 import LogBounds, V2Pagination, V2Paths
from monitor.simulator import SimulatorServer

TEMPLATE = {"id": "tpl1", "name": "w", "imageName": "acme/w:1", "dockerArgs": "",
            "containerDiskInGb": 20, "env": [{"key": "A", "value": "1"}]}


def _account(n: int = 1, v2: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    eps = [{"id": f"ep{i:02d}", "name": f"e{i}", "gpuIds": "ADA_24", "workersMax": i + 1,
            "template": TEMPLATE} for i in range(n)]
    return {"name": "v2", "endpoints": eps, **({"v2": v2} if v2 is not None else {}), **extra}


def _client(sim: SimulatorServer, **kw: Any) -> RunPodClient:
    kw.setdefault("timeout_s", 5.0)
    return RunPodClient(api_key=kw.pop("api_key", SIM_KEY), graphql_url=f"{sim.url}/graphql",
                        rest_url=f"{sim.url}/v2", v2_url=f"{sim.url}/v2", **kw)


def _ok(result: Any) -> Any:
    assert isinstance(result, Ok), result
    return result.value


@pytest.fixture(params=["direct", "proxy"])
async def via(request: pytest.FixtureRequest,
              monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LoopbackProxy | None]:
    """Straight to the simulator, or through a loopback proxy the environment names."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    if request.param == "direct":
        yield None
        return
    async with LoopbackProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        yield proxy


def _went(via: LoopbackProxy | None) -> None:
    assert via is None or via.seen, "the proxy was not used"


# --- the writes the guarded fixes use -------------------------------------------------------


async def test_cancel_job_and_purge_queue_on_the_simulators_data_plane(
    sim_server: SimStart,
) -> None:
    """cancel_job answers the job's new status (a finished job keeps its own), purge_queue
    how many queued jobs it removed; /status then shows both."""
    jobs = [{"id": "j1", "status": "IN_QUEUE"}, {"id": "j2", "status": "IN_QUEUE"},
            {"id": "j3", "status": "IN_QUEUE"}, {"id": "done", "status": "COMPLETED"}]
    scenario = _account(1)
    scenario["endpoints"][0]["jobs"] = jobs
    scenario["endpoints"][0]["health"] = {"jobs": {"inQueue": 3}}
    sim = await sim_server(scenario)
    async with _client(sim) as client:
        cancelled = _ok(await client.cancel_job("ep00", "j1"))
        assert cancelled == Job(id="j1", status="CANCELLED")
        assert _ok(await client.cancel_job("ep00", "done")).status == "COMPLETED"
        assert _ok(await client.status("ep00", "j1")).status == "CANCELLED"
        assert _ok(await client.purge_queue("ep00")) == 2
        missing = await client.cancel_job("nope", "j1")
        assert isinstance(missing, Failure)
        assert missing.kind == "http_404"
    assert sim.request_counts[("ep00", "cancel")] == 2
    assert sim.request_counts[("ep00", "purge-queue")] == 1


async def test_purge_queue_keeps_runpods_limit(sim_server: SimStart) -> None:
    """RunPod allows 2 purges per 10 s per endpoint: with the daemon's limiter the third
    is not sent, and fails at once as http_429 (status 0)."""
    sim = await sim_server(_account(1))
    async with _client(sim, timeout_s=2, limits=RUNPOD_LIMITS) as client:
        first, second = await client.purge_queue("ep00"), await client.purge_queue("ep00")
        start = time.monotonic()
        third = await client.purge_queue("ep00")
        waited = time.monotonic() - start
    assert isinstance(first, Ok)
    assert isinstance(second, Ok)
    assert isinstance(third, Failure)
    assert (third.kind, third.status) == ("http_429", 0)
    assert "2 /purge-queue per 10 s" in third.message
    assert waited < 1
    assert sim.request_counts[("ep00", "purge-queue")] == 2


PATCHED = {"id": "ep1", "name": "sdxl", "type": "QUEUE", "gpu": {"pools": ["ADA_24"],
           "excludedTypes": ["NVIDIA L40"], "count": 1, "allowedCudaVersions": [],
           "minCudaVersion": None}, "workers": {"min": 0, "max": 10, "idleTimeout": 5},
           "scaling": {"type": "QUEUE_DELAY", "queueDelay": 4}, "dataCenterIds": ["US-KS-2"],
           "networkVolumes": [], "timeout": 300000, "flashboot": "OFF",
           "createdAt": "2026-06-01T12:00:00Z", "image": "acme/w:4", "env": {"A": "1"}}


@pytest.fixture
async def patch_server() -> AsyncIterator[Callable[..., Awaitable[tuple[str, list[Any]]]]]:
    """A loopback stand-in for `PATCH /v2/serverless/{id}` answering what it is told."""
    runners: list[web.AppRunner] = []

    async def start(status: int, answer: object,
                    headers: dict[str, str] | None = None) -> tuple[str, list[Any]]:
        seen: list[Any] = []

        async def handle(request: web.Request) -> web.StreamResponse:
            seen.append((request.method, request.path, request.headers.get("Authorization"),
                         await request.json()))
            ctype = "application/json" if status < 300 else "application/problem+json"
            return web.Response(status=status, text=json.dumps(answer), content_type=ctype,
                                headers=headers)

        app = web.Application()
        app.router.add_route("PATCH", "/v2/serverless/{id}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}/v2", seen

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_patch_endpoint_sends_the_body_and_reads_the_endpoint_back(
    patch_server: Callable[..., Awaitable[tuple[str, list[Any]]]],
) -> None:
    url, seen = await patch_server(200, PATCHED, {"RateLimit": '"minute";r=5;t=30',
                                                  "x-request-id": "rid-1"})
    async with RunPodClient(api_key=SIM_KEY, v2_url=url, timeout_s=5) as client:
        out = await client.patch_endpoint("ep1", {"workers": {"min": 0, "max": 10}})
    assert isinstance(out, Ok)
    assert seen == [("PATCH", "/v2/serverless/ep1", f"Bearer {SIM_KEY}",
                     {"workers": {"min": 0, "max": 10}})]
    assert (out.value.workers_max, out.value.gpu_ids) == (10, "ADA_24,-NVIDIA L40")
    assert out.rate is not None
    assert (out.rate.rate_limit, out.rate.request_id) == ('"minute";r=5;t=30', "rid-1")


async def test_patch_endpoint_422_names_the_first_validation_error(
    patch_server: Callable[..., Awaitable[tuple[str, list[Any]]]],
) -> None:
    problem = {"detail": "Request validation failed.", "status": 422,
               "title": "Unprocessable Entity",
               "errors": ["$: additional properties 'workersMax' not allowed", "second"]}
    url, _ = await patch_server(422, problem, {"x-request-id": "rid-422"})
    async with RunPodClient(api_key=SIM_KEY, v2_url=url, timeout_s=5) as client:
        with capture_logs() as logs:
            out = await client.patch_endpoint("ep1", {"workersMax": 3})
    assert isinstance(out, Failure)
    assert (out.kind, out.status) == ("http_4xx", 422)
    assert out.message == ("Request validation failed.: $: additional properties "
                           "'workersMax' not allowed")
    assert [e["request_id"] for e in logs if e["event"] == "runpod_call_failed"] == ["rid-422"]


# --- listing endpoints: pages, the mapping ----------------------------------------------------


async def test_list_endpoints_follows_every_page(sim_server: SimStart) -> None:
    """Seven endpoints, three a page: three requests, every endpoint once, in order."""
    sim = await sim_server(_account(7))
    async with _client(sim, v2_pagination=V2Pagination(page_size=3)) as client:
        out = await client.list_endpoints()
    assert [e.id for e in _ok(out)] == [f"ep{i:02d}" for i in range(7)]
    assert sim.request_counts[("v2", "list-endpoints")] == 3


async def test_list_endpoints_uses_the_configured_names(sim_server: SimStart) -> None:
    names = {"limit_param": "per_page", "cursor_param": "after", "next_field": "next"}
    sim = await sim_server(_account(5, {"pagination": {"page_size": 2, **names}}))
    async with _client(sim, v2_pagination=V2Pagination(page_size=2, **names)) as client:
        assert len(_ok(await client.list_endpoints())) == 5
    assert sim.request_counts[("v2", "list-endpoints")] == 3
    # with other names, a full page without the cursor member is not read as the whole
    # list (the missing endpoints would look deleted): the listing fails instead
    async with _client(sim, v2_pagination=V2Pagination(page_size=2)) as client:
        wrong = await client.list_endpoints()
    assert isinstance(wrong, Failure)
    assert wrong.kind == "malformed"
    assert "'nextCursor'" in wrong.message


async def test_more_pages_than_max_pages_fails_the_listing(sim_server: SimStart) -> None:
    sim = await sim_server(_account(7))
    async with _client(sim, v2_pagination=V2Pagination(page_size=2, max_pages=3)) as client:
        out = await client.list_endpoints()
    assert isinstance(out, Failure)
    assert out.kind == "malformed"
    assert "max_pages" in out.message
    assert sim.request_counts[("v2", "list-endpoints")] == 3


async def test_endpoint_maps_onto_the_graphql_names(sim_server: SimStart) -> None:
    """pools + -excludedTypes -> gpu_ids, dataCenterIds -> locations, volumes, scaling,
    the inline container -> Template(id=""), timeout, flashboot, type."""
    scenario = _account(1, networkVolumes=[{"id": "vol1", "size": 20,
                                            "dataCenterId": "US-KS-2"}])
    scenario["endpoints"][0].update({
        "gpuIds": "ADA_24,AMPERE_24,-NVIDIA L40", "locations": "US-KS-2,EU-RO-1",
        "networkVolumeId": "vol1", "workersMin": 1, "workersMax": 4, "idleTimeout": 9,
        "scalerType": "REQUEST_COUNT", "scalerValue": 3, "executionTimeoutMs": 120000,
        "flashBootType": "FLASHBOOT"})
    sim = await sim_server(scenario)
    async with _client(sim) as client:
        [listed] = _ok(await client.list_endpoints())
        one = _ok(await client.get_endpoint("ep00"))
        missing = await client.get_endpoint("nope")
    assert listed == one
    assert one.gpu_ids == "ADA_24,AMPERE_24,-NVIDIA L40"
    assert one.gpu_tiers == ("ADA_24", "AMPERE_24")
    assert one.locations == "US-KS-2,EU-RO-1"
    assert (one.network_volume_id, one.network_volume_ids) == ("vol1", ("vol1",))
    assert (one.workers_min, one.workers_max, one.workers_standby) == (1, 4, None)
    assert one.idle_timeout is None  # omitted for REQUEST_COUNT (spec 2.2)
    assert (one.scaler_type, one.scaler_value) == ("REQUEST_COUNT", 3)
    assert (one.timeout_ms, one.flashboot, one.endpoint_type) == (120000, "FLASHBOOT", "QUEUE")
    assert one.template is not None
    assert (one.template.id, one.template.image_name, one.template.container_disk_gb) == (
        "", "acme/w:1", 20)
    assert [(e.key, e.value) for e in one.template.env] == [("A", "1")]
    assert isinstance(missing, Failure)
    assert (missing.kind, missing.status, missing.message) == (
        "http_404", 404, "resource not found")


# --- workers, releases -------------------------------------------------------------------------


async def test_workers_and_releases(sim_server: SimStart) -> None:
    scenario = _account(1, {"epoch": "2026-12-01T12:00:00Z"})
    scenario["endpoints"][0]["v2"] = {
        "version": 4,
        "workers": [{"id": "w1", "status": "RUNNING", "version": 3, "started_s": -600},
                    {"id": "w2", "status": "THROTTLED"}],
        "releases": [{"version": 3, "created_s": -900},
                     {"version": 4, "created_s": -300, "diff": [
                         {"field": "template.env", "old": {"A": "1"}, "new": {"A": "2"}},
                         {"field": "workers.max", "old": 5, "new": 10}]}],
    }
    sim = await sim_server(scenario)
    async with _client(sim) as client:
        workers = _ok(await client.endpoint_workers("ep00"))
        releases = _ok(await client.endpoint_releases("ep00"))
    assert workers.endpoint_version == 4
    w1, w2 = workers.workers
    assert (w1.id, w1.status, w1.stale, w1.version) == ("w1", "RUNNING", True, 3)
    assert w1.started_at == datetime(2026, 12, 1, 11, 50, tzinfo=UTC).timestamp()
    assert (w2.status, w2.started_at, w2.gpu_type) == ("THROTTLED", None, None)
    assert releases.endpoint_version == 4
    assert [r.version for r in releases.releases] == [4, 3]
    assert [(c.field, c.old, c.new) for c in releases.releases[0].diff] == [
        ("template.env", '{"A":"1"}', '{"A":"2"}'), ("workers.max", "5", "10")]
    assert releases.rollout_in_progress is True
    assert releases.percent_on_latest == 50  # w2 (THROTTLED) runs the latest


# --- problem+json, Retry-After, the quota, rate headers -------------------------------------------


@pytest.mark.parametrize(("fault", "kind", "status", "message"), [
    (401, "http_401", 401, "missing bearer token"),
    (403, "http_403", 403, "access denied"),
    (404, "http_404", 404, "resource not found"),
    (500, "http_5xx", 500, "internal server error"),
    (502, "http_5xx", 502, "HTTP 502 Bad Gateway"),
    (503, "http_5xx", 503, "HTTP 503 Service Unavailable"),
    ("malformed", "malformed", 200, "body is not JSON"),
])
async def test_faults_are_classified(
    sim_server: SimStart, fault: object, kind: str, status: int, message: str
) -> None:
    sim = await sim_server(_account(1, {"faults": {"workers": fault}}))
    async with _client(sim) as client:
        with capture_logs() as logs:
            out = await client.endpoint_workers("ep00")
    assert isinstance(out, Failure)
    assert (out.kind, out.status, out.message) == (kind, status, message)
    [event] = [e for e in logs if e["event"] == "runpod_call_failed"]
    if fault in (401, 403, 404, 500):  # problem+json answers carry a request id
        assert out.rate is not None
        assert out.rate.request_id
        assert event["request_id"] == out.rate.request_id


async def test_422_problem_names_the_field(sim_server: SimStart) -> None:
    sim = await sim_server(_account(1))
    async with _client(sim) as client:
        out = await client.worker_logs("ep00", "w", source="kernel")
    assert isinstance(out, Failure)
    assert (out.kind, out.status) == ("http_4xx", 422)
    assert out.message == "source: must be container or system (got 'kernel')"


async def test_scripted_429_keeps_retry_after(sim_server: SimStart) -> None:
    sim = await sim_server(_account(1, {"faults": {"balance": {"code": 429,
                                                               "retry_after": 7}}}))
    async with _client(sim) as client:
        out = await client.balance()
    assert isinstance(out, Failure)
    assert (out.kind, out.retry_after_s) == ("http_429", 7.0)
    assert out.message == "rate limit exceeded for the minute window"
    assert out.rate is not None
    assert out.rate.rate_limit == '"minute";r=0;t=7'


async def test_quota_headers_on_every_answer_and_429_past_it(
    sim_server: SimStart, via: LoopbackProxy | None
) -> None:
    sim = await sim_server(_account(1, {"quota": {"minute": 2, "hour": 100, "day": None}}))
    async with _client(sim) as client:
        first = await client.network_volumes()
        second = await client.gpu_stock()
        third = await client.pods()
    assert isinstance(first, Ok)
    assert isinstance(second, Ok)
    assert first.rate is not None
    assert second.rate is not None
    assert first.rate.rate_limit is not None
    assert first.rate.rate_limit.startswith('"minute";r=1;t=')
    assert second.rate.rate_limit is not None
    assert second.rate.rate_limit.startswith('"minute";r=0;t=')
    assert first.rate.rate_limit_policy == '"minute";q=2;w=60, "hour";q=100;w=3600'
    assert first.rate.request_id != second.rate.request_id
    assert isinstance(third, Failure)
    assert third.kind == "http_429"
    assert third.retry_after_s is not None
    assert 0 < third.retry_after_s <= 60
    assert third.rate is not None
    assert third.rate.rate_limit_policy == first.rate.rate_limit_policy
    _went(via)


async def test_exempt_caller_has_no_quota_headers(sim_server: SimStart) -> None:
    sim = await sim_server(_account(1, {"quota": None}))
    async with _client(sim) as client:
        out = await client.network_volumes()
    assert isinstance(out, Ok)
    assert out.rate is not None
    assert (out.rate.rate_limit, out.rate.rate_limit_policy) == (None, None)
    assert out.rate.request_id


# --- account, billing, volumes, pods, catalog --------------------------------------------------


async def test_balance_and_limits_on_configured_paths(sim_server: SimStart) -> None:
    scenario = _account(1, {"paths": {"balance": "/v2/user/balance"},
                            "billing_mode": "POSTPAID",
                            "account_limits": {"spendRate": {"limit": 45}}},
                        account={"clientBalance": 12.5, "spendLimit": 80,
                                 "maxServerlessConcurrency": 30})
    sim = await sim_server(scenario)
    async with _client(sim, v2_paths=V2Paths(balance="/user/balance")) as client:
        balance = _ok(await client.balance())
        limits = _ok(await client.account_limits())
        account = _ok(await client.account_id())
    assert account == sim.world.state(sim.moment()).account["id"]
    assert (balance.amount, balance.billing_mode) == (12.5, "POSTPAID")
    assert (limits.spend_limit, limits.workers_limit, limits.workers_current) == (45, 30, 1)
    async with _client(sim) as client:  # the default path is not served here
        wrong = await client.balance()
    assert isinstance(wrong, Failure)
    assert wrong.kind == "http_404"


async def test_account_limits_tolerate_unknown_inner_fields(sim_server: SimStart) -> None:
    scenario = _account(1, {"account_limits": {"spendRate": {"limit": None, "cap": 9},
                                               "serverlessWorkers": "many"}})
    sim = await sim_server(scenario)
    async with _client(sim) as client:
        limits = _ok(await client.account_limits())
    assert (limits.spend_limit, limits.workers_limit) == (None, None)


async def test_serverless_spend_is_the_last_complete_hour(sim_server: SimStart) -> None:
    """1.2 USD/h until 12:30, then 3.0: at 13:30 the complete 12:00-13:00 bucket holds 2.1;
    the in-progress 13:00 bucket (1.5 so far) is not read."""
    scenario = _account(1, {"epoch": "2026-12-01T12:00:00Z"}, interval_s=1800)
    scenario["endpoints"][0]["v2"] = {"billing": 1.2}
    scenario["steps"] = [{"cycles": 1},
                         {"cycles": 3, "endpoints": {"ep00": {"v2": {"billing": 3.0}}}}]
    sim = await sim_server(scenario)
    sim.set_cycle(4)
    async with _client(sim) as client:
        spend = _ok(await client.serverless_spend())
    assert dict(spend.per_endpoint) == {"ep00": pytest.approx(2.1)}
    assert spend.total_per_hr == pytest.approx(2.1)
    assert spend.bucket_end is not None
    assert spend.bucket_start is not None
    assert spend.bucket_end - spend.bucket_start == 3600


async def test_volumes_pods_and_gpu_stock(sim_server: SimStart) -> None:
    scenario = _account(
        1, {"availability": {"ADA_24": "LOW"}, "pagination": {"page_size": 2}},
        networkVolumes=[{"id": "v1", "name": "cache", "size": 50, "dataCenterId": "US-KS-2"}],
        pods=[{"id": f"p{i}", "name": f"pod{i}", "desiredStatus": "RUNNING" if i else "EXITED",
               "costPerHr": 0.5} for i in range(3)])
    sim = await sim_server(scenario)
    async with _client(sim, v2_pagination=V2Pagination(page_size=2)) as client:
        [vol] = _ok(await client.network_volumes())
        pods = _ok(await client.pods())
        stock = _ok(await client.gpu_stock())
    assert (vol.id, vol.name, vol.size_gb, vol.datacenter) == ("v1", "cache", 50, "US-KS-2")
    assert [(p.id, p.desired_status, p.cost_per_hr) for p in pods] == [
        ("p0", "EXITED", 0.0), ("p1", "RUNNING", 0.5), ("p2", "RUNNING", 0.5)]
    assert sim.request_counts[("v2", "pods")] == 2
    ada = [g for g in stock if g.pool == "ADA_24"]
    assert ada
    assert all(g.availability == "LOW" for g in ada)
    assert all(dict(g.datacenters).get("US-KS-2") == "LOW" for g in ada)
    assert all(g.price_serverless is not None for g in ada)


# --- worker logs: server-sent events, bounded --------------------------------------------------


def _logs_scenario(n: int, hold_s: float = 30, width: int = 10) -> dict[str, Any]:
    scenario = _account(1, {"logs_hold_s": hold_s})
    scenario["endpoints"][0]["v2"] = {
        "workers": [{"id": "w1", "status": "UNHEALTHY", "started_s": -60}],
        "logs": {"w1": [{"t": -60 + i, "source": "system",
                         "line": f"line {i:04d} " + "x" * width} for i in range(n)]},
    }
    return scenario




async def test_logs_line_bound_cuts_an_open_stream(
    sim_server: SimStart, via: LoopbackProxy | None
) -> None:
    sim = await sim_server(_logs_scenario(50))
    bounds = LogBounds(max_lines=10, max_bytes=1 << 20, max_seconds=5)
    async with _client(sim, log_bounds=bounds) as client:
        start = time.monotonic()
        out = await client.worker_logs("ep00", "w1", tail=50)
        took = time.monotonic() - start
    logs = _ok(out)
    assert [x.line[:9] for x in logs.lines] == [f"line {i:04d}" for i in range(10)]
    assert logs.lines[0].source == "system"
    assert logs.lines[0].t is not None
    assert (logs.worker_id, logs.truncated) == ("w1", True)
    assert took < 2  # did not wait for the 30 s the stream stays open, nor max_seconds
    _went(via)


async def test_logs_byte_bound_cuts_an_open_stream(
    sim_server: SimStart, via: LoopbackProxy | None
) -> None:
    sim = await sim_server(_logs_scenario(50, width=100))
    bounds = LogBounds(max_lines=200, max_bytes=1024, max_seconds=5)
    async with _client(sim, log_bounds=bounds) as client:
        start = time.monotonic()
        logs = _ok(await client.worker_logs("ep00", "w1"))
        took = time.monotonic() - start
    # each event is ~190 bytes on the wire: five whole ones fit in 1 KiB
    assert 3 <= len(logs.lines) <= 5
    assert logs.truncated is True
    assert took < 2
    _went(via)


async def test_logs_time_bound_ends_a_quiet_stream(
    sim_server: SimStart, via: LoopbackProxy | None
) -> None:
    """Three lines, then the stream stays open with nothing new: the read ends at
    max_seconds with every line, not truncated (nothing was cut)."""
    sim = await sim_server(_logs_scenario(3))
    bounds = LogBounds(max_lines=200, max_bytes=1 << 20, max_seconds=0.6)
    async with _client(sim, log_bounds=bounds) as client:
        start = time.monotonic()
        logs = _ok(await client.worker_logs("ep00", "w1"))
        took = time.monotonic() - start
    assert len(logs.lines) == 3
    assert logs.truncated is False
    assert 0.55 <= took < 2
    _went(via)


async def test_logs_that_end_are_read_whole(sim_server: SimStart) -> None:
    sim = await sim_server(_logs_scenario(4, hold_s=0))
    async with _client(sim) as client:
        logs = _ok(await client.worker_logs("ep00", "w1", source=None))
    assert (len(logs.lines), logs.truncated) == (4, False)


@pytest.mark.parametrize(("fault", "kind"), [(404, "http_404"), ("malformed", "malformed"),
                                             (503, "http_5xx")])
async def test_logs_faults(sim_server: SimStart, fault: object, kind: str,
                           via: LoopbackProxy | None) -> None:
    scenario = _logs_scenario(3)
    scenario["endpoints"][0]["v2"]["faults"] = {"logs": fault}
    sim = await sim_server(scenario)
    async with _client(sim) as client:
        out = await client.worker_logs("ep00", "w1")
    assert isinstance(out, Failure)
    assert out.kind == kind
    if fault == "malformed":  # an HTML page with 200 is no event stream
        assert out.message == "worker logs are not text/event-stream"
    _went(via)


# --- malformed and oversized answers; the key -------------------------------------------------


async def test_oversized_answer_is_malformed_naming_the_cap(sim_server: SimStart) -> None:
    from monitor.bodies import BodyLimits

    sim = await sim_server(_account(40))
    limits = BodyLimits(64 * 1024, 4096, "runpod")
    async with _client(sim, body_limits=limits) as client:
        out = await client.list_endpoints()
    assert isinstance(out, Failure)
    assert out.kind == "malformed"
    assert "runpod.max_decoded_bytes" in out.message


async def test_wrong_shapes_are_malformed_never_data(
    patch_server: Callable[..., Awaitable[tuple[str, list[Any]]]],
) -> None:
    for answer in ({"id": "ep1", "workers": {"max": "ten"}}, {"id": ""}, [PATCHED], "x", None,
                   {**PATCHED, "gpu": {"pools": "ADA_24"}}, {**PATCHED, "timeout": -1},
                   # no worker bounds: read as max 0 it would claim a disabled endpoint
                   {k: v for k, v in PATCHED.items() if k != "workers"},
                   {**PATCHED, "workers": {"min": 0}}):
        url, _ = await patch_server(200, answer)
        async with RunPodClient(api_key=SIM_KEY, v2_url=url, timeout_s=5) as client:
            out = await client.patch_endpoint("ep1", {})
        assert isinstance(out, Failure), answer
        assert (out.kind, out.message) == ("malformed", "unexpected patch-endpoint shape")


async def test_the_key_never_leaves_in_a_failure_or_a_log(
    patch_server: Callable[..., Awaitable[tuple[str, list[Any]]]],
) -> None:
    """A server that echoes the key in its problem detail, errors and request id."""
    problem = {"title": "Forbidden", "status": 403, "detail": f"key {SIM_KEY} lacks scope",
               "errors": [f"Bearer {SIM_KEY}"]}
    url, _ = await patch_server(403, problem, {"x-request-id": f"rid-{SIM_KEY}",
                                               "RateLimit": f'"{SIM_KEY}";r=1;t=1'})
    async with RunPodClient(api_key=SIM_KEY, v2_url=url, timeout_s=5) as client:
        with capture_logs() as logs:
            out = await client.patch_endpoint("ep1", {"env": {"SECRET": "v"}})
    assert isinstance(out, Failure)
    assert out.kind == "http_403"
    assert SIM_KEY not in repr(out)
    assert "***" in out.message
    assert SIM_KEY not in repr(logs)
    assert logs


# --- a retired GraphQL -------------------------------------------------------------------------


@pytest.mark.parametrize("status", [404, 410, 200])
async def test_retired_graphql_is_its_own_outcome(sim_server: SimStart, status: int) -> None:
    scenario = _account(1)
    scenario["steps"] = [{"cycles": 1, "graphql": {"retired": status}}]
    sim = await sim_server(scenario)
    async with _client(sim) as client:
        out = await client.myself()
        v2 = await client.list_endpoints()  # REST v2 carries on
    assert isinstance(out, Failure)
    assert (out.kind, out.status) == (RETIRED, status)
    assert "retired" in out.message
    assert RETIRED in UNKNOWN_OUTCOMES
    assert RETIRED not in FAILURE_KINDS
    assert [e.id for e in _ok(v2)] == ["ep00"]


async def test_a_deprecation_notice_is_not_a_retirement(sim_server: SimStart) -> None:
    """Today's GraphQL may warn that it "will be retired": data still comes, and an error
    answer saying so is a GraphQL error, not RETIRED."""
    scenario = _account(1)
    scenario["steps"] = [{"cycles": 1, "graphql": {"errors": (
        "The GraphQL API is deprecated and will be retired in early 2027")}}]
    sim = await sim_server(scenario)
    async with _client(sim) as client:
        out = await client.myself()
    assert isinstance(out, Failure)
    assert out.kind == "graphql_error"
