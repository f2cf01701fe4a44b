"""RunPod's own SDK, unchanged, judges the simulator: every call it makes must work."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from monitor.simulator import BackgroundSimulator, Scenario, SimulatorServer

KEY = "sdk-test-key-abcdef"
SCENARIO: dict[str, Any] = {
    "name": "sdk",
    "interval_s": 3600,  # one long cycle: only the jobs move, with the wall clock
    "account": {"clientBalance": 42.5, "currentSpendPerHr": 0.047, "pubKey": "ssh-ed25519 AAA"},
    "networkVolumes": [{"id": "vol1", "name": "models", "size": 50, "dataCenterId": "US-TX-3"}],
    "pods": [
        {
            "id": "pod1",
            "name": "dev",
            "desiredStatus": "RUNNING",
            "costPerHr": 0.4,
            "gpuCount": 1,
            "env": [{"key": "A", "value": "1"}],
        }
    ],
    "endpoints": [
        {
            "id": "ep-busy",
            "name": "busy",
            "gpuIds": "AMPERE_48",
            "networkVolumeId": "vol1",
            "workersMin": 0,
            "workersMax": 2,
            "job_ms": 300,
            "template": {"id": "tpl1", "name": "worker", "imageName": "user/worker:1"},
            "env": [{"key": "A", "value": "1"}],
            "health": {"workers": {"idle": 1, "ready": 1}},
        },
        {
            "id": "ep-cold",
            "name": "cold",
            "gpuIds": "ADA_24",
            "workersMax": 1,
            "jobs": [{"id": "q-1", "status": "IN_QUEUE"}, {"id": "q-2", "status": "IN_QUEUE"}],
            "health": {"jobs": {"inQueue": 2}},
        },
    ],
}


@pytest.fixture(scope="module")
def sim_sdk() -> Iterator[tuple[ModuleType, SimulatorServer]]:
    """A realtime simulator on its own loop in a thread, and the SDK pointed at it."""
    server = SimulatorServer(Scenario.from_dict(SCENARIO), KEY, realtime=True)
    with BackgroundSimulator(server) as bg, pytest.MonkeyPatch.context() as mp:
        # The SDK reads RUNPOD_API_BASE_URL on every GraphQL call (and appends /graphql), but
        # copies the data-plane base into `runpod.endpoint_url_base` at import: patch both.
        mp.setenv("RUNPOD_API_BASE_URL", bg.server.url)
        import runpod

        mp.setattr(runpod, "endpoint_url_base", f"{bg.server.url}/v2")
        mp.setattr(runpod, "api_key", KEY)
        yield runpod, server


def test_get_user(sim_sdk: tuple[ModuleType, SimulatorServer]) -> None:
    """get_user() reads myself { id pubKey networkVolumes }."""
    runpod, _ = sim_sdk
    user = runpod.get_user()
    assert user["pubKey"] == "ssh-ed25519 AAA"
    assert user["id"]
    assert user["networkVolumes"] == [
        {"id": "vol1", "name": "models", "size": 50, "dataCenterId": "US-TX-3"}
    ]


def test_get_endpoints(sim_sdk: tuple[ModuleType, SimulatorServer]) -> None:
    """get_endpoints() selects every field of its query; unmodelled ones come back null."""
    runpod, _ = sim_sdk
    endpoints = runpod.get_endpoints()
    assert [e["id"] for e in endpoints] == ["ep-busy", "ep-cold"]
    busy = endpoints[0]
    assert (busy["gpuIds"], busy["workersMax"], busy["templateId"]) == ("AMPERE_48", 2, "tpl1")
    assert busy["networkVolume"] == {"id": "vol1", "dataCenterId": "US-TX-3"}
    assert busy["env"] == [{"key": "A", "value": "1"}]
    assert busy["aiKey"] is None


def test_get_gpus_and_gpu(sim_sdk: tuple[ModuleType, SimulatorServer]) -> None:
    """get_gpus() lists the catalog; get_gpu(id) selects prices and lowestPrice."""
    runpod, _ = sim_sdk
    gpus = runpod.get_gpus()
    assert {"id": "NVIDIA A40", "displayName": "A40", "memoryInGb": 48} in gpus
    one = runpod.get_gpu("NVIDIA GeForce RTX 4090", 2)
    assert one["id"] == "NVIDIA GeForce RTX 4090"
    assert one["lowestPrice"]["uninterruptablePrice"] > 0
    with pytest.raises(ValueError, match="No GPU found"):
        runpod.get_gpu("NVIDIA NOPE")


def test_endpoint_health(sim_sdk: tuple[ModuleType, SimulatorServer]) -> None:
    """Endpoint(id).health() gets RunPod's /health shape."""
    runpod, _ = sim_sdk
    health = runpod.Endpoint("ep-cold").health()
    assert health["jobs"]["inQueue"] == 2
    assert set(health["workers"]) == {
        "idle",
        "initializing",
        "ready",
        "running",
        "throttled",
        "unhealthy",
    }


def test_run_status_output(sim_sdk: tuple[ModuleType, SimulatorServer]) -> None:
    """run() queues a job; status() moves on with the clock; output() echoes the input."""
    runpod, _ = sim_sdk
    job = runpod.Endpoint("ep-busy").run({"prompt": "a cat"})
    assert job.status() in ("IN_QUEUE", "IN_PROGRESS")
    assert job.output(timeout=5) == {"prompt": "a cat"}
    assert job.status() == "COMPLETED"


