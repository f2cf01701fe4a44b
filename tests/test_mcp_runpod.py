"""RunPod's official MCP server, a REST v2 client written by RunPod, judges the v2 simulator.

`@runpod/mcp-server` (pinned in tests/mcp_runpod/package-lock.json, installed by
scripts/install-node-deps) runs over stdio with RUNPOD_API_BASE_URL pointed at the simulator;
the test speaks MCP's JSON-RPC to it (initialize, tools/list, tools/call) and checks each
answer against the scenario. Version 4.0.0 reads `RUNPOD_API_BASE_URL` as the API origin
(its generated paths carry `/v2`), does not page lists server-side, and holds the worker-log
stream open for `maxWaitMs`.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor.simulator import BackgroundSimulator, Scenario, SimulatorServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
PKG_DIR = ROOT / "tests" / "mcp_runpod"
ENTRY = PKG_DIR / "node_modules" / "@runpod" / "mcp-server" / "dist" / "stdio.mjs"
KEY = "mcp-judge-key-0123456789"
TOOLS = (
    "list-endpoints", "get-endpoint", "list-endpoint-workers", "list-endpoint-releases",
    "stream-worker-logs", "list-serverless-billing", "list-gpu-types",
    "list-network-volumes", "list-pods",
)
TEMPLATE = {"id": "tpl-sdxl", "name": "sdxl", "imageName": "acme/sdxl:1.5", "dockerArgs": "",
            "containerDiskInGb": 30, "env": [{"key": "HF_HOME", "value": "/runpod-volume/hf"}]}
SCENARIO: dict[str, Any] = {
    "name": "mcp-judge",
    "account": {"clientBalance": 120.5, "currentSpendPerHr": 2.5, "spendLimit": 80},
    "networkVolumes": [
        {"id": "vol-models1", "name": "models", "size": 100, "dataCenterId": "EU-RO-1"},
        {"id": "vol-cache02", "name": "cache", "size": 20, "dataCenterId": "US-KS-2"},
    ],
    "pods": [
        {"id": "pod-dev001", "name": "dev", "desiredStatus": "RUNNING", "costPerHr": 0.69,
         "gpuCount": 1},
        {"id": "pod-old002", "name": "old", "desiredStatus": "EXITED", "costPerHr": 0.4,
         "volumeInGb": 50},
    ],
    "v2": {
        "epoch": "2026-12-01T12:30:00Z",  # half of the current hour bucket has passed
        "logs_hold_s": 30,  # the stream stays open, as RunPod's does; the client cuts it
        "availability": {
            "ADA_24": {"availability": "LOW", "dataCenters": {"US-KS-2": "LOW", "EU-RO-1": "NONE"}},
            "NVIDIA H100 80GB HBM3": "NONE",
        },
    },
    "endpoints": [
        {
            "id": "ep-scripted1", "name": "sdxl", "gpuIds": "ADA_24,AMPERE_24",
            "networkVolumeId": "vol-models1", "workersMin": 0, "workersMax": 4,
            "idleTimeout": 5, "scalerType": "QUEUE_DELAY", "scalerValue": 4,
            "template": TEMPLATE,
            "health": {"workers": {"running": 1, "idle": 1, "ready": 1}},
            "v2": {
                "version": 3,
                "billing": 0.9,
                "workers": [
                    {"id": "w-new0001", "status": "RUNNING", "version": 3, "started_s": -120},
                    {"id": "w-old0002", "status": "IDLE", "version": 2, "started_s": -7200},
                ],
                "releases": [
                    {"version": 3, "created_s": -300,
                     "diff": [{"field": "image", "old": "acme/sdxl:1.4", "new": "acme/sdxl:1.5"}]},
                    {"version": 2, "created_s": -86400},
                    {"version": 1, "created_s": -172800},
                ],
                "logs": {"w-new0001": [
                    {"t": -120, "source": "system", "line": "start container"},
                    {"t": -100, "line": "loading weights from /runpod-volume/hf"},
                    {"t": -90, "line": "worker ready"},
                ]},
            },
        },
        {
            "id": "ep-derived2", "name": "llm", "gpuIds": "AMPERE_80", "workersMax": 2,
            "template": {**TEMPLATE, "id": "tpl-llm", "imageName": "acme/vllm:2"},
            "health": {"workers": {"running": 2, "initializing": 1, "throttled": 1}},
        },
    ],
    # Cycle 2 only (test_quota_exhausted): the hour's quota is spent.
    "steps": [{"cycles": 1}, {"cycles": 1, "v2": {"quota": {"minute": 100, "hour": 0}}}],
}


def _node_major() -> int | None:
    node = shutil.which("node")
    if node is None:
        return None
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    try:
        return int(out.stdout.strip().lstrip("v").split(".")[0])
    except ValueError:
        return None


@pytest.fixture(scope="module")
def mcp_entry() -> Path:
    """The installed MCP server's stdio entry point (installed here when CI has not)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm are not installed (scripts/install-system-deps installs them)")
    major = _node_major()
    if major is None or major < 20:
        pytest.skip(f"@runpod/mcp-server 4.0.0 needs Node.js >= 20 (found {major})")
    if not ENTRY.is_file():
        subprocess.run([str(ROOT / "scripts" / "install-node-deps")], check=True, timeout=600)
    assert ENTRY.is_file(), f"{ENTRY} missing after scripts/install-node-deps"
    return ENTRY


