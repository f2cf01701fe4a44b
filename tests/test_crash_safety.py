"""Crash safety: the daemon SIGKILLed 10 times at random points of a scenario, restarted each
time, ends with the same incidents and alerts as a run that was never killed."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
import yaml

pytestmark = pytest.mark.integration

KEY = "crash-test-key-0123456789abcdef"
ROOT = Path(__file__).resolve().parent.parent
KILLS = 10
E1, E2 = "crashep00001", "crashep00002"
_SCRUBBED = ("RUNPOD_API_KEY", "SLACK_WEBHOOK_URL", "SLACK_BOT_TOKEN", "HTTP_PROXY",
             "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")


def _endpoint(eid: str) -> dict[str, Any]:
    return {"id": eid, "name": f"name-{eid}", "gpuIds": "AMPERE_48,ADA_48_PRO",
            "workersMin": 1, "workersMax": 2, "idleTimeout": 5,
            "template": {"id": f"t-{eid}", "name": "w", "imageName": "acme/w:1",
                         "dockerArgs": "", "containerDiskInGb": 50, "env": []},
            "health": {"jobs": {"completed": 10}, "workers": {"idle": 1}}}


# 1 s per cycle; each fault holds 7 cycles and is followed by at least 6 healthy ones, so a
# restart (about 1.5 s) never decides whether a diagnosis is seen.
SCENARIO: dict[str, Any] = {
    "name": "crash-safety",
    "interval_s": 1,
    # REST v2 lists every cycle only when the list is cheap against the quota: at 1 s cycles
    # the default 60 calls a minute would list every 150 s and miss the config and auth steps
    "v2": {"quota": {"minute": 100_000, "hour": 10_000_000, "day": 100_000_000}},
    "account": {"clientBalance": 500.0, "currentSpendPerHr": 0.5},
    "endpoints": [_endpoint(E1), _endpoint(E2)],
    "steps": [
        {"cycles": 5},
        {"cycles": 7, "endpoints": {E1: {"health": {"workers": {"unhealthy": 1}}}}},
        {"cycles": 6, "endpoints": {E1: {"health": {"workers": {"unhealthy": 0}}}}},
        {"cycles": 7, "endpoints": {E2: {"config": {"workersMax": 0}}}},
        {"cycles": 6, "endpoints": {E2: {"config": {"workersMax": 2}}}},
        {"cycles": 7, "graphql": 401},
        {"cycles": 8, "graphql": "ok"},
    ],
}
EXPECTED = {("workers_unhealthy", E1), ("workers_max_zero", E2), ("auth_invalid", None)}
SCENARIO_S = sum(s["cycles"] for s in SCENARIO["steps"])  # 46


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    out.update(RUNPOD_API_KEY=KEY, NO_PROXY="127.0.0.1,localhost", PYTHONUNBUFFERED="1")
    return out


@dataclass
class Run:
    """One monitor's life over the scenario: its simulator, config, and every incarnation."""

    name: str
    workdir: Path
    sim: subprocess.Popen[bytes] | None = None
    daemon: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    config: Path = field(default_factory=Path)
    starts: int = 0
    kills: list[float] = field(default_factory=list)

    def start_simulator(self) -> None:
        scenario = self.workdir / "scenario.yaml"
        scenario.write_text(yaml.safe_dump(SCENARIO))
        port = free_port()
        out = (self.workdir / "sim.out").open("wb")
        self.sim = subprocess.Popen(
            [sys.executable, "-m", "monitor", "simulate", str(scenario), "--port", str(port),
             "--interval", "1"], cwd=ROOT, env=env(), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while b"base URL:" not in (self.workdir / "sim.out").read_bytes():
            assert self.sim.poll() is None, (self.workdir / "sim.out").read_text()
            assert time.monotonic() < deadline, "the simulator did not start"
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        self.config = self.workdir / "config.yaml"
        self.config.write_text(yaml.safe_dump({
            "interval_s": 1,
            "runpod": {"graphql_url": f"{url}/graphql", "rest_url": f"{url}/v2",
                       "timeout_s": 0.5},
            "http": {"listen": "127.0.0.1:0"},
            "state": {"path": str(self.workdir / "state.db")},
            "alerts": {"group_wait_s": 0},
            "log": {"level": "info", "format": "json"},
        }))
        self.config.chmod(0o600)
        self.log = (self.workdir / "daemon.log").open("ab")

    def start_daemon(self) -> None:
        self.starts += 1
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "monitor", "run", "--config", str(self.config)],
            cwd=ROOT, env=env(), stdout=self.log, stderr=self.log)

    def kill_daemon(self) -> None:
        assert self.daemon is not None
        assert self.daemon.poll() is None, self.tail()
        self.daemon.send_signal(signal.SIGKILL)
        assert self.daemon.wait(10) == -signal.SIGKILL
        self.kills.append(time.monotonic())

    def stop(self) -> None:
        for proc in (self.daemon, self.sim):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        if self.log is not None:
            self.log.close()

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for raw in (self.workdir / "daemon.log").read_bytes().splitlines():
            try:
                item = json.loads(raw)
            except ValueError:
                continue  # a line cut by SIGKILL, or a non-JSON line
            if isinstance(item, dict):
                out.append(item)
        return out

    def alerts(self) -> Counter[tuple[str, str | None, str]]:
        return Counter((x["code"], x.get("endpoint_id"), x["kind"])
                       for x in self.lines() if x.get("event") == "alert")

    def incidents(self) -> Counter[tuple[str, str]]:
        """(raised|resolved, code) from the cycle log lines: every incident's start and end."""
        return Counter((what, code) for x in self.lines() if x.get("event") == "cycle"
                       for what in ("raised", "resolved") for code in x.get(what, []))

    def tail(self) -> str:
        return "\n".join((self.workdir / "daemon.log").read_text(errors="replace")
                         .splitlines()[-30:])


