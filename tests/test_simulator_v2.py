"""The simulator's REST v2 over real loopback HTTP: pages, problem+json, the quota, faults
per route, worker logs as server-sent events, billing, the catalog, and a retired GraphQL."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SIM_KEY, SimStart

from monitor.simulator import Scenario, ScenarioError, load_scenario

AUTH = {"Authorization": f"Bearer {SIM_KEY}"}
ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "tests" / "scenarios"
PROBLEM = "application/problem+json"
TEMPLATE = {"id": "tpl1", "name": "w", "imageName": "acme/w:1", "dockerArgs": "",
            "containerDiskInGb": 20, "env": [{"key": "A", "value": "1"}]}


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(headers=AUTH, timeout=5) as client:
        yield client


def _account(n: int = 1, v2: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    eps = [{"id": f"ep{i:02d}", "name": f"e{i}", "gpuIds": "ADA_24", "workersMax": i + 1,
            "template": TEMPLATE} for i in range(n)]
    return {"name": "v2", "endpoints": eps, **({"v2": v2} if v2 is not None else {}), **extra}


def _problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["status"] == status
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return dict(body)


# --- pagination -----------------------------------------------------------------------------


async def test_pagination_walk_visits_every_endpoint_once(
    http: httpx.AsyncClient, sim_server: SimStart
) -> None:
    """Pages of page_size, a cursor to the next, null at the end; `limit` picks the size."""
    sim = await sim_server(_account(7, {"pagination": {"page_size": 3}}))
    seen: list[str] = []
    sizes: list[int] = []
    cursor: str | None = None
    for _ in range(10):
        r = await http.get(f"{sim.url}/v2/serverless",
                           params={"cursor": cursor} if cursor else None)
        assert r.status_code == 200
        body = r.json()
        sizes.append(len(body["endpoints"]))
        seen += [e["id"] for e in body["endpoints"]]
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert seen == [f"ep{i:02d}" for i in range(7)]
    assert sizes == [3, 3, 1]
    r = await http.get(f"{sim.url}/v2/serverless", params={"limit": 5})
    assert len(r.json()["endpoints"]) == 5
    _problem(await http.get(f"{sim.url}/v2/serverless", params={"cursor": "bogus!"}), 400)
    _problem(await http.get(f"{sim.url}/v2/serverless", params={"limit": "0"}), 400)


async def test_pagination_names_are_configurable(
    http: httpx.AsyncClient, sim_server: SimStart
) -> None:
    """The UNCONFIRMED parameter and field names come from the scenario."""
    names = {"page_size": 2, "limit_param": "pageSize", "cursor_param": "after",
             "next_field": "next"}
    sim = await sim_server(_account(3, {"pagination": names}))
    first = (await http.get(f"{sim.url}/v2/serverless", params={"pageSize": 1})).json()
    assert [e["id"] for e in first["endpoints"]] == ["ep00"]
    assert "nextCursor" not in first
    second = (await http.get(f"{sim.url}/v2/serverless",
                             params={"pageSize": 5, "after": first["next"]})).json()
    assert [e["id"] for e in second["endpoints"]] == ["ep01", "ep02"]
    assert second["next"] is None


# --- errors -----------------------------------------------------------------------------------


async def test_problem_json_errors(http: httpx.AsyncClient, sim_server: SimStart) -> None:
    """401 without or with a wrong key (no RateLimit then), 404, unknown paths, 405 + Allow."""
    sim = await sim_server(_account(1))
    async with httpx.AsyncClient(timeout=5) as anon:
        r = await anon.get(f"{sim.url}/v2/serverless")
        assert _problem(r, 401)["detail"] == "missing bearer token"
        assert "RateLimit" not in r.headers
        r = await anon.get(f"{sim.url}/v2/serverless",
                           headers={"Authorization": "Bearer wrong-key"})
        _problem(r, 401)
    r = await http.get(f"{sim.url}/v2/serverless/nope")
    assert _problem(r, 404)["detail"] == "resource not found"
    assert r.headers["x-request-id"]
    assert "RateLimit" in r.headers
    for path in ("/v2/serverless/ep00/nothing", "/v2/billing/nothing",
                 "/v2/serverless/nope/workers", "/v2/serverless/ep00/workers/nope/logs",
                 "/v2/pods/nope"):
        _problem(await http.get(f"{sim.url}{path}"), 404)
    r = await http.delete(f"{sim.url}/v2/serverless/ep00")
    _problem(r, 405)
    assert r.headers["Allow"] == "GET, PATCH"  # PATCH: tests/test_simulator_writes.py
    r = await http.post(f"{sim.url}/v2/serverless/ep00/workers")
    _problem(r, 405)
    assert r.headers["Allow"] == "GET"
    # The data plane beside it keeps its own shapes.
    r = await http.get(f"{sim.url}/v2/ep00/health")
    assert r.status_code == 200
    assert set(r.json()) == {"jobs", "workers"}


# --- the quota --------------------------------------------------------------------------------

_LIMIT = re.compile(r'^"minute";r=(\d+);t=(\d+), "hour";r=(\d+);t=(\d+), "day";r=(\d+);t=(\d+)$')


async def test_quota_headers_then_429_with_retry_after(
    http: httpx.AsyncClient, sim_server: SimStart
) -> None:
    """RateLimit counts down per answer; past the minute's quota a 429 says when to retry;
    the next simulated minute has a fresh quota; the data plane does not spend it."""
    sim = await sim_server(_account(1, {"epoch": "2026-12-01T12:00:20Z",
                                        "quota": {"minute": 3, "hour": 100, "day": 1000}},
                                    interval_s=60))
    remaining = []
    for _ in range(3):
        r = await http.get(f"{sim.url}/v2/serverless")
        assert r.status_code == 200
        assert r.headers["RateLimit-Policy"] == '"minute";q=3;w=60, "hour";q=100;w=3600, ' \
                                                '"day";q=1000;w=86400'
        match = _LIMIT.match(r.headers["RateLimit"])
        assert match, r.headers["RateLimit"]
        remaining.append(int(match[1]))
        assert int(match[2]) == 40  # seconds to the minute's end
        await http.get(f"{sim.url}/v2/ep00/health")
    assert remaining == [2, 1, 0]
    r = await http.get(f"{sim.url}/v2/serverless/ep00/workers")
    assert _problem(r, 429)["detail"] == "rate limit exceeded for the minute window"
    assert r.headers["Retry-After"] == "40"
    assert r.headers["RateLimit"].startswith('"minute";r=0;t=40')
    assert sim.v2.throttled == 1
    sim.set_cycle(2)  # one simulated minute later
    r = await http.get(f"{sim.url}/v2/serverless")
    assert r.status_code == 200
    assert _LIMIT.match(r.headers["RateLimit"])[1] == "2"  # type: ignore[index]
    assert _LIMIT.match(r.headers["RateLimit"])[3] == "96"  # type: ignore[index]


async def test_quota_longest_window_wins_and_exempt(
    http: httpx.AsyncClient, sim_server: SimStart
) -> None:
    """Both windows spent: Retry-After is the longest wait. `quota: null` sends no headers,
    and a step can change the quota."""
    scenario = _account(1, {"epoch": "2026-12-01T12:00:00Z",
                            "quota": {"minute": 1, "hour": 1, "day": None}})
    scenario["steps"] = [{"cycles": 1}, {"cycles": 1, "v2": {"quota": None}}]
    sim = await sim_server(scenario)
    assert (await http.get(f"{sim.url}/v2/pods")).headers["RateLimit-Policy"] == \
        '"minute";q=1;w=60, "hour";q=1;w=3600'
    r = await http.get(f"{sim.url}/v2/pods")
    _problem(r, 429)
    assert r.headers["Retry-After"] == "3600"
    assert "hour window" in r.json()["detail"]
    sim.set_cycle(2)
    r = await http.get(f"{sim.url}/v2/pods")
    assert r.status_code == 200
    assert "RateLimit" not in r.headers
    assert "RateLimit-Policy" not in r.headers


# --- faults per route ---------------------------------------------------------------------


async def test_faults_per_route(http: httpx.AsyncClient, sim_server: SimStart) -> None:
    """A fault hits its route only; an endpoint's fault its own routes only; "*" all; a
    faulted answer does not spend the quota; `ok` clears a fault in a later step."""
    scenario = _account(2, {"quota": {"minute": 100}, "faults": {"billing-serverless": 500}})
    scenario["endpoints"][0]["v2"] = {"faults": {"workers": 503, "logs": 404}}
    scenario["steps"] = [
        {"cycles": 1},
        {"cycles": 1, "v2": {"faults": {"*": {"code": 429, "retry_after": 7}}}},
        {"cycles": 1, "v2": {"faults": {"*": "ok", "billing-serverless": "ok"}},
         "endpoints": {"ep00": {"v2": {"faults": {"workers": "ok"}}}}},
    ]
    sim = await sim_server(scenario)
    _problem(await http.get(f"{sim.url}/v2/billing/serverless"), 500)
    r = await http.get(f"{sim.url}/v2/serverless/ep00/workers")
    assert r.status_code == 503
    assert "RateLimit" not in r.headers
    assert (await http.get(f"{sim.url}/v2/serverless/ep01/workers")).status_code == 200
    assert (await http.get(f"{sim.url}/v2/serverless/ep00")).status_code == 200
    assert (await http.get(f"{sim.url}/v2/billing")).status_code == 200
    r = await http.get(f"{sim.url}/v2/serverless")
    assert r.headers["RateLimit"].startswith('"minute";r=96;')  # 4 answered, faults free
    sim.set_cycle(2)
    for path in ("/v2/serverless", "/v2/catalog/gpus", "/v2/network-volumes"):
        r = await http.get(f"{sim.url}{path}")
        _problem(r, 429)
        assert r.headers["Retry-After"] == "7"
    sim.set_cycle(3)
    for path in ("/v2/serverless/ep00/workers", "/v2/billing/serverless", "/v2/serverless"):
        assert (await http.get(f"{sim.url}{path}")).status_code == 200, path


@pytest.mark.parametrize(
    ("fault", "check"),
    [("malformed", "html"), ("timeout", "timeout"), ("reset", "reset"), (401, "problem"),
     (403, "problem"), (502, "html")],
)
async def test_transport_faults(
    http: httpx.AsyncClient, sim_server: SimStart, fault: Any, check: str
) -> None:
    """The transport faults answer like the data plane's: HTML, held, reset."""
    sim = await sim_server(_account(1, {"faults": {"list-endpoints": fault}}), timeout_hold_s=5)
    url = f"{sim.url}/v2/serverless"
    if check == "timeout":
        with pytest.raises(httpx.ReadTimeout):
            await http.get(url, timeout=0.3)
        return
    if check == "reset":
        with pytest.raises(httpx.TransportError):
            await http.get(url)
        return
    r = await http.get(url)
    if check == "html":
        assert r.headers["content-type"].startswith("text/html")
        assert r.status_code == (200 if fault == "malformed" else 502)
    else:
        _problem(r, int(fault))