class McpClient:
    """MCP's stdio transport: one JSON-RPC message per line each way."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self._next = 0
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        self._send({"jsonrpc": "2.0", "method": method, **({"params": params} if params else {})})

    def request(self, method: str, params: dict[str, Any], timeout: float = 60) -> Any:
        self._next += 1
        self._send({"jsonrpc": "2.0", "id": self._next, "method": method, "params": params})
        while True:
            line = self._lines.get(timeout=timeout)
            if line is None:
                raise AssertionError(f"the MCP server exited during {method}")
            msg = json.loads(line)
            if msg.get("id") == self._next:
                assert "error" not in msg, msg
                return msg["result"]

    def call(self, tool: str, **arguments: Any) -> tuple[bool, Any]:
        """(isError, the decoded JSON payload) of one tools/call."""
        result = self.request("tools/call", {"name": tool, "arguments": arguments})
        text = result["content"][0]["text"]
        return bool(result.get("isError")), json.loads(text)

    def ok(self, tool: str, **arguments: Any) -> Any:
        is_error, payload = self.call(tool, **arguments)
        assert not is_error, f"{tool} failed: {payload}"
        return payload

    def _send(self, msg: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()


@pytest.fixture(scope="module")
def judged(mcp_entry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
    tuple[McpClient, SimulatorServer]
]:
    """The simulator on loopback and RunPod's MCP server talking to it, initialized."""
    server = SimulatorServer(Scenario.from_dict(SCENARIO), KEY)
    with BackgroundSimulator(server) as bg:
        url = bg.server.url
        home = tmp_path_factory.mktemp("mcp-home")
        env = {
            "PATH": os.environ.get("PATH", ""), "HOME": str(home),
            "RUNPOD_API_KEY": KEY,
            "RUNPOD_API_BASE_URL": url,  # the origin: the server's paths carry /v2
            # Every other host it knows stays on loopback too.
            "RUNPOD_SERVERLESS_API_URL": f"{url}/v2",
            "RUNPOD_PUBLIC_GRAPHQL_URL": f"{url}/graphql",
            "RUNPOD_AUTHED_GRAPHQL_URL": f"{url}/graphql",
        }
        proc = subprocess.Popen(
            ["node", str(mcp_entry)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, env=env, cwd=home,
        )
        try:
            client = McpClient(proc)
            init = client.request("initialize", {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "runpod-monitor-tests", "version": "0"},
            })
            assert init["serverInfo"]["name"]
            client.notify("notifications/initialized")
            yield client, server
        finally:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def test_the_tools_exist(judged: tuple[McpClient, SimulatorServer]) -> None:
    """4.0.0 serves every tool the issue names, under those names."""
    client, _ = judged
    names = {t["name"] for t in client.request("tools/list", {})["tools"]}
    assert set(TOOLS) <= names