def test_run_sync(sim_sdk: tuple[ModuleType, SimulatorServer]) -> None:
    """run_sync() waits server-side in /runsync and returns the output."""
    runpod, server = sim_sdk
    before = server.request_counts[("ep-busy", "status")]
    assert runpod.Endpoint("ep-busy").run_sync({"input": {"n": 7}}, timeout=10) == {"n": 7}
    assert server.request_counts[("ep-busy", "status")] == before  # no polling was needed


def test_cancel_and_purge(sim_sdk: tuple[ModuleType, SimulatorServer]) -> None:
    """cancel() answers CANCELLED; purge_queue() removes the queued jobs of a cold endpoint."""
    runpod, _ = sim_sdk
    endpoint = runpod.Endpoint("ep-cold")
    job = endpoint.run({"x": 1})
    assert job.cancel() == {"id": job.job_id, "status": "CANCELLED"}
    assert job.status() == "CANCELLED"
    endpoint.run({"x": 2})
    assert endpoint.health()["jobs"]["inQueue"] == 3  # the script's two and the one submitted
    assert endpoint.purge_queue() == {"removed": 3, "status": "completed"}
    # a purge empties the queue /health counts, the scripted count as well as submitted jobs
    assert endpoint.health()["jobs"]["inQueue"] == 0


def test_bad_key_is_refused(sim_sdk: tuple[ModuleType, SimulatorServer]) -> None:
    """With another key the SDK raises its own authentication errors on both APIs."""
    runpod, _ = sim_sdk
    with pytest.raises(runpod.error.AuthenticationError):
        runpod.get_user(api_key="wrong-key")
    with pytest.raises(RuntimeError, match="401 Unauthorized"):
        runpod.Endpoint("ep-busy", api_key="wrong-key").health()


def _sdk_documents() -> list[tuple[str, str]]:
    """Every GraphQL document the SDK can send, from its own query and mutation builders."""
    from runpod.api.mutations import container_register_auth as reg
    from runpod.api.mutations import endpoints as em
    from runpod.api.mutations import pods as pm
    from runpod.api.mutations import templates as tm
    from runpod.api.mutations import user as um
    from runpod.api.queries import endpoints as eq
    from runpod.api.queries import gpus as gq
    from runpod.api.queries import pods as pq
    from runpod.api.queries import user as uq

    return [
        ("user", uq.QUERY_USER),
        ("endpoints", eq.QUERY_ENDPOINT),
        ("gpus", gq.QUERY_GPU_TYPES),
        ("gpu", gq.generate_gpu_query("NVIDIA A40", 2)),
        ("pods", pq.QUERY_POD),
        ("pod", pq.generate_pod_query("pod1")),
        (
            "saveEndpoint",
            em.generate_endpoint_mutation(
                "n",
                "tpl1",
                network_volume_id="vol1",
                flashboot=True,
                allowed_cuda_versions="12.4",
                gpu_count=1,
            ),
        ),
        ("updateEndpointTemplate", em.update_endpoint_template_mutation("ep-busy", "tpl2")),
        (
            "deployGpuPod",
            pm.generate_pod_deployment_mutation(
                "p",
                "img",
                gpu_type_id="NVIDIA A40",
                data_center_id="US-TX-3",
                country_code="US",
                gpu_count=1,
                volume_in_gb=10,
                container_disk_in_gb=10,
                min_vcpu_count=2,
                min_memory_in_gb=8,
                docker_args="run",
                ports="8888/http",
                volume_mount_path="/w",
                env={"K": "V"},
                template_id="t",
                network_volume_id="vol1",
                allowed_cuda_versions=["12.4"],
                min_download=1,
                min_upload=1,
            ),
        ),
        ("deployCpuPod", pm.generate_pod_deployment_mutation("p", "img", instance_id="cpu3c")),
        ("podStop", pm.generate_pod_stop_mutation("pod1")),
        ("podResume", pm.generate_pod_resume_mutation("pod1", 1)),
        ("podTerminate", pm.generate_pod_terminate_mutation("pod1")),
        (
            "saveTemplate",
            tm.generate_pod_template(
                "t",
                "img",
                docker_start_cmd="python -u h.py",
                volume_in_gb=5,
                volume_mount_path="/w",
                ports="8000/http",
                env={"K": "V"},
                is_serverless=True,
                registry_auth_id="r1",
            ),
        ),
        ("updateUserSettings", um.generate_user_mutation("ssh-ed25519 AAA")),
        ("saveRegistryAuth", reg.generate_container_registry_auth("r", "u", "secret-pw")),
        ("updateRegistryAuth", reg.update_container_registry_auth("r1", "u", "secret-pw")),
        ("deleteRegistryAuth", reg.delete_container_registry_auth("r1")),
    ]


def test_every_sdk_document_is_served(sim_sdk: tuple[ModuleType, SimulatorServer]) -> None:
    """Each query and mutation the SDK builds validates and runs without GraphQL errors."""
    runpod, _ = sim_sdk
    for name, document in _sdk_documents():
        answer = runpod.api.graphql.run_graphql_query(document)
        assert "errors" not in answer, name
        assert answer["data"], name
        assert "secret-pw" not in str(answer), name
