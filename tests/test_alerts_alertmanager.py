"""The Alertmanager sink: the /api/v2/alerts payload against a loopback receiver, and two
monitor replicas behind the real Alertmanager binary (one notification per incident)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web
from alertkit import T0, Story, diag, make_router

from monitor.alerts.alertmanager import AlertmanagerSink
from monitor.alerts.router import AlertRouter
from monitor.config import load_settings
from monitor.metrics import MonitorMetrics
from monitor.pipeline.cycle import build_pipeline
from monitor.runpod.client import RunPodClient
from monitor.simulator import Scenario, SimulatorServer
from monitor.state.store import Store


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@dataclass
class Receiver:
    """A loopback HTTP server keeping every JSON body POSTed to it."""

    status: int = 200
    bodies: list[tuple[str, Any]] = field(default_factory=list)
    port: int = 0
    runner: web.AppRunner | None = None

    async def start(self) -> Receiver:
        async def handle(request: web.Request) -> web.Response:
            self.bodies.append((request.path, await request.json()))
            return web.json_response({}, status=self.status)

        app = web.Application()
        app.router.add_post("/{tail:.*}", handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.port = int(self.runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


async def test_payload_refresh_and_resolve(receiver: Receiver) -> None:
    """Every cycle (once, not every delivery round) posts all active alerts (labels
    alertname, endpoint_id, endpoint, severity; annotations summary, remedy; endsAt a few
    intervals ahead); an incident that ends is posted once with endsAt = its resolution
    time."""
    sink = AlertmanagerSink(receiver.url, interval_s=30)
    story = Story(make_router([sink], group_wait_s=30))
    try:
        for k in range(3):
            await story.step(T0 + 30 * k, [diag("crash_loop"), diag("low_balance", None,
                                                                    "warning")])
            await story.deliver(T0 + 30 * k)
        assert len(receiver.bodies) == 3  # no group_wait here: Alertmanager has its own
        await story.deliver(T0 + 62)  # a delivery round between cycles posts nothing new
        assert len(receiver.bodies) == 3
        path, alerts = receiver.bodies[-1]
        assert path == "/api/v2/alerts"
        by_name = {a["labels"]["alertname"]: a for a in alerts}
        crash = by_name["crash_loop"]
        assert crash["labels"] == {"alertname": "crash_loop", "endpoint_id": "ep1",
                                   "endpoint": "sdxl-images", "severity": "critical"}
        assert crash["annotations"]["summary"] == "crash_loop on sdxl-images: 3 jobs wait."
        assert "mutation { saveEndpoint" in crash["annotations"]["remedy"]
        assert _ts(crash["startsAt"]) == T0
        assert _ts(crash["endsAt"]) == T0 + 60 + 120  # now + 4 intervals
        assert by_name["low_balance"]["labels"] == {"alertname": "low_balance",
                                                    "severity": "warning"}
        receiver.bodies.clear()
        await story.step(T0 + 90, [diag("low_balance", None, "warning")])
        await story.deliver(T0 + 90)
        resolved = [a for _, body in receiver.bodies for a in body
                    if _ts(a["endsAt"]) <= T0 + 90]
        assert [(a["labels"]["alertname"], _ts(a["endsAt"])) for a in resolved] == [
            ("crash_loop", T0 + 90)]
        refreshed = receiver.bodies[-1][1]
        assert [a["labels"]["alertname"] for a in refreshed] == ["low_balance"]
        receiver.bodies.clear()
        await story.step(T0 + 120, [diag("low_balance", None, "warning")])
        await story.deliver(T0 + 120)
        assert all(a["labels"]["alertname"] == "low_balance"
                   for _, body in receiver.bodies for a in body)  # resolved only once
    finally:
        await sink.close()


async def test_resolved_goes_through_the_outbox(receiver: Receiver) -> None:
    """While Alertmanager fails, the resolved alert stays in the outbox and is posted
    once it answers again; active alerts are simply re-sent next cycle."""
    sink = AlertmanagerSink(receiver.url, interval_s=30)
    story = Story(make_router([sink]))
    try:
        await story.step(T0, [diag("crash_loop")])
        await story.deliver(T0)
        receiver.status = 500
        await story.step(T0 + 30, [])
        await story.deliver(T0 + 30)
        assert story.router.outbox.store.pending("alertmanager") == 1
        receiver.status = 200
        receiver.bodies.clear()
        await story.deliver(T0 + 60)
        assert story.router.outbox.store.pending("alertmanager") == 0
        (_path, alerts), = receiver.bodies
        assert _ts(alerts[0]["endsAt"]) == T0 + 30
    finally:
        await sink.close()


async def test_severity_change_ends_the_old_alert(receiver: Receiver) -> None:
    """Severity is a label: when it changes, the alert under the old labels is ended at
    once instead of lingering until it expires; silenced alerts are not re-sent."""
    from monitor.alerts.silences import SilenceBook

    book = SilenceBook()
    book.add("job_failures", None, T0 + 3600, T0)
    sink = AlertmanagerSink(receiver.url, interval_s=30)
    story = Story(make_router([sink], silences=book))
    try:
        await story.step(T0, [diag("no_gpu_capacity", severity="warning"),
                              diag("job_failures", severity="warning")])
        await story.deliver(T0)
        receiver.bodies.clear()
        await story.step(T0 + 30, [diag("no_gpu_capacity", severity="critical"),
                                   diag("job_failures", severity="warning")])
        await story.deliver(T0 + 30)
        sent = [(a["labels"]["severity"], _ts(a["endsAt"]) <= T0 + 30)
                for _, body in receiver.bodies for a in body]
        assert sorted(sent) == [("critical", False), ("warning", True)]
    finally:
        await sink.close()


# ----------------------------------------------------------------- the real binary

AM_BIN = shutil.which("alertmanager") or shutil.which("prometheus-alertmanager")
EP = "ephaam000001"
HA_SCENARIO: dict[str, Any] = {
    "name": "ha-alertmanager",
    "interval_s": 1,
    # one cycle a second for both replicas: a REST v2 quota to match
    "v2": {"quota": {"minute": 100_000, "hour": 10_000_000, "day": 100_000_000}},
    "account": {"clientBalance": 500, "currentSpendPerHr": 0.1},
    "endpoints": [{
        "id": EP, "name": "ha-endpoint", "gpuIds": "AMPERE_48", "workersMin": 0,
        "workersMax": 1, "idleTimeout": 5,
        "template": {"id": "tpl-ha", "name": "ha", "imageName": "u/ha:1", "dockerArgs": "",
                     "containerDiskInGb": 60, "env": []},
        "health": {"workers": {"idle": 1}},
    }],
    "steps": [
        {"cycles": 2},
        {"cycles": 6, "endpoints": {EP: {"health": {
            "jobs": {"inQueue": 2}, "workers": {"idle": 0, "throttled": 1, "unhealthy": 1}}}}},
        {"cycles": 4, "endpoints": {EP: {"health": {
            "jobs": {"inQueue": 0}, "workers": {"idle": 1, "throttled": 0, "unhealthy": 0}}}}},
    ],
}


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """The real Alertmanager on loopback (group_wait 1s, group_interval 1s), sending to a
    webhook port it is told; yields (its URL, the webhook port)."""
    if AM_BIN is None:
        pytest.skip("the alertmanager binary is not on PATH (scripts/install-system-deps "
                    "installs Debian's prometheus-alertmanager)")
    import socket

    def free() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    hook_port, am_port = free(), free()
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        "route:\n"
        "  receiver: hook\n"
        "  group_by: [alertname, endpoint_id]\n"
        "  group_wait: 1s\n"
        "  group_interval: 1s\n"
        "  repeat_interval: 1h\n"
        "receivers:\n"
        "  - name: hook\n"
        "    webhook_configs:\n"
        f"      - url: http://127.0.0.1:{hook_port}/hook\n"
        "        send_resolved: true\n"
    )
    log = (tmp_path / "alertmanager.log").open("wb")
    proc = subprocess.Popen(
        [AM_BIN, f"--config.file={config}", f"--storage.path={tmp_path / 'am-data'}",
         f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="],
        stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"},
    )
    try:
        import urllib.request

        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{am_port}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("Alertmanager did not start:\n"
                                     + (tmp_path / "alertmanager.log").read_text())
            time.sleep(0.1)
        yield f"http://127.0.0.1:{am_port}", hook_port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@pytest.mark.integration
async def test_two_replicas_one_notification_per_incident(
    alertmanager: tuple[str, int], tmp_path: Path
) -> None:
    """Two monitor replicas (own pipelines, own SQLite outboxes) watch the same account
    and push to one real Alertmanager: its webhook gets exactly one firing and one
    resolved notification per incident."""
    am_url, hook_port = alertmanager
    hook = Receiver()
    runner_app = web.Application()

    async def handle(request: web.Request) -> web.Response:
        hook.bodies.append((request.path, await request.json()))
        return web.json_response({})

    runner_app.router.add_post("/hook", handle)
    runner = web.AppRunner(runner_app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()

    scenario = Scenario.from_dict(HA_SCENARIO)
    key = "k" * 24
    server = SimulatorServer(scenario, key)
    sim = await server.start()
    routers: list[AlertRouter] = []
    stores: list[Store] = []
    sinks: list[AlertmanagerSink] = []
    replica_metrics: list[MonitorMetrics] = []
    try:
        async with RunPodClient(api_key=key, graphql_url=f"{sim}/graphql",
                                rest_url=f"{sim}/v2", timeout_s=0.5) as client:
            pipelines = []
            for i in range(2):
                store = Store(tmp_path / f"replica{i}.db")
                sink = AlertmanagerSink(am_url, interval_s=scenario.interval_s)
                metrics = MonitorMetrics()
                pipeline = build_pipeline(load_settings(None, env={}), client, sinks=[sink],
                                          store=store, metrics=metrics,
                                          interval_s=scenario.interval_s)
                replica_metrics.append(metrics)
                stores.append(store)
                sinks.append(sink)
                routers.append(pipeline.router)
                pipelines.append(pipeline)
            for k in range(1, scenario.total_cycles + 1):
                server.set_cycle(k)
                now = time.time()
                for p in pipelines:
                    await p.cycle(k, now)
                for r in routers:
                    await r.outbox.deliver(now)
                await asyncio.sleep(0.5)

            def notified() -> Counter[tuple[str, str]]:
                return Counter(
                    (a["labels"]["alertname"], a["status"])
                    for _, body in hook.bodies for a in body["alerts"]
                )

            expected = {("no_gpu_capacity", "firing"), ("no_gpu_capacity", "resolved"),
                        ("workers_unhealthy", "firing"), ("workers_unhealthy", "resolved")}
            deadline = time.monotonic() + 20
            while not expected <= set(notified()) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
            await asyncio.sleep(3)  # room for a duplicate to show up
            # what Alertmanager holds now: both incidents, resolved, one alert each
            async with ClientSession() as http, http.get(f"{am_url}/api/v2/alerts") as resp:
                held = await resp.json()
    finally:
        await server.stop()
        for s in sinks:
            await s.close()
        for st in stores:
            st.close()
        await runner.cleanup()
    counts = notified()
    print("webhook notifications:", dict(counts),
          "bodies:", [(b["status"], [a["labels"]["alertname"] for a in b["alerts"]])
                      for _, b in hook.bodies])
    assert set(counts) == expected, json.dumps(hook.bodies)[:2000]
    assert all(n == 1 for n in counts.values()), counts
    assert all(a["status"]["state"] != "active" for a in held), held
    for metrics in replica_metrics:  # each replica pushed both incidents and both ends
        sent = {k: v for k, v in _sent(metrics).items() if k[0] == "alertmanager" and v}
        assert sent == {("alertmanager", "firing"): 2, ("alertmanager", "resolved"): 2}


def _sent(metrics: MonitorMetrics) -> dict[tuple[str, str], float]:
    from prometheus_client.parser import text_string_to_metric_families

    body, _ = metrics.render()
    return {
        (s.labels["sink"], s.labels["kind"]): s.value
        for fam in text_string_to_metric_families(body.decode())
        for s in fam.samples if s.name == "runpod_alerts_sent_total"
    }