# --- views derived from scenarios without v2 keys -------------------------------------------


async def test_existing_scenario_serves_derived_workers(
    http: httpx.AsyncClient, sim_server: SimStart
) -> None:
    """Workers follow the /health counts cycle by cycle; one release; billing from spend."""
    sim = await sim_server(SCENARIOS / "busy-healthy-account.yaml")
    sc = sim.scenario
    for cycle in (1, 4, 6, 12, 20):
        sim.set_cycle(cycle)
        for ep in sc.endpoints:
            health = sim.world.health(ep.id, sim.moment())["workers"]
            body = (await http.get(f"{sim.url}/v2/serverless/{ep.id}/workers")).json()
            want = {k: health[k] for k in ("running", "idle", "initializing", "throttled",
                                            "unhealthy")}
            assert {k: body["summary"][k] for k in want} == want, (cycle, ep.id)
            assert body["summary"]["total"] == len(body["workers"]) == sum(want.values())
            assert body["endpointVersion"] == 1
            rel = (await http.get(f"{sim.url}/v2/serverless/{ep.id}/releases")).json()
            assert [r["version"] for r in rel["releases"]] == [1]
    sim.set_cycle(4)
    ids4 = {w["id"] for w in (await http.get(
        f"{sim.url}/v2/serverless/h7w8s9p0r1t2bb/workers")).json()["workers"]}
    sim.set_cycle(20)
    ids20 = {w["id"] for w in (await http.get(
        f"{sim.url}/v2/serverless/h7w8s9p0r1t2bb/workers")).json()["workers"]}
    assert ids4 == ids20  # whisper's workersMin worker never left: the same worker
    ep = (await http.get(f"{sim.url}/v2/serverless/h3l4l5m6c7h8cc")).json()
    assert ep["networkVolumes"] == ["vllm000ks2"]
    assert ep["env"]["HF_TOKEN"] == "{{ RUNPOD_SECRET_hf_token }}"  # the literal reference
    assert ep["gpu"]["pools"] == ["AMPERE_80", "ADA_80_PRO"]
    assert ep["workers"] == {"min": 0, "max": 2, "idleTimeout": 10}


