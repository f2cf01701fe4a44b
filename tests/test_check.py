"""`python -m monitor check`: one probe cycle against `simulate` over loopback, its exit
status (0 fine, 1 critical, 2 bad configuration) and its JSON and text output."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemonkit import (
    base_env,
    free_port,
    procs,
    run_monitor,
    sim_port,
    start_simulator,
    write_config,
    write_yaml,
)

pytestmark = pytest.mark.integration

KEY = "check-test-key-93c1d0a4"
HEALTHY, LEAKY, CRASHY = "chkhealthy01", "chkleaky002", "chkcrashy03"
GHP = "ghp_" + "Q7w9E2r4T6y8U0i1O3p5A7s9D1f3G5h7J9k2"
CONTRACT = {"code", "scope", "endpoint_id", "endpoint_name", "severity", "summary",
            "evidence", "remedy", "since"}


def _endpoint(eid: str, name: str, env: list[dict[str, str]], **health: Any) -> dict[str, Any]:
    return {
        "id": eid, "name": name, "gpuIds": "ADA_24,AMPERE_24", "workersMin": 0, "workersMax": 1,
        "template": {"id": f"tpl-{eid}", "name": name, "imageName": f"example/{name}:1",
                     "dockerArgs": "", "containerDiskInGb": 60, "env": env},
        "health": {"jobs": {"completed": 20}, "workers": {"idle": 1, "ready": 1, **health}},
    }


SCENARIO: dict[str, Any] = {
    "name": "check-command",
    "interval_s": 1,
    "account": {"clientBalance": 120.0, "currentSpendPerHr": 0.2, "spendLimit": 80},
    "endpoints": [
        _endpoint(HEALTHY, "healthy-api", [{"key": "LOG_LEVEL", "value": "info"}]),
        _endpoint(LEAKY, "leaky-llm", [{"key": "GITHUB_TOKEN", "value": GHP}]),
        _endpoint(CRASHY, "crashy-worker", [], unhealthy=1),
    ],
    "steps": [{"cycles": 1}],
}


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    """A simulator serving SCENARIO; yields (a work directory, its port)."""
    tmp = tmp_path_factory.mktemp("check")
    scenario = write_yaml(tmp / "scenario.yaml", SCENARIO)
    with procs(tmp) as group:
        url = start_simulator(group, scenario, KEY)
        yield tmp, sim_port(url)


def _check(sim: tuple[Path, int], name: str, endpoint: str, fmt: str) -> Any:
    tmp, port = sim
    # one cycle decides the exit status: a generous timeout, so that a loaded machine does
    # not turn the answer into "unknown"
    config = write_config(tmp / f"{name}.yaml", port, free_port(), tmp / f"{name}.db",
                          endpoints=[endpoint], runpod={"timeout_s": 5})
    return run_monitor(tmp, "check", "--config", str(config), "--format", fmt,
                       env=base_env(RUNPOD_API_KEY=KEY))


def test_healthy_endpoint_exits_0_with_no_diagnosis(sim: tuple[Path, int]) -> None:
    """A healthy endpoint and account: exit 0 and an empty diagnoses list in JSON."""
    done = _check(sim, "healthy", HEALTHY, "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"diagnoses": [], "probe_failures": []}
    assert "runpod_call_failed" not in done.stderr  # it did probe, and got answers


def test_secret_in_template_is_critical_from_the_first_cycle(sim: tuple[Path, int]) -> None:
    """A ghp_ token in a template: exit 1, secret_in_template critical, token never shown."""
    done = _check(sim, "leaky", LEAKY, "json")
    assert done.returncode == 1, done.stderr
    diagnoses = json.loads(done.stdout)["diagnoses"]
    found = {d["code"]: d for d in diagnoses}
    leak = found["secret_in_template"]
    assert set(leak) == CONTRACT
    assert leak["severity"] == "critical"
    assert leak["endpoint_id"] == LEAKY
    assert leak["endpoint_name"] == "leaky-llm"
    assert leak["since"].endswith("Z")
    assert "ghp_" in json.dumps(leak)  # the kind and masked prefix are shown...
    for text in (done.stdout, done.stderr):
        assert GHP not in text  # ...never the token
        assert GHP[-12:] not in text


def test_unhealthy_workers_exit_1_in_readable_text(sim: tuple[Path, int]) -> None:
    """An unhealthy worker: exit 1; text shows severity, code, endpoint, summary, fix."""
    done = _check(sim, "crashy", CRASHY, "text")
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    head = [line for line in lines if "workers_unhealthy" in line]
    assert head
    assert head[0].split() == ["CRITICAL", "workers_unhealthy", "crashy-worker", f"({CRASHY})"]
    at = lines.index(head[0])
    assert "unhealthy" in lines[at + 1]
    assert lines[at + 2].strip().startswith("fix:")
    assert not done.stdout.lstrip().startswith("{")


def test_healthy_text_says_ok(sim: tuple[Path, int]) -> None:
    """Text format for a healthy endpoint is one readable OK line."""
    done = _check(sim, "healthy-text", HEALTHY, "text")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "OK: nothing wrong found (1 endpoint probed)."


def test_bad_config_exits_2_naming_each_field(tmp_path: Path) -> None:
    """An invalid config: exit 2, nothing on stdout, every bad field named on stderr."""
    config = write_yaml(tmp_path / "bad.yaml", {
        "interval_s": 0,
        "runpod": {"api_key": "k", "timeout_s": -1},
        "htpp": {"listen": "127.0.0.1:9108"},
        "log": {"level": "loud"},
    }, mode=0o600)
    done = run_monitor(tmp_path, "check", "--config", str(config), "--format", "json")
    assert done.returncode == 2
    assert done.stdout == ""
    for field in ("interval_s", "runpod.timeout_s", "htpp", "log.level"):
        assert f"{field}:" in done.stderr, field
    assert "Traceback" not in done.stderr


def test_missing_api_key_exits_2_saying_how(tmp_path: Path) -> None:
    """No API key anywhere: exit 2 and a message naming runpod.api_key and RUNPOD_API_KEY."""
    config = write_config(tmp_path / "nokey.yaml", free_port(), free_port(),
                          tmp_path / "nokey.db")
    done = run_monitor(tmp_path, "check", "--config", str(config), env=base_env())
    assert done.returncode == 2
    assert "runpod.api_key" in done.stderr
    assert "RUNPOD_API_KEY" in done.stderr


@pytest.mark.integration
@pytest.mark.parametrize("plane", ["auto", "rest", "graphql"])
def test_unreachable_runpod_is_not_ok(tmp_path: Path, plane: str) -> None:
    """When RunPod cannot be reached, check says what failed and exits 1, never a false OK;
    the endpoint listing (v2's, or GraphQL's in graphql mode) is the first failure, asked once."""
    port = free_port()  # nothing listens there
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "runpod:\n"
        "  api_key: test-key-unreachable\n"
        f"  graphql_url: http://127.0.0.1:{port}/graphql\n"
        f"  rest_url: http://127.0.0.1:{port}/v2\n"
        "  timeout_s: 1\n"
        f"  control_plane: {plane}\n"
        f"state: {{path: {tmp_path / 'none.db'}}}\n"
    )
    cfg.chmod(0o600)
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "check", "--config", str(cfg), "--format", "json"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 1, done.stderr
    body = json.loads(done.stdout)
    assert body["diagnoses"] == []
    probes = [f["probe"] for f in body["probe_failures"]]
    assert {f["outcome"] for f in body["probe_failures"]} == {"connect"}
    if plane == "graphql":
        assert probes == ["graphql"]
        return
    # the v2 listing decides the control outcome, asked once; it found RunPod unreachable,
    # so the account facts due at start and auto's GraphQL spend query are held back (not
    # failures); no endpoint is known, so no /health
    assert probes == ["v2_endpoints"]
