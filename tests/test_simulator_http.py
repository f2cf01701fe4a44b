"""The simulator over real loopback HTTP: shapes, auth, faults, merges, jobs and the clock."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SIM_KEY, SimStart

AUTH = {"Authorization": f"Bearer {SIM_KEY}"}
JOB_KEYS = {"completed", "failed", "inProgress", "inQueue", "retried"}
WORKER_KEYS = {"idle", "initializing", "ready", "running", "throttled", "unhealthy"}
ENDPOINTS_QUERY = (
    "{ myself { clientBalance endpoints { id gpuIds workersMax template { imageName } } } }"
)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """One client per test, carrying the key (a new client per call is slow: TLS setup)."""
    async with httpx.AsyncClient(headers=AUTH, timeout=5) as client:
        yield client


async def _gql(http: httpx.AsyncClient, url: str, query: str, **kw: Any) -> httpx.Response:
    return await http.post(f"{url}/graphql", json={"query": query}, **kw)


def _one(rest: Any = "ok", graphql: Any = "ok", **endpoint: Any) -> dict[str, Any]:
    """A scenario with one endpoint `ep1` whose single step carries the given faults."""
    return {
        "name": "one",
        "endpoints": [{"id": "ep1", "name": "one", **endpoint}],
        "steps": [{"cycles": 1, "graphql": graphql, "endpoints": {"ep1": {"rest": rest}}}],
    }


async def test_health_has_runpods_exact_shape(
    http: httpx.AsyncClient, sim_server: SimStart, sim_scenarios_dir: Path
) -> None:
    """/health answers both objects with every RunPod key, all ints, omitted counts 0."""
    sim = await sim_server(sim_scenarios_dir / "throttled-capacity.yaml")
    sim.set_cycle(3)
    r = await http.get(f"{sim.url}/v2/ep7throttle1/health")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"jobs", "workers"}
    assert set(body["jobs"]) == JOB_KEYS
    assert set(body["workers"]) == WORKER_KEYS
    assert all(type(v) is int for part in body.values() for v in part.values())
    assert body == {
        "jobs": {"completed": 40, "failed": 0, "inProgress": 0, "inQueue": 2, "retried": 0},
        "workers": {
            "idle": 0,
            "initializing": 0,
            "ready": 0,
            "running": 0,
            "throttled": 1,
            "unhealthy": 0,
        },
    }
    sparse = await sim_server({"name": "sparse", "endpoints": [{"id": "ep1"}]})
    r = await http.get(f"{sparse.url}/v2/ep1/health")
    assert r.json()["workers"] == dict.fromkeys(WORKER_KEYS, 0)


async def test_auth_required_and_key_never_echoed(sim_server: SimStart) -> None:
    """No key or another key is 401 on both APIs; Bearer, bare and ?api_key= keys work."""
    sim = await sim_server(_one())
    query = {"query": "{ myself { id } }"}
    async with httpx.AsyncClient(timeout=5) as anon:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "wrong"}):
            r = await anon.get(f"{sim.url}/v2/ep1/health", headers=headers)
            assert (r.status_code, r.json()) == (401, {"error": "Unauthorized"})
            g = await anon.post(f"{sim.url}/graphql", json=query, headers=headers)
            assert g.status_code == 401
        bare = await anon.get(f"{sim.url}/v2/ep1/health", headers={"Authorization": SIM_KEY})
        assert bare.status_code == 200
        r = await anon.post(f"{sim.url}/graphql?api_key={SIM_KEY}", json=query)
        assert r.status_code == 200
        assert r.json()["data"]["myself"]["id"]
        wrong = await anon.post(f"{sim.url}/graphql?api_key=nope", json=query)
        assert wrong.status_code == 401
        assert SIM_KEY not in wrong.text
        assert "nope" not in wrong.text


REST_FAULTS = [
    (401, 401, "application/json", {"error": "Unauthorized"}),
    (403, 403, "application/json", {"error": "Forbidden"}),
    (404, 404, "application/json", {"message": "Not Found"}),
    (429, 429, "application/json", {"error": "Too Many Requests"}),
    (500, 500, "application/json", {"error": "Internal Server Error"}),
    (502, 502, "text/html", None),
    (503, 503, "text/plain", None),
    ("malformed", 200, "text/html", None),
]


@pytest.mark.parametrize(("fault", "status", "ctype", "body"), REST_FAULTS)
async def test_rest_faults(
    http: httpx.AsyncClient, sim_server: SimStart, fault: Any, status: int, ctype: str, body: Any
) -> None:
    """Each REST fault answers its status, content type and body on every data-plane call."""
    sim = await sim_server(_one(rest=fault))
    for path in ("health", "requests", "status/any-job"):
        r = await http.get(f"{sim.url}/v2/ep1/{path}")
        assert r.status_code == status
        assert r.headers["content-type"].startswith(ctype)
        if body is not None:
            assert r.json() == body
        else:
            with pytest.raises(ValueError, match="Expecting value"):
                r.json()
        assert ("retry-after" in r.headers) == (status == 429)
    if status == 429:
        assert r.headers["retry-after"] == "2"


GQL_FAULTS = [
    (401, 401, {"errors": [{"message": "Unauthorized"}]}),
    (403, 403, {"errors": [{"message": "Forbidden"}]}),
    (429, 429, {"errors": [{"message": "Too Many Requests"}]}),
    (500, 500, {"errors": [{"message": "Internal Server Error"}]}),
    (502, 502, None),
    (503, 503, None),
    ("malformed", 200, None),
    (
        {"errors": "Something went wrong"},
        200,
        {"errors": [{"message": "Something went wrong"}], "data": None},
    ),
]


@pytest.mark.parametrize(("fault", "status", "body"), GQL_FAULTS)
async def test_graphql_faults(
    http: httpx.AsyncClient, sim_server: SimStart, fault: Any, status: int, body: Any
) -> None:
    """Each GraphQL fault applies to every query, `gpuTypes` included."""
    sim = await sim_server(_one(graphql=fault))
    for query in ("{ myself { id } }", "{ gpuTypes { id } }"):
        r = await _gql(http, sim.url, query)
        assert r.status_code == status
        if body is not None:
            assert r.json() == body
        else:
            assert not r.headers["content-type"].startswith("application/json")
        if status == 429:
            assert r.headers["retry-after"] == "2"


async def test_retry_after_is_configurable(http: httpx.AsyncClient, sim_server: SimStart) -> None:
    """`{code: 429, retry_after: 7}` sends Retry-After: 7."""
    sim = await sim_server(_one(rest={"code": 429, "retry_after": 7}))
    r = await http.get(f"{sim.url}/v2/ep1/health")
    assert (r.status_code, r.headers["retry-after"]) == (429, "7")


@pytest.mark.parametrize("api", ["rest", "graphql"])
async def test_timeout_fault_holds_until_client_gives_up(
    http: httpx.AsyncClient, sim_server: SimStart, api: str
) -> None:
    """`timeout` sends nothing: a client with a short timeout times out, stop() stays quick."""
    sim = await sim_server(_one(**{api: "timeout"}), timeout_hold_s=20)
    started = time.monotonic()
    if api == "rest":
        call = http.get(f"{sim.url}/v2/ep1/health", timeout=0.3)
    else:
        call = _gql(http, sim.url, "{ myself { id } }", timeout=0.3)
    with pytest.raises(httpx.ReadTimeout):
        await call
    assert time.monotonic() - started < 5
    stop_started = time.monotonic()
    await sim.stop()
    assert time.monotonic() - stop_started < 2


async def test_timeout_hold_ends_with_504(http: httpx.AsyncClient, sim_server: SimStart) -> None:
    """A patient client gets 504 once timeout_hold_s has passed."""
    sim = await sim_server(_one(rest="timeout"), timeout_hold_s=0.2)
    r = await http.get(f"{sim.url}/v2/ep1/health", timeout=5)
    assert r.status_code == 504


@pytest.mark.parametrize("api", ["rest", "graphql"])
async def test_reset_fault_drops_the_connection(
    http: httpx.AsyncClient, sim_server: SimStart, api: str
) -> None:
    """`reset` closes the TCP connection with no response at all."""
    sim = await sim_server(_one(**{api: "reset"}))
    if api == "rest":
        call = http.get(f"{sim.url}/v2/ep1/health")
    else:
        call = _gql(http, sim.url, "{ myself { id } }")
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        await call
    # The server lives on: the other API still answers.
    if api == "rest":
        assert (await _gql(http, sim.url, "{ myself { id } }")).status_code == 200
    else:
        assert (await http.get(f"{sim.url}/v2/ep1/health")).status_code == 200


async def test_merge_semantics_across_steps(http: httpx.AsyncClient, sim_server: SimStart) -> None:
    """health/config deep-merge, jobs replace, account merges, faults persist until changed."""
    sim = await sim_server(
        {
            "name": "merge",
            "account": {"clientBalance": 10.0, "spendLimit": 80},
            "endpoints": [
                {
                    "id": "ep1",
                    "gpuIds": "AMPERE_48",
                    "workersMax": 1,
                    "template": {
                        "id": "t1",
                        "imageName": "img:1",
                        "env": [{"key": "A", "value": "1"}],
                    },
                    "health": {"workers": {"idle": 1, "ready": 1}},
                    "jobs": [
                        {"id": "j1", "status": "IN_QUEUE"},
                        {"id": "j2", "status": "IN_QUEUE"},
                    ],
                }
            ],
            "steps": [
                {"cycles": 1},
                {
                    "cycles": 1,
                    "account": {"clientBalance": 9.5},
                    "endpoints": {
                        "ep1": {
                            "health": {"jobs": {"inQueue": 3}, "workers": {"idle": 0}},
                            "config": {
                                "gpuIds": "AMPERE_48,ADA_48_PRO",
                                "template": {"imageName": "img:2"},
                            },
                            "jobs": [{"id": "j3", "status": "COMPLETED"}],
                            "rest": 503,
                        }
                    },
                },
                {"cycles": 1, "endpoints": {"ep1": {"health": {"workers": {"running": 2}}}}},
                {"cycles": 1, "endpoints": {"ep1": {"rest": "ok"}}},
            ],
        }
    )
    query = (
        "{ myself { clientBalance spendLimit endpoints { gpuIds workersMax "
        "template { id imageName env { key value } } } } }"
    )
    sim.set_cycle(2)
    me = (await _gql(http, sim.url, query)).json()["data"]["myself"]
    assert (me["clientBalance"], me["spendLimit"]) == (9.5, 80.0)
    ep = me["endpoints"][0]
    assert (ep["gpuIds"], ep["workersMax"]) == ("AMPERE_48,ADA_48_PRO", 1)
    assert ep["template"] == {"id": "t1", "imageName": "img:2", "env": [{"key": "A", "value": "1"}]}
    assert (await http.get(f"{sim.url}/v2/ep1/health")).status_code == 503
    sim.set_cycle(3)
    assert (await http.get(f"{sim.url}/v2/ep1/health")).status_code == 503  # persists
    sim.set_cycle(4)
    health = (await http.get(f"{sim.url}/v2/ep1/health")).json()
    assert health["jobs"]["inQueue"] == 3
    assert health["workers"] == {
        "idle": 0,
        "initializing": 0,
        "ready": 1,
        "running": 2,
        "throttled": 0,
        "unhealthy": 0,
    }
    jobs = (await http.get(f"{sim.url}/v2/ep1/requests")).json()["requests"]
    assert [j["id"] for j in jobs] == ["j3"]


async def test_queued_jobs_delay_grows_then_freezes(
    http: httpx.AsyncClient, sim_server: SimStart, sim_scenarios_dir: Path
) -> None:
    """An IN_QUEUE job reports ms since first seen, growing; IN_PROGRESS freezes it."""
    sim = await sim_server(sim_scenarios_dir / "throttled-capacity.yaml")

    async def job(k: int, job_id: str) -> dict[str, Any]:
        sim.set_cycle(k)
        r = await http.get(f"{sim.url}/v2/ep7throttle1/status/{job_id}")
        assert r.status_code == 200
        body: dict[str, Any] = r.json()
        return body

    # j-1 first appears at cycle 3 (t = 60 s) and is picked up at cycle 15 (t = 420 s).
    assert await job(3, "j-1") == {"id": "j-1", "status": "IN_QUEUE", "delayTime": 0}
    assert (await job(4, "j-1"))["delayTime"] == 30_000
    assert (await job(14, "j-1"))["delayTime"] == 330_000
    assert await job(15, "j-1") == {
        "id": "j-1",
        "status": "IN_PROGRESS",
        "delayTime": 360_000,
        "workerId": "w-1",
    }
    assert (await job(17, "j-1"))["delayTime"] == 360_000
    assert (await job(17, "j-2"))["delayTime"] == 420_000
    listed = (await http.get(f"{sim.url}/v2/ep7throttle1/requests")).json()
    assert [(j["id"], j["status"]) for j in listed["requests"]] == [
        ("j-1", "IN_PROGRESS"),
        ("j-2", "IN_QUEUE"),
    ]
    sim.set_cycle(18)
    r = await http.get(f"{sim.url}/v2/ep7throttle1/status/j-1")
    assert (r.status_code, r.json()) == (404, {"error": "request does not exist"})


async def test_removed_and_unknown_endpoints_answer_404(
    http: httpx.AsyncClient, sim_server: SimStart, sim_scenarios_dir: Path
) -> None:
    """Removed, never-listed and not-yet-added ids answer 404 Not Found; GraphQL follows."""
    sim = await sim_server(
        {
            "name": "remove",
            "endpoints": [{"id": "old1"}],
            "steps": [
                {"cycles": 1},
                {"cycles": 1, "remove_endpoints": ["old1"], "add_endpoints": [{"id": "new1"}]},
            ],
        }
    )
    assert (await http.get(f"{sim.url}/v2/new1/health")).json() == {"message": "Not Found"}
    sim.set_cycle(2)
    for eid in ("old1", "never-listed"):
        r = await http.get(f"{sim.url}/v2/{eid}/health")
        assert (r.status_code, r.json()) == (404, {"message": "Not Found"})
    assert (await http.get(f"{sim.url}/v2/new1/health")).status_code == 200
    ids = (await _gql(http, sim.url, "{ myself { endpoints { id } } }")).json()
    assert ids == {"data": {"myself": {"endpoints": [{"id": "new1"}]}}}
    r = await http.get(f"{sim.url}/v2/new1/no-such-op")
    assert (r.status_code, r.json()) == (404, {"message": "Not Found"})


async def test_run_then_status_progresses_in_manual_time(
    http: httpx.AsyncClient, sim_server: SimStart
) -> None:
    """/run queues; a worker takes it when the script shows one; done after job_ms."""
    sim = await sim_server(
        {
            "name": "run",
            "endpoints": [{"id": "ep1", "job_ms": 45_000}],
            "steps": [
                {"cycles": 1},
                {"cycles": 3, "endpoints": {"ep1": {"health": {"workers": {"idle": 1}}}}},
            ],
        }
    )
    r = await http.post(f"{sim.url}/v2/ep1/run", json={"input": {"prompt": "hi"}})
    assert r.status_code == 200
    sub = r.json()
    assert sub["status"] == "IN_QUEUE"
    assert sub["id"].endswith("-u1")
    assert len(sub["id"]) == 39

    async def status(k: int) -> dict[str, Any]:
        sim.set_cycle(k)
        body: dict[str, Any] = (await http.get(f"{sim.url}/v2/ep1/status/{sub['id']}")).json()
        return body

    assert await status(1) == {"id": sub["id"], "status": "IN_QUEUE", "delayTime": 0}
    at2 = await status(2)
    assert (at2["status"], at2["delayTime"]) == ("IN_PROGRESS", 30_000)
    assert at2["workerId"]
    health = (await http.get(f"{sim.url}/v2/ep1/health")).json()
    assert (health["jobs"]["inProgress"], health["jobs"]["inQueue"]) == (1, 0)
    assert (await status(3))["status"] == "IN_PROGRESS"
    done = await status(4)
    assert done["status"] == "COMPLETED"
    assert (done["delayTime"], done["executionTime"], done["output"]) == (
        30_000,
        45_000,
        {"prompt": "hi"},
    )
    assert (await http.get(f"{sim.url}/v2/ep1/health")).json()["jobs"]["completed"] == 1
    assert (await status(1))["status"] == "IN_QUEUE"  # going back replays the same history
    bad = await http.post(f"{sim.url}/v2/ep1/run", json={"no": "input"})
    assert bad.status_code == 400


async def test_runsync_stream_cancel_and_retry(
    http: httpx.AsyncClient, sim_server: SimStart
) -> None:
    """runsync in manual time answers at once; stream, cancel and retry act on the list."""
    sim = await sim_server(
        {
            "name": "ops",
            "endpoints": [
                {
                    "id": "ep1",
                    "jobs": [
                        {
                            "id": "bad-1",
                            "status": "FAILED",
                            "error": "boom",
                            "delayTime": 5,
                            "executionTime": 9,
                        },
                        {"id": "done-1", "status": "COMPLETED", "delayTime": 5, "executionTime": 9},
                    ],
                }
            ],
        }
    )
    sync = (await http.post(f"{sim.url}/v2/ep1/runsync?wait=1000", json={"input": {"n": 1}})).json()
    assert sync["id"].startswith("sync-")
    assert sync["status"] == "IN_QUEUE"
    stream = (await http.get(f"{sim.url}/v2/ep1/stream/{sync['id']}")).json()
    assert stream == {"status": "IN_QUEUE", "stream": []}
    cancelled = (await http.post(f"{sim.url}/v2/ep1/cancel/{sync['id']}")).json()
    assert cancelled == {"id": sync["id"], "status": "CANCELLED"}
    assert (await http.get(f"{sim.url}/v2/ep1/status/{sync['id']}")).json()["status"] == "CANCELLED"
    again = (await http.post(f"{sim.url}/v2/ep1/cancel/done-1")).json()
    assert again == {"id": "done-1", "status": "COMPLETED"}
    retried = await http.post(f"{sim.url}/v2/ep1/retry/bad-1")
    assert retried.json() == {"id": "bad-1", "status": "IN_QUEUE"}
    assert (await http.get(f"{sim.url}/v2/ep1/status/bad-1")).json()["status"] == "IN_QUEUE"
    assert (await http.post(f"{sim.url}/v2/ep1/retry/done-1")).status_code == 400
    missing = await http.post(f"{sim.url}/v2/ep1/cancel/nope")
    assert (missing.status_code, missing.json()) == (404, {"error": "request does not exist"})


async def test_purge_removes_queued_jobs(
    http: httpx.AsyncClient, sim_server: SimStart, sim_scenarios_dir: Path
) -> None:
    """purge-queue counts the queued jobs; their /status then says the request does not exist."""
    sim = await sim_server(sim_scenarios_dir / "throttled-capacity.yaml")
    sim.set_cycle(4)
    await http.post(f"{sim.url}/v2/ep7throttle1/run", json={"input": {}})
    r = await http.post(f"{sim.url}/v2/ep7throttle1/purge-queue")
    assert r.json() == {"removed": 3, "status": "completed"}
    gone = await http.get(f"{sim.url}/v2/ep7throttle1/status/j-1")
    assert (gone.status_code, gone.json()) == (404, {"error": "request does not exist"})
    assert (await http.get(f"{sim.url}/v2/ep7throttle1/requests")).json() == {"requests": []}
    sim.set_cycle(3)  # before the purge the jobs were there
    assert (await http.get(f"{sim.url}/v2/ep7throttle1/status/j-1")).status_code == 200


async def test_graphql_arbitrary_selection_and_unknown_field(
    http: httpx.AsyncClient, sim_server: SimStart, sim_scenarios_dir: Path
) -> None:
    """Any selection of modelled fields resolves; unmodelled ones are null; unknown is a 400."""
    sim = await sim_server(sim_scenarios_dir / "healthy-traffic.yaml")
    query = """query Q($id: String!) {
      myself { id email clientBalance currentSpendPerHr spendLimit underBalance minBalance
        maxServerlessConcurrency serverlessDiscount { discountFactor }
        networkVolumes { id name size dataCenterId } pods { id name desiredStatus costPerHr }
        endpoints { id name gpuIds workersMin workersMax workersStandby idleTimeout scalerType
          scalerValue networkVolumeId locations templateId version
          networkVolume { id dataCenterId }
          template { id name imageName dockerArgs containerDiskInGb env { key value } } }
        endpoint(id: $id) { name }
      }
      gpuTypes(input: {ids: ["NVIDIA A40"]}) { id displayName memoryInGb
        lowestPrice(input: {gpuCount: 1}) { stockStatus uninterruptablePrice } }
    }"""
    r = await http.post(
        f"{sim.url}/graphql", json={"query": query, "variables": {"id": "ep7healthy01"}}
    )
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    me = data["myself"]
    assert (me["clientBalance"], me["currentSpendPerHr"], me["spendLimit"]) == (250.0, 0.047, 80.0)
    assert (me["underBalance"], me["serverlessDiscount"]) == (None, None)
    assert me["networkVolumes"] == [
        {"id": "vol-tx3", "name": "models", "size": 50, "dataCenterId": "US-TX-3"}
    ]
    ep = me["endpoints"][0]
    assert (ep["templateId"], ep["workersStandby"]) == ("tpl-sdxl", None)
    assert ep["networkVolume"] == {"id": "vol-tx3", "dataCenterId": "US-TX-3"}
    assert ep["template"]["env"][0] == {"key": "HF_HOME", "value": "/runpod-volume/huggingface"}
    assert me["endpoint"] == {"name": "sdxl-images"}
    assert data["gpuTypes"] == [
        {
            "id": "NVIDIA A40",
            "displayName": "A40",
            "memoryInGb": 48,
            "lowestPrice": {"stockStatus": "High", "uninterruptablePrice": 0.4},
        }
    ]
    bad = await _gql(http, sim.url, "{ myself { id noSuchField } }")
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["message"] == "Cannot query field 'noSuchField' on type 'User'."
    syntax = await _gql(http, sim.url, "{ myself { id ")
    assert syntax.status_code == 400
    assert syntax.json()["errors"][0]["message"]


async def test_scenario_can_override_gpu_stock(
    http: httpx.AsyncClient, sim_server: SimStart
) -> None:
    """gpuTypes entries in a scenario merge into the built-in catalog by id, per step."""
    sim = await sim_server(
        {
            "name": "stock",
            "steps": [
                {"cycles": 1},
                {
                    "cycles": 1,
                    "gpuTypes": [{"id": "NVIDIA A40", "lowestPrice": {"stockStatus": "None"}}],
                },
            ],
        }
    )
    query = '{ gpuTypes(input: {id: "NVIDIA A40"}) { lowestPrice { stockStatus } } }'
    stock = [(await _gql(http, sim.url, query)).json()["data"]["gpuTypes"][0]["lowestPrice"]]
    sim.set_cycle(2)
    stock.append((await _gql(http, sim.url, query)).json()["data"]["gpuTypes"][0]["lowestPrice"])
    assert stock == [{"stockStatus": "High"}, {"stockStatus": "None"}]


async def test_set_cycle_back_and_forth_is_deterministic(
    http: httpx.AsyncClient, sim_server: SimStart, sim_scenarios_dir: Path
) -> None:
    """Visiting cycles in any order gives the same answers as visiting them in order."""
    sim = await sim_server(sim_scenarios_dir / "balance-exhausted.yaml")

    async def snapshot(k: int) -> tuple[Any, ...]:
        sim.set_cycle(k)
        gql = (await _gql(http, sim.url, ENDPOINTS_QUERY)).json()
        out: list[Any] = [sim.cycle, sim.now_s, gql]
        for eid in ("ep7oldbroke1", "ep7newfresh2"):
            r = await http.get(f"{sim.url}/v2/{eid}/health")
            out.append((r.status_code, r.json()))
        return tuple(out)

    forward = {k: await snapshot(k) for k in range(1, 22)}
    for k in (21, 3, 15, 1, 9, 4, 16, 21, 2):
        assert await snapshot(k) == forward[k]
    assert forward[4][3] == (404, {"message": "Not Found"})
    assert forward[16][2]["data"]["myself"]["endpoints"][0]["id"] == "ep7newfresh2"
    assert forward[1][2]["data"]["myself"]["clientBalance"] == 0.4
    assert (sim.cycle, sim.now_s) == (2, 30.0)


async def test_request_counts(http: httpx.AsyncClient, sim_server: SimStart) -> None:
    """Every call is counted by (endpoint or "graphql", operation), faults and 401s included."""
    sim = await sim_server(_one(rest=500))
    await http.get(f"{sim.url}/v2/ep1/health")
    async with httpx.AsyncClient() as anon:
        await anon.get(f"{sim.url}/v2/ep1/health")
    await http.get(f"{sim.url}/v2/ep1/requests")
    await _gql(http, sim.url, "{ myself { id } gpuTypes { id } }")
    await _gql(http, sim.url, "{ myself { id } }")
    assert sim.request_counts == {
        ("ep1", "health"): 2,
        ("ep1", "requests"): 1,
        ("graphql", "myself"): 2,
        ("graphql", "gpuTypes"): 1,
    }


async def test_realtime_clock_advances_and_caps(
    http: httpx.AsyncClient, sim_server: SimStart
) -> None:
    """In realtime the cycle follows the wall clock and the last step then holds."""
    sim = await sim_server(
        {
            "name": "rt",
            "interval_s": 0.15,
            "endpoints": [{"id": "ep1"}],
            "steps": [
                {"cycles": 1},
                {"cycles": 1, "endpoints": {"ep1": {"health": {"workers": {"idle": 4}}}}},
            ],
        },
        realtime=True,
    )
    assert sim.cycle == 1
    await asyncio.sleep(0.2)
    assert sim.cycle == 2
    assert (await http.get(f"{sim.url}/v2/ep1/health")).json()["workers"]["idle"] == 4
    await asyncio.sleep(0.2)
    assert sim.cycle == 2
    assert sim.now_s > 0.35


def test_simulate_command_serves_until_sigterm(tmp_path: Path) -> None:
    """`simulate_main` prints its URLs, serves in realtime, and exits 0 on SIGTERM."""
    scenario = tmp_path / "s.yaml"
    scenario.write_text("name: cli\nendpoints: [{id: ep1}]\n", encoding="utf-8")
    code = (
        "import sys; from monitor.simulator.cli import simulate_main; "
        f"sys.exit(simulate_main({str(scenario)!r}, 0, 0.5, None))"
    )
    env = {**os.environ, "RUNPOD_API_KEY": SIM_KEY}
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        graphql_url = lines[1].split()[-1]
        r = httpx.post(graphql_url, json={"query": "{ myself { endpoints { id } } }"}, headers=AUTH)
        assert r.json() == {"data": {"myself": {"endpoints": [{"id": "ep1"}]}}}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert SIM_KEY not in "".join(lines) + proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