async def test_template_change_makes_a_release_and_stale_workers(
    http: httpx.AsyncClient, sim_server: SimStart
) -> None:
    """A new image is release 2 with its diff; the running worker stays on 1 (stale) until it
    is replaced; billing integrates the scripted spend across steps."""
    scenario = _account(1, {"epoch": "2026-12-01T12:00:00Z"}, interval_s=600)
    scenario["endpoints"][0]["health"] = {"workers": {"running": 1}}
    scenario["endpoints"][0]["v2"] = {"billing": 1.2}
    scenario["steps"] = [
        {"cycles": 1},
        {"cycles": 1, "endpoints": {"ep00": {"config": {"template": {"imageName": "acme/w:2"}},
                                             "v2": {"billing": {"gpu": 2.4, "fee": 0.6}}}}},
        {"cycles": 1, "endpoints": {"ep00": {"health": {"workers": {"running": 0}}}}},
        {"cycles": 1, "endpoints": {"ep00": {"health": {"workers": {"running": 1}}}}},
    ]
    sim = await sim_server(scenario)
    sim.set_cycle(2)
    workers = (await http.get(f"{sim.url}/v2/serverless/ep00/workers")).json()
    assert workers["endpointVersion"] == 2
    [old] = workers["workers"]
    assert (old["version"], old["isStale"], old["image"]) == (1, True, "acme/w:1")
    rel = (await http.get(f"{sim.url}/v2/serverless/ep00/releases")).json()
    assert [r["version"] for r in rel["releases"]] == [2, 1]
    assert rel["releases"][0]["diff"] == [
        {"field": "template.imageName", "old": "acme/w:1", "new": "acme/w:2"}]
    assert rel["releases"][0]["createdAt"] == "2026-12-01T12:10:00Z"
    assert rel["rollout"]["inProgress"] is True
    sim.set_cycle(4)
    [new] = (await http.get(f"{sim.url}/v2/serverless/ep00/workers")).json()["workers"]
    assert (new["version"], new["isStale"], new["image"]) == (2, False, "acme/w:2")
    assert new["id"] != old["id"]
    assert new["startedAt"] == "2026-12-01T12:30:00Z"
    bill = (await http.get(f"{sim.url}/v2/billing/serverless",
                           params={"bucketSize": "hour", "lastN": 1})).json()
    # 10 min at 1.2/h, then 20 min at 3.0/h (gpu 2.4 + fee 0.6)
    [rec] = bill["records"]
    assert rec["totalAmount"] == pytest.approx(0.2 + 1.0)
    assert rec["feeAmount"] == pytest.approx(0.2)
    assert bill["metadata"]["totals"]["totalAmount"] == pytest.approx(1.2)


