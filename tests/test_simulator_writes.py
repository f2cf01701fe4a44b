"""The simulator's writes over loopback HTTP: `PATCH /v2/serverless/{id}` (validated like
RunPod, applied as a world override that /health, GraphQL and v2 then show, until the
script moves the field itself), and the data plane's cancel and purge-queue."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from conftest import SIM_KEY, SimStart

AUTH = {"Authorization": f"Bearer {SIM_KEY}"}
PROBLEM = "application/problem+json"
EID = "ep0patch0001"
GQL = "query { myself { endpoints { id workersMin workersMax } } }"


def _scenario(steps: list[dict[str, Any]] | None = None, **health: Any) -> dict[str, Any]:
    return {
        "name": "writes",
        "endpoints": [{
            "id": EID, "name": "w", "gpuIds": "ADA_24", "workersMin": 0, "workersMax": 3,
            "health": health or {"jobs": {"inQueue": 4, "inProgress": 1},
                                 "workers": {"running": 1, "idle": 2}},
            "jobs": [
                {"id": "job-run-1", "status": "IN_PROGRESS"},
                {"id": "job-q-1", "status": "IN_QUEUE"},
                {"id": "job-q-2", "status": "IN_QUEUE"},
            ],
        }],
        **({"steps": steps} if steps else {}),
    }


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(headers=AUTH, timeout=5) as client:
        yield client


async def _workers_everywhere(http: httpx.AsyncClient, url: str) -> tuple[Any, ...]:
    """workers (min, max) as v2 and GraphQL show them, and /health's worker total."""
    v2 = (await http.get(f"{url}/v2/serverless/{EID}")).json()["workers"]
    gql = (await http.post(f"{url}/graphql", json={"query": GQL})).json()
    item = gql["data"]["myself"]["endpoints"][0]
    health = (await http.get(f"{url}/v2/{EID}/health")).json()
    return ((v2["min"], v2["max"]), (item["workersMin"], item["workersMax"]),
            sum(health["workers"].values()))


async def test_patch_workers_shows_in_v2_graphql_and_health(
    http: httpx.AsyncClient, sim_server: SimStart
) -> None:
    sim = await sim_server(_scenario())
    assert await _workers_everywhere(http, sim.url) == ((0, 3), (0, 3), 3)
    r = await http.patch(f"{sim.url}/v2/serverless/{EID}", json={"workers": {"min": 0, "max": 0}})
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == EID
    assert body["workers"]["max"] == 0
    assert "requestUrls" in body
    assert await _workers_everywhere(http, sim.url) == ((0, 0), (0, 0), 0)
    assert sim.request_counts[("v2", "update-endpoint")] == 1
    # sending only max keeps min
    r = await http.patch(f"{sim.url}/v2/serverless/{EID}", json={"workers": {"max": 2}})
    assert r.json()["workers"] == {"min": 0, "max": 2, "idleTimeout": 5}
    assert await _workers_everywhere(http, sim.url) == ((0, 2), (0, 2), 2)


async def test_patch_override_holds_until_the_script_moves_the_field(
    http: httpx.AsyncClient, sim_server: SimStart
) -> None:
    steps = [{"cycles": 2},
             {"cycles": 2, "endpoints": {EID: {"health": {"jobs": {"completed": 9}}}}},
             {"cycles": 2, "endpoints": {EID: {"config": {"workersMax": 5}}}}]
    sim = await sim_server(_scenario(steps))
    await http.patch(f"{sim.url}/v2/serverless/{EID}", json={"workers": {"min": 0, "max": 0}})
    sim.set_cycle(3)  # a later step that leaves workersMax alone: the override holds
    assert (await _workers_everywhere(http, sim.url))[0] == (0, 0)
    sim.set_cycle(5)  # the script sets workersMax itself: it wins from then on
    assert await _workers_everywhere(http, sim.url) == ((0, 5), (0, 5), 3)