def test_list_endpoints(judged: tuple[McpClient, SimulatorServer]) -> None:
    """Ids, pools, worker bounds and data centers as the scenario says."""
    client, server = judged
    out = client.ok("list-endpoints")
    items = {e["id"]: e for e in out["items"]}
    assert set(items) == {"ep-scripted1", "ep-derived2"}
    assert out["pagination"]["total"] == 2
    assert items["ep-scripted1"]["gpu"]["pools"] == ["ADA_24", "AMPERE_24"]
    assert items["ep-scripted1"]["workers"] == {"min": 0, "max": 4, "idleTimeout": 5}
    assert items["ep-scripted1"]["scaling"] == {"type": "QUEUE_DELAY", "queueDelay": 4}
    assert items["ep-derived2"]["gpu"]["pools"] == ["AMPERE_80"]
    assert items["ep-derived2"]["workers"]["max"] == 2
    assert items["ep-scripted1"]["image"] == "acme/sdxl:1.5"
    assert server.request_counts[("v2", "list-endpoints")] >= 1


def test_get_endpoint(judged: tuple[McpClient, SimulatorServer]) -> None:
    """The full endpoint: volumes, env map and the simulator's own request URLs."""
    client, server = judged
    ep = client.ok("get-endpoint", id="ep-scripted1")
    assert ep["id"] == "ep-scripted1"
    assert ep["networkVolumes"] == ["vol-models1"]
    assert ep["workers"]["max"] == 4
    assert ep["env"] == {"HF_HOME": "/runpod-volume/hf"}
    assert ep["disk"] == 30
    assert ep["requestUrls"]["health"] == f"{server.url}/v2/ep-scripted1/health"


def test_get_unknown_endpoint_is_a_404(judged: tuple[McpClient, SimulatorServer]) -> None:
    """A problem+json 404 reaches the client as a failed call with the API's detail."""
    client, _ = judged
    is_error, payload = client.call("get-endpoint", id="ep-missing")
    assert is_error
    assert payload["status"] == 404
    assert payload["detail"] == "resource not found"


def test_list_endpoint_workers(judged: tuple[McpClient, SimulatorServer]) -> None:
    """Scripted workers come back as written; derived ones match the /health counts."""
    client, _ = judged
    scripted = client.ok("list-endpoint-workers", id="ep-scripted1")
    assert scripted["endpointVersion"] == 3
    by_id = {w["id"]: w for w in scripted["workers"]}
    assert set(by_id) == {"w-new0001", "w-old0002"}
    assert by_id["w-new0001"]["isStale"] is False
    assert by_id["w-old0002"]["isStale"] is True
    assert by_id["w-new0001"]["startedAt"] == "2026-12-01T12:28:00Z"
    assert by_id["w-new0001"]["uptimeSeconds"] == 120
    assert scripted["summary"] == {"running": 1, "idle": 1, "initializing": 0, "throttled": 0,
                                   "unhealthy": 0, "total": 2}
    derived = client.ok("list-endpoint-workers", id="ep-derived2")
    assert derived["summary"] == {"running": 2, "idle": 0, "initializing": 1, "throttled": 1,
                                  "unhealthy": 0, "total": 4}
    assert len(derived["workers"]) == 4
    throttled = [w for w in derived["workers"] if w["status"] == "THROTTLED"]
    assert throttled[0]["gpuTypeId"] is None  # not placed yet
    running = [w for w in derived["workers"] if w["status"] == "RUNNING"]
    assert {w["gpuTypeId"] for w in running} == {"NVIDIA A100 80GB PCIe"}


def test_list_endpoint_releases(judged: tuple[McpClient, SimulatorServer]) -> None:
    """Newest first, the diff as scripted, the rollout counted from the workers."""
    client, _ = judged
    out = client.ok("list-endpoint-releases", id="ep-scripted1")
    assert out["endpointVersion"] == 3
    assert [r["version"] for r in out["releases"]] == [3, 2, 1]
    assert out["releases"][0]["diff"] == [
        {"field": "image", "old": "acme/sdxl:1.4", "new": "acme/sdxl:1.5"}
    ]
    assert out["rollout"] == {"inProgress": True, "workersOnLatest": 1, "workersTotal": 2,
                              "percentOnLatest": 50}
    derived = client.ok("list-endpoint-releases", id="ep-derived2")
    assert [r["version"] for r in derived["releases"]] == [1]