# --- worker logs ---------------------------------------------------------------------------


async def test_worker_logs_sse(http: httpx.AsyncClient, sim_server: SimStart) -> None:
    """`data: {ts,source,line}` events with ids; tail, source, since and Last-Event-ID."""
    scenario = _account(1, {"logs_hold_s": 0, "epoch": "2026-12-01T12:00:00Z"})
    scenario["endpoints"][0]["v2"] = {
        "workers": [{"id": "w1", "status": "UNHEALTHY", "started_s": -30}],
        "logs": {"w1": [{"t": -30 + i, "source": "system" if i % 2 else "container",
                         "line": f"line {i}"} for i in range(6)]},
    }
    sim = await sim_server(scenario)
    url = f"{sim.url}/v2/serverless/ep00/workers/w1/logs"
    r = await http.get(url)
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["Cache-Control"] == "no-cache"
    events = _events(r.text)
    assert [e["line"] for _, e in events] == [f"line {i}" for i in range(6)]
    assert events[0][0] == "2026-12-01T11:59:30Z/000000000000"
    assert events[0][1]["ts"] == "2026-12-01T11:59:30Z"
    r = await http.get(url, params={"tail": 2, "source": "system"})
    assert [e["line"] for _, e in _events(r.text)] == ["line 3", "line 5"]
    r = await http.get(url, params={"since": "2026-12-01T11:59:33Z"})
    assert [e["line"] for _, e in _events(r.text)] == ["line 3", "line 4", "line 5"]
    r = await http.get(url, headers={"Last-Event-ID": events[3][0]})
    assert [e["line"] for _, e in _events(r.text)] == ["line 4", "line 5"]
    _problem(await http.get(url, params={"tail": 9999}), 422)
    _problem(await http.get(url, params={"source": "both"}), 422)