@pytest.mark.parametrize(("body", "status", "word"), [
    ({"workersMax": 0}, 422, "workersMax"),  # GraphQL's name is not a v2 field
    ({"workers": {"max": "0"}}, 422, "workers.max"),
    ({"workers": {"max": 1, "maximum": 2}}, 422, "workers.maximum"),
    ({"workers": {"min": 3, "max": 1}}, 400, "workers.min"),
    ({"timeout": -1}, 422, "timeout"),
    ({"flashboot": "ON"}, 422, "flashboot"),
    ({"gpu": {}, "cpu": {}}, 400, "gpu"),
    ([1, 2], 422, "body"),
    ({"image": "acme/w:2"}, 501, "image"),
])
async def test_patch_refuses_bad_bodies_and_changes_nothing(
    http: httpx.AsyncClient, sim_server: SimStart, body: Any, status: int, word: str
) -> None:
    sim = await sim_server(_scenario())
    r = await http.patch(f"{sim.url}/v2/serverless/{EID}", json=body)
    assert r.status_code == status
    assert r.headers["content-type"].startswith(PROBLEM)
    assert word in r.json()["detail"]
    assert await _workers_everywhere(http, sim.url) == ((0, 3), (0, 3), 3)


async def test_patch_needs_the_key_and_a_known_endpoint(
    http: httpx.AsyncClient, sim_server: SimStart
) -> None:
    sim = await sim_server(_scenario())
    r = await http.patch(f"{sim.url}/v2/serverless/{EID}", json={"workers": {"max": 0}},
                         headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    r = await http.patch(f"{sim.url}/v2/serverless/nosuchendpoint", json={"name": "x"})
    assert r.status_code == 404
    r = await http.delete(f"{sim.url}/v2/serverless/{EID}")
    assert r.status_code == 405
    assert r.headers["Allow"] == "GET, PATCH"
    assert await _workers_everywhere(http, sim.url) == ((0, 3), (0, 3), 3)


async def test_patch_name_scaling_timeout(http: httpx.AsyncClient, sim_server: SimStart) -> None:
    sim = await sim_server(_scenario())
    r = await http.patch(f"{sim.url}/v2/serverless/{EID}", json={
        "name": "renamed", "timeout": 60000,
        "scaling": {"type": "REQUEST_COUNT", "requestCount": 3}})
    assert r.status_code == 200
    got = (await http.get(f"{sim.url}/v2/serverless/{EID}")).json()
    assert got["name"] == "renamed"
    assert got["timeout"] == 60000
    assert got["scaling"] == {"type": "REQUEST_COUNT", "requestCount": 3}
    r = await http.patch(f"{sim.url}/v2/serverless/{EID}", json={"workers": {"idleTimeout": 9}})
    assert r.status_code == 422  # idleTimeout with REQUEST_COUNT


async def test_purge_queue_empties_the_queue_in_health_and_requests(
    http: httpx.AsyncClient, sim_server: SimStart
) -> None:
    sim = await sim_server(_scenario())
    r = await http.post(f"{sim.url}/v2/{EID}/purge-queue")
    assert r.status_code == 200
    assert r.json()["removed"] == 4
    health = (await http.get(f"{sim.url}/v2/{EID}/health")).json()
    assert health["jobs"]["inQueue"] == 0
    assert health["jobs"]["inProgress"] == 1
    jobs = (await http.get(f"{sim.url}/v2/{EID}/requests")).json()["requests"]
    assert [j["id"] for j in jobs] == ["job-run-1"]
    assert (await http.get(f"{sim.url}/v2/{EID}/status/job-q-1")).status_code == 404


async def test_cancel_ends_a_running_job_and_its_count(
    http: httpx.AsyncClient, sim_server: SimStart
) -> None:
    sim = await sim_server(_scenario())
    r = await http.post(f"{sim.url}/v2/{EID}/cancel/job-run-1")
    assert r.json() == {"id": "job-run-1", "status": "CANCELLED"}
    assert (await http.get(f"{sim.url}/v2/{EID}/status/job-run-1")).json()["status"] == "CANCELLED"
    health = (await http.get(f"{sim.url}/v2/{EID}/health")).json()
    assert health["jobs"]["inProgress"] == 0
    assert health["jobs"]["inQueue"] == 4
    # a second cancel of a finished job keeps its status and the counts
    r = await http.post(f"{sim.url}/v2/{EID}/cancel/job-run-1")
    assert r.json()["status"] == "CANCELLED"
    assert (await http.get(f"{sim.url}/v2/{EID}/health")).json()["jobs"]["inProgress"] == 0
