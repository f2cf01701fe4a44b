"""The per-signature crash-loop scenarios (tests/scenarios/v2/crash-loop-*.yaml) over the
wire: the simulator serves the failing worker's log as server-sent events, the REST v2
client reads it within its bounds, and the post-pass names the scenario's signature.

Runs once the client has `worker_logs` (the v2client branch); until then it is skipped.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from model.observation import WorkerLogs
from monitor.runpod.client import RunPodClient
from monitor.simulator import SimulatorServer
from monitor.simulator.scenario import load_scenario
from rules.diagnosis import Diagnosis
from rules.log_evidence import explain
from rules.log_signatures import BY_NAME

needs_logs_call = pytest.mark.skipif(not hasattr(RunPodClient, "worker_logs"),
                                     reason="the REST v2 client's worker_logs is not merged yet")

KEY = "log-scenarios-key-0123456789"
DIR = Path(__file__).parent / "scenarios" / "v2"
# scenario name -> signature
EXPECTED = {
    "oom-killed": "oom_killed", "cuda-oom": "cuda_oom", "disk-full": "disk_full",
    "handler-missing": "handler_missing", "module-missing": "module_missing",
    "hf-gated": "hf_download", "git-auth": "git_auth", "image-pull": "image_pull",
    "cuda-driver": "cuda_driver", "init-timeout": "init_timeout",
}
# one crash-loop scenario per signature (crash-loop-worker-records.yaml is the restarts
# one, without a log signature)
SCENARIOS = [p for p in sorted(DIR.glob("crash-loop-*.yaml"))
             if p.stem.removeprefix("crash-loop-") in EXPECTED]


def test_one_scenario_per_signature() -> None:
    names = {p.stem.removeprefix("crash-loop-") for p in SCENARIOS}
    assert names == set(EXPECTED)
    assert all((DIR / f"crash-loop-{n}.yaml").is_file() for n in EXPECTED)
    assert set(EXPECTED.values()) == set(BY_NAME)


@needs_logs_call
@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
async def test_the_served_log_names_the_scenarios_signature(path: Path) -> None:
    sc = load_scenario(path)
    (ep,) = sc.endpoints
    server = SimulatorServer(sc, KEY)
    url = await server.start()
    try:
        server.set_cycle(sc.total_cycles)
        async with RunPodClient(api_key=KEY, graphql_url=f"{url}/graphql", rest_url=f"{url}/v2",
                                v2_url=f"{url}/v2", timeout_s=5) as client:
            out = await client.worker_logs(ep.id, "w1", source=None)
    finally:
        await server.stop()
    logs = getattr(out, "value", out)
    assert isinstance(logs, WorkerLogs)
    assert logs.lines
    d = Diagnosis("crash_loop", "endpoint", "critical", "It loops.", "Fix it.", {}, ep.id)
    got = explain(d, [logs], frozenset())
    want = EXPECTED[path.stem.removeprefix("crash-loop-")]
    assert got.evidence.get("log_signature") == want, got.evidence
    assert got.summary.startswith("Worker logs: ")