async def test_worker_logs_stream_stays_open_and_tails(
    http: httpx.AsyncClient, sim_server: SimStart
) -> None:
    """The stream is held open; lines a later step writes arrive on it live."""
    scenario = _account(1, {"logs_hold_s": 10})
    scenario["endpoints"][0]["health"] = {"workers": {"unhealthy": 1}}
    scenario["steps"] = [
        {"cycles": 1},
        {"cycles": 1, "endpoints": {"ep00": {"v2": {"logs": {"*": [
            {"source": "system", "line": "start container (restart 1)"}]}}}}},
    ]
    sim = await sim_server(scenario)
    [w] = (await http.get(f"{sim.url}/v2/serverless/ep00/workers")).json()["workers"]
    got: list[str] = []
    async with http.stream("GET", f"{sim.url}/v2/serverless/ep00/workers/{w['id']}/logs",
                           timeout=5) as r:
        lines = r.aiter_lines()
        async def next_data() -> str:
            async for line in lines:
                if line.startswith("data: "):
                    return line
            raise AssertionError("stream ended")
        got.append(await asyncio.wait_for(next_data(), 2))
        sim.set_cycle(2)
        got.append(await asyncio.wait_for(next_data(), 2))
    assert '"line": "start container"' in got[0]  # the synthesized start line
    assert '"line": "start container (restart 1)"' in got[1]  # written by step 2, live