@contextmanager
def runs(tmp_path: Path) -> Iterator[tuple[Run, Run]]:
    base, killed = Run("baseline", tmp_path / "baseline"), Run("killed", tmp_path / "killed")
    try:
        for r in (base, killed):
            r.workdir.mkdir()
            r.start_simulator()
        yield base, killed
    finally:
        for r in (base, killed):
            r.stop()


def test_sigkill_ten_times_loses_and_repeats_no_alert(tmp_path: Path) -> None:
    """10 SIGKILLs and restarts during a scenario: the same incidents and alerts as no kill."""
    rng = random.Random(int(os.environ.get("CRASH_SEED", "20260101")))
    with runs(tmp_path) as (base, killed):
        t0 = time.monotonic()
        base.start_daemon()
        killed.start_daemon()
        # kill i at a random point of its slot; slots of 4 s cover the scenario
        slot = (SCENARIO_S - 4) / KILLS
        plan = [3 + i * slot + rng.uniform(0, slot - 1.5) for i in range(KILLS)]
        for at in plan:
            time.sleep(max(0.0, t0 + at - time.monotonic()))
            killed.kill_daemon()
            killed.start_daemon()
        # let both runs play the scenario out (and deliver the last alerts)
        time.sleep(max(0.0, t0 + SCENARIO_S + 4 - time.monotonic()))
    base_alerts, killed_alerts = base.alerts(), killed.alerts()
    restored = sum(1 for x in killed.lines() if x.get("event") == "state restored")
    kill_points = [round(k - t0, 1) for k in killed.kills]
    print(f"\nkills at {kill_points} s; restarts that restored state: {restored}")
    print(f"baseline alerts: {dict(base_alerts)}")
    print(f"killed alerts:   {dict(killed_alerts)}")
    assert len(killed.kills) == KILLS
    assert restored >= KILLS - 1  # a kill before the first cycle persisted restores nothing
    # the scenario's story happened: each diagnosis raised and resolved once
    assert {(c, e) for c, e, _ in base_alerts} == EXPECTED, base.tail()
    assert all(n == 1 for n in base_alerts.values()), base_alerts
    # and the same story, incident for incident and alert for alert, across 10 SIGKILLs:
    # an incident whose state was lost would be raised (and announced) a second time
    assert killed.incidents() == base.incidents()
    assert killed_alerts == base_alerts, killed.tail()
    assert not [x for x in killed.lines() if x.get("level") in ("error", "critical")]