def test_stream_worker_logs(judged: tuple[McpClient, SimulatorServer]) -> None:
    """The SSE stream, held open, parsed by RunPod's reader: lines, sources, tail."""
    client, _ = judged
    out = client.ok("stream-worker-logs", endpointId="ep-scripted1", workerId="w-new0001",
                    maxWaitMs=1000)
    assert [(x["source"], x["line"]) for x in out["items"]] == [
        ("system", "start container"),
        ("container", "loading weights from /runpod-volume/hf"),
        ("container", "worker ready"),
    ]
    assert out["items"][0]["ts"] == "2026-12-01T12:28:00Z"
    only = client.ok("stream-worker-logs", endpointId="ep-scripted1", workerId="w-new0001",
                     source="container", tail=1, maxWaitMs=500)
    assert [x["line"] for x in only["items"]] == ["worker ready"]


def test_list_serverless_billing(judged: tuple[McpClient, SimulatorServer]) -> None:
    """One record per endpoint for the in-progress hour: 30 minutes at the scripted rate."""
    client, _ = judged
    out = client.ok("list-serverless-billing", bucketSize="hour", lastN=1)
    by_id = {r["serverlessId"]: r for r in out["records"]}
    assert set(by_id) == {"ep-scripted1", "ep-derived2"}
    assert by_id["ep-scripted1"]["totalAmount"] == pytest.approx(0.45)
    assert by_id["ep-scripted1"]["startTime"] == "2026-12-01T12:00:00Z"
    assert out["metadata"]["uniqueServerlessCount"] == 2
    one = client.ok("list-serverless-billing", bucketSize="hour", lastN=1,
                    serverlessId="ep-derived2")
    assert [r["serverlessId"] for r in one["records"]] == ["ep-derived2"]


def test_list_gpu_types_with_availability(judged: tuple[McpClient, SimulatorServer]) -> None:
    """Pools and scripted stock per data center; an unavailable type omits dataCenters."""
    client, _ = judged
    out = client.ok("list-gpu-types", include=["AVAILABILITY"], product=["SERVERLESS"])
    gpus = {g["id"]: g for g in out["gpus"]}
    rtx = gpus["NVIDIA GeForce RTX 4090"]
    assert rtx["pool"] == "ADA_24"
    assert rtx["availability"] == "LOW"
    assert {d["id"]: d["availability"] for d in rtx["dataCenters"]} == {
        "US-KS-2": "LOW", "EU-RO-1": "NONE"}
    h100 = gpus["NVIDIA H100 80GB HBM3"]
    assert h100["availability"] == "NONE"
    assert "dataCenters" not in h100
    assert gpus["NVIDIA A40"]["availability"] == "HIGH"
    plain = client.ok("list-gpu-types")
    assert all("availability" not in g for g in plain["gpus"])


def test_list_network_volumes_and_pods(judged: tuple[McpClient, SimulatorServer]) -> None:
    """Volume ids and data centers; pods with status and cost (0 when stopped)."""
    client, server = judged
    vols = client.ok("list-network-volumes")
    assert {v["id"]: v["dataCenter"] for v in vols["networkVolumes"]} == {
        "vol-models1": "EU-RO-1", "vol-cache02": "US-KS-2"}
    pods = client.ok("list-pods")
    by_id = {p["id"]: p for p in pods["pods"]}
    assert set(by_id) == {"pod-dev001", "pod-old002"}
    assert by_id["pod-dev001"]["cost"] == 0.69
    assert by_id["pod-old002"]["status"] == "EXITED"
    assert by_id["pod-old002"]["cost"] == 0.0
    assert by_id["pod-old002"]["mounts"]["persistent"]["size"] == 50
    for route in ("network-volumes", "pods", "catalog-gpus", "billing-serverless", "logs",
                  "releases", "workers", "get-endpoint"):
        assert server.request_counts[("v2", route)] >= 1, route


def test_quota_exhausted_reaches_the_client(judged: tuple[McpClient, SimulatorServer]) -> None:
    """RunPod's SDK reads the simulator's 429: its RateLimit names the spent window and its
    Retry-After the wait (to the hour's end: 12:30:30 is cycle 2), which the tool hands back."""
    client, server = judged
    server.set_cycle(2)
    try:
        is_error, payload = client.call("list-pods")
    finally:
        server.set_cycle(1)
    assert is_error
    assert payload["status"] == 429
    assert payload["detail"] == "rate limit exceeded for the hour window"
    assert "the hour quota is exhausted" in payload["hint"]
    assert "(1770s)" in payload["hint"]
    assert client.ok("list-pods")["pods"]  # the next cycle's quota is back