def _events(text: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((fields["id"], json.loads(fields["data"])))
    return out


# --- billing, catalog, account ----------------------------------------------------------------


async def test_billing_parameters(http: httpx.AsyncClient, sim_server: SimStart) -> None:
    """lastN with startTime is refused; bucket sizes checked; a window is snapped to buckets;
    the account-wide route sums serverless, pods and storage."""
    scenario = _account(1, {"epoch": "2026-12-01T12:30:00Z"},
                        account={"currentSpendPerHr": 1.0},
                        pods=[{"id": "p1", "desiredStatus": "RUNNING", "costPerHr": 0.5}],
                        networkVolumes=[{"id": "v1", "size": 730, "dataCenterId": "US-KS-2"}])
    scenario["endpoints"][0]["health"] = {"workers": {"running": 1}}
    sim = await sim_server(scenario)
    base = f"{sim.url}/v2/billing"
    _problem(await http.get(f"{base}/serverless", params={
        "lastN": 2, "startTime": "2026-12-01T00:00:00Z"}), 400)
    _problem(await http.get(f"{base}/serverless", params={"bucketSize": "minute"}), 422)
    _problem(await http.get(f"{base}/serverless", params={"lastN": "x"}), 422)
    r = (await http.get(f"{base}/serverless", params={
        "bucketSize": "day", "startTime": "2026-11-29T15:00:00Z",
        "endTime": "2026-12-01T01:00:00Z"})).json()
    assert [x["startTime"] for x in r["records"]] == [
        "2026-11-29T00:00:00Z", "2026-11-30T00:00:00Z", "2026-12-01T00:00:00Z"]
    assert r["metadata"]["query"]["endTime"] == "2026-12-02T00:00:00Z"
    acct = (await http.get(base, params={"bucketSize": "hour", "lastN": 1})).json()
    [rec] = acct["records"]
    # half an hour: pod 0.5/h, storage 730 GB * 0.07/730 = 0.07/h, serverless the rest (0.43)
    assert rec["podGpuAmount"] == pytest.approx(0.25)
    assert rec["storageStandardAmount"] == pytest.approx(0.035)
    assert rec["serverlessGpuAmount"] == pytest.approx(0.215)
    assert rec["totalAmount"] == pytest.approx(0.5)
    public = (await http.get(f"{base}/endpoints", params={"lastN": 1})).json()
    assert public["records"] == []  # Public Endpoints, not serverless
    vols = (await http.get(f"{base}/network-volumes", params={"lastN": 1,
                                                               "bucketSize": "hour"})).json()
    assert vols["records"][0]["networkVolumeId"] == "v1"
    assert vols["metadata"]["uniqueNetworkVolumeCount"] == 1


async def test_catalog_rules_and_account_paths(
    http: httpx.AsyncClient, sim_server: SimStart
) -> None:
    """`product` is required with include and valid only with it; the UNCONFIRMED account
    paths answer where the scenario puts them; balance carries the billing mode."""
    scenario = _account(1, {"paths": {"balance": "/v2/user/balance"},
                            "billing_mode": "POSTPAID",
                            "account_limits": {"spendRate": {"limit": 45}}},
                        account={"clientBalance": 12.5, "spendLimit": 80})
    sim = await sim_server(scenario)
    gpus = f"{sim.url}/v2/catalog/gpus"
    _problem(await http.get(gpus, params={"include": "AVAILABILITY"}), 400)
    _problem(await http.get(gpus, params={"product": "SERVERLESS"}), 400)
    _problem(await http.get(gpus, params={"include": "AVAILABILITY", "product": "BOAT"}), 422)
    r = await http.get(gpus, params={"include": "AVAILABILITY", "product": "POD,SERVERLESS"})
    assert all(g["availability"] in ("NONE", "LOW", "MEDIUM", "HIGH") for g in r.json()["gpus"])
    one = (await http.get(f"{gpus}/NVIDIA A40")).json()
    assert (one["pool"], one["memory"]) == ("AMPERE_48", 48)
    dcs = (await http.get(f"{sim.url}/v2/catalog/datacenters",
                          params={"include": "GPU_AVAILABILITY"})).json()["dataCenters"]
    assert {d["id"] for d in dcs} >= {"US-KS-2", "EU-RO-1"}
    assert all(d["gpuAvailability"] for d in dcs)
    assert (await http.get(f"{sim.url}/v2/user/balance")).json() == {
        "balanceAmount": 12.5, "billingMode": "POSTPAID"}
    _problem(await http.get(f"{sim.url}/v2/billing/balance"), 404)
    limits = (await http.get(f"{sim.url}/v2/account/limits")).json()
    assert limits["spendRate"]["limit"] == 45
    assert limits["serverlessWorkers"]["current"] == 1
    assert (await http.get(f"{sim.url}/v2/account")).json()["id"]


# --- a retired GraphQL --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "status"),
    [("retired", 410), ({"retired": 404}, 404), ({"retired": 200, "message": "GraphQL is gone"},
                                                  200)],
)
async def test_graphql_retired_mid_run(
    http: httpx.AsyncClient, sim_server: SimStart, fault: Any, status: int
) -> None:
    """GraphQL answers, then answers that it is retired; REST v2 and the data plane go on."""
    scenario = _account(1)
    scenario["steps"] = [{"cycles": 1}, {"cycles": 1, "graphql": fault}]
    sim = await sim_server(scenario)
    q = {"query": "{ myself { id endpoints { id } } }"}
    r = await http.post(f"{sim.url}/graphql", json=q)
    assert r.json()["data"]["myself"]["endpoints"] == [{"id": "ep00"}]
    sim.set_cycle(2)
    for client_headers in (AUTH, {}):  # gone for every caller, keyed or not
        r = await http.post(f"{sim.url}/graphql", json=q, headers=client_headers)
        assert r.status_code == status
        if status == 200:
            assert r.json() == {"errors": [{"message": "GraphQL is gone"}], "data": None}
        else:
            assert "retired" in _problem(r, status)["detail"]
    assert (await http.get(f"{sim.url}/v2/serverless/ep00")).status_code == 200
    assert (await http.get(f"{sim.url}/v2/ep00/health")).status_code == 200


