"""The REST v2 client over real loopback HTTP: against the simulator (pages, problem+json,
the quota, Retry-After, worker-log streams, billing, the catalog, a retired GraphQL) and,
for PATCH (which the simulator does not serve yet), a small aiohttp server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from conftest import SIM_KEY, SimStart
from structlog.testing import capture_logs

from model.observation import Job
from monitor.runpod import Failure, Ok, RunPodClient
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
