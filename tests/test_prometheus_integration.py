"""The dashboard and alert rules against a real Prometheus scraping `runpod-monitor demo`.

One stack per module, all on loopback: the demo daemon (simulator + monitor), the real
`prometheus` binary scraping it every second with alerts.yml loaded, and, when installed,
the real Alertmanager receiving Prometheus's alerts. Every process is killed at the end.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from test_dashboard import generator

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS = shutil.which("prometheus")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")

# How long the demo may take to produce the data every panel needs: its scenario completes
# its first jobs after about 19 cycles of 2 s.
DATA_DEADLINE_S = 60.0
START_DEADLINE_S = 20.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def substitute(expr: str) -> str:
    """A panel expr as Grafana would send it with All endpoints and a 1m rate interval."""
    return expr.replace("$__rate_interval", "1m").replace("$endpoint", ".*")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, n: int = 30) -> str:
        lines = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        return f"--- {self.name} (exit {self.popen.poll()}) ---\n" + "\n".join(lines[-n:])

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)


@dataclass
class Stack:
    client: httpx.Client
    monitor_url: str
    prom_url: str
    am_url: str | None
    procs: list[Proc]
    started: float

    def logs(self) -> str:
        return "\n".join(p.tail() for p in self.procs)

    def query(self, expr: str) -> list[dict[str, Any]]:
        r = self.client.get(f"{self.prom_url}/api/v1/query", params={"query": expr})
        body = r.json()
        assert body["status"] == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


def start(name: str, args: list[str], tmp: Path, procs: list[Proc], *,
          cwd: Path | None = None) -> Proc:
    """Start `args` with its output in tmp/<name>.log; `procs` remembers it for the kill."""
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=cwd or tmp,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    proc = Proc(name, popen, log)
    procs.append(proc)
    return proc


def wait_until(what: str, check: Callable[[], bool], deadline: float, stack_logs: Callable[[],
               str]) -> None:
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}\n{stack_logs()}")


def answers(client: httpx.Client, url: str) -> bool:
    return client.get(url).status_code == 200


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if PROMETHEUS is None:
        pytest.skip("the prometheus binary is not installed (Debian package prometheus; "
                    "scripts/install-system-deps installs it, and CI runs that first)")
    tmp = tmp_path_factory.mktemp("prom-stack")
    procs: list[Proc] = []
    client = httpx.Client(timeout=5.0)

    def logs() -> str:
        return "\n".join(p.tail() for p in procs)

    try:
        started = time.monotonic()
        mon_port = free_port()
        monitor_url = f"http://127.0.0.1:{mon_port}"
        start("demo", [sys.executable, "-m", "monitor", "demo", "--port", str(mon_port)],
              tmp, procs, cwd=ROOT)

        am_url = None
        alerting: dict[str, Any] = {}
        if ALERTMANAGER is not None:
            am_port = free_port()
            am_url = f"http://127.0.0.1:{am_port}"
            (tmp / "alertmanager.yml").write_text(yaml.safe_dump({
                "route": {"receiver": "blackhole"},
                "receivers": [{"name": "blackhole"}],
            }))
            start("alertmanager", [
                ALERTMANAGER, f"--config.file={tmp / 'alertmanager.yml'}",
                f"--storage.path={tmp / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",   # no gossip port on 0.0.0.0
            ], tmp, procs)
            alerting = {"alertmanagers": [
                {"api_version": "v2", "static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}
            ]}

        prom_port = free_port()
        prom_url = f"http://127.0.0.1:{prom_port}"
        config: dict[str, Any] = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [{
                "job_name": "runpod-monitor",
                "static_configs": [{"targets": [f"127.0.0.1:{mon_port}"]}],
            }],
        }
        if alerting:
            config["alerting"] = alerting
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        start("prometheus", [
            PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            # an alert fired before the Alertmanager is discovered is dropped and only re-sent
            # after this delay (default 1 m): keep it short so the test sees the resend
            "--rules.alert.resend-delay=2s",
        ], tmp, procs)

        deadline = started + START_DEADLINE_S
        wait_until("the demo's /metrics",
                   lambda: answers(client, f"{monitor_url}/metrics"), deadline, logs)
        wait_until("Prometheus ready", lambda: answers(client, f"{prom_url}/-/ready"),
                   deadline, logs)
        if am_url is not None:
            wait_until("Alertmanager ready", lambda: answers(client, f"{am_url}/-/ready"),
                       deadline, logs)
        stack = Stack(client, monitor_url, prom_url, am_url, procs, started)
        wait_until("a successful scrape of the demo",
                   lambda: bool(stack.query('up{job="runpod-monitor"} == 1')), deadline, logs)
        yield stack
    finally:
        for proc in reversed(procs):
            proc.stop()
        client.close()


def test_rule_groups_loaded_and_evaluating(stack: Stack) -> None:
    """Prometheus loaded both rule groups of alerts.yml and evaluates every rule cleanly."""
    expected = {
        rule["alert"]
        for group in yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
        for rule in group["rules"]
    }
    state: dict[str, Any] = {}

    def healthy() -> bool:
        groups = stack.client.get(f"{stack.prom_url}/api/v1/rules").json()["data"]["groups"]
        state["groups"] = groups
        rules = [r for g in groups for r in g["rules"]]
        return {r["name"] for r in rules} == expected and all(
            r["health"] == "ok" for r in rules
        )

    wait_until("rule evaluation", healthy, time.monotonic() + 15, stack.logs)
    assert {g["name"] for g in state["groups"]} == {"runpod-diagnoses", "runpod-monitor"}
    assert all(g["file"] == str(ALERTS) for g in state["groups"])


def test_every_panel_query_returns_data(stack: Stack) -> None:
    """Every dashboard query returns a non-empty result, and no quantile panel only NaN."""
    queries = [(title, substitute(expr)) for title, expr in generator().panel_queries()]
    failing: dict[str, str] = {}

    def no_data(expr: str) -> str | None:
        result = stack.query(expr)
        if not result:
            return "empty result"
        if expr.startswith("histogram_quantile") and all(
            math.isnan(float(r["value"][1])) for r in result
        ):
            return "only NaN (no observation counted by rate() in the window)"
        return None

    def all_have_data() -> bool:
        failing.clear()
        for title, expr in queries:
            reason = no_data(expr)
            if reason is not None:
                failing[f"{title}: {expr}"] = reason
        return not failing

    deadline = stack.started + DATA_DEADLINE_S
    while not all_have_data() and time.monotonic() < deadline:
        time.sleep(2)
    assert not failing, "panels without data after {:.0f} s:\n{}".format(
        time.monotonic() - stack.started,
        "\n".join(f"  {k} -> {v}" for k, v in failing.items()),
    )


def test_critical_diagnoses_raise_alerts(stack: Stack) -> None:
    """Every critical diagnosis the demo raised became a firing alert of alerts.yml."""
    seen = 'max_over_time(runpod_diagnosis_active{severity="critical"}[10m] offset 5s)'
    wait_until("a critical diagnosis", lambda: bool(stack.query(seen)),
               time.monotonic() + 30, stack.logs)
    unalerted = stack.query(
        f'{seen} unless on (code, endpoint_id) max_over_time(ALERTS{{alertstate="firing"}}[10m])'
    )
    assert unalerted == [], [r["metric"] for r in unalerted]
    fired = stack.query('count by (alertname) (max_over_time(ALERTS{alertstate="firing"}[10m]))')
    assert "Watchdog" in {r["metric"]["alertname"] for r in fired}


def test_alertmanager_receives_alerts(stack: Stack) -> None:
    """Prometheus delivers its alerts to the real Alertmanager (the Watchdog among them)."""
    if stack.am_url is None:
        pytest.skip("the Alertmanager binary is not installed (Debian package "
                    "prometheus-alertmanager; scripts/install-system-deps installs it)")
    names: set[str] = set()

    def watchdog_arrived() -> bool:
        alerts = stack.client.get(f"{stack.am_url}/api/v2/alerts").json()
        names.update(a["labels"]["alertname"] for a in alerts)
        return "Watchdog" in names

    wait_until("the Watchdog at Alertmanager", watchdog_arrived, time.monotonic() + 20,
               stack.logs)


PROMTOOL = shutil.which("promtool")


def promtool_findings(exposition: str) -> str:
    """What `promtool check metrics` reports for an exposition: empty when it is clean."""
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, "check", "metrics"], input=exposition.encode(),
                          capture_output=True, timeout=30, check=False)
    findings = (done.stdout + done.stderr).decode("utf-8", "replace").strip()
    if done.returncode != 0 and not findings:
        findings = f"promtool exited {done.returncode}"
    return findings


def families_without_samples(exposition: str) -> list[str]:
    from prometheus_client.parser import text_string_to_metric_families

    return [f.name for f in text_string_to_metric_families(exposition) if not f.samples]


def test_exposition_passes_promtool_lint(stack: Stack) -> None:
    """Once every metric family has samples, `promtool check metrics` finds nothing."""
    if PROMTOOL is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    # the linter judges a known-bad exposition, so a silent promtool cannot pass this test
    bad = "# HELP runpod_x_runway_hours h\n# TYPE runpod_x_runway_hours gauge\n" \
          "runpod_x_runway_hours 1\n"
    assert "base unit" in promtool_findings(bad)
    body = ""
    empty: list[str] = ["(no scrape yet)"]
    deadline = stack.started + DATA_DEADLINE_S
    while time.monotonic() < deadline:
        body = stack.client.get(f"{stack.monitor_url}/metrics").text
        empty = families_without_samples(body)
        if not empty:
            break
        time.sleep(2)
    assert not empty, f"families without samples after {DATA_DEADLINE_S:.0f} s: {empty}"
    assert promtool_findings(body) == ""


def test_prometheus_scrapes_the_gzip_answer(stack: Stack) -> None:
    """Prometheus asks for gzip and reads what the monitor answers: its target is up with
    no scrape error, and the same request gets a gzip body that unpacks to the exposition."""

    found: list[dict[str, Any]] = []

    def up() -> bool:
        targets = stack.client.get(f"{stack.prom_url}/api/v1/targets").json()["data"]
        found[:] = [t for t in targets["activeTargets"]
                    if t["scrapeUrl"].endswith("/metrics") and t["health"] == "up"]
        return bool(found)

    wait_until("the monitor's target up", up, time.monotonic() + 15, stack.logs)
    assert [t["lastError"] for t in found] == [""]
    raw = httpx.get(f"{stack.monitor_url}/metrics", trust_env=False,
                    headers={"Accept-Encoding": "gzip"})
    assert raw.headers["Content-Encoding"] == "gzip"
    assert "runpod_account_balance_usd" in raw.text  # httpx unpacked it
    assert len(raw.content) > 5 * int(raw.headers["Content-Length"])