# --- scenario files ---------------------------------------------------------------------------


def test_v2_example_scenarios_load_and_serve() -> None:
    """Every example with v2 keys loads (the nested ones too)."""
    paths = sorted(SCENARIOS.rglob("*.yaml"))
    with_v2 = [p for p in paths if "\nv2:" in p.read_text() or "    v2:" in p.read_text()]
    assert len(with_v2) >= 2
    for p in with_v2:
        load_scenario(p)


@pytest.mark.parametrize(
    ("v2", "message"),
    [
        ({"quota": {"minute": -1}}, "v2.quota.minute: must be >= 0 (got -1)"),
        ({"faults": {"workers": 418}}, "v2.faults.workers: must be one of ok, 401"),
        ({"epoch": "noon"}, "v2.epoch: must be an RFC 3339 time"),
        ({"paths": {"balance": "billing/balance"}}, "v2.paths.balance"),
        ({"availability": {"ADA_24": "PLENTY"}}, "v2.availability.ADA_24"),
        ({"pagination": {"page_size": 0}}, "v2.pagination.page_size: must be >= 1"),
    ],
)
def test_bad_v2_keys_name_the_field(v2: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError) as exc:
        Scenario.from_dict(_account(1, v2))
    assert str(exc.value).startswith(message), str(exc.value)


def test_bad_endpoint_v2_keys_name_the_field() -> None:
    bad = _account(1)
    bad["endpoints"][0]["v2"] = {"workers": [{"id": "w", "status": "OUTDATED"}]}
    with pytest.raises(ScenarioError, match=r"^endpoints\[0\]\.v2\.workers\[0\]\.status"):
        Scenario.from_dict(bad)
    bad["endpoints"][0]["v2"] = {"releases": [{"version": 0}]}
    with pytest.raises(ScenarioError, match=r"^endpoints\[0\]\.v2\.releases\[0\]\.version"):
        Scenario.from_dict(bad)
