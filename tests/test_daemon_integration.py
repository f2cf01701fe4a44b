"""The daemon as a user runs it: `python -m monitor run` against `python -m monitor simulate`,
over loopback, including a SIGKILL mid-incident and a restart; and the `demo` command."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from daemonkit import (
    SIGTERM,
    DelayProxy,
    Proc,
    base_env,
    find_samples,
    free_port,
    http,
    metric_samples,
    one_value,
    procs,
    sim_port,
    start_simulator,
    wait_listening,
    wait_until,
    write_config,
    write_yaml,
)

from monitor import __version__

pytestmark = pytest.mark.integration

KEY = "it-test-key-5b0c7f1e2d9a"
SICK, HEALTHY, LOOP = "itsick000001", "ithealthy002", "itloop000003"
BALANCE = 73.25
SPEND = 0.5
# crash_loop without restarts is raised once the queue has been stalled this long; the
# daemon is killed about half-way through, and restarted.
WINDOW_S = 10
RULES = {"crash_loop_s": 6, "crash_loop_no_restart_s": WINDOW_S}


def _template(tid: str, disk: int) -> dict[str, Any]:
    return {"id": tid, "name": tid, "imageName": f"example/{tid}:1", "dockerArgs": "",
            "containerDiskInGb": disk, "env": []}


SCENARIO: dict[str, Any] = {
    "name": "daemon-integration",
    "interval_s": 1,
    "monitor": {"rules": RULES},
    # one cycle a second reads more of REST v2 than its default 60 calls a minute allow
    "v2": {"quota": {"minute": 100000, "hour": 10000000, "day": 100000000}},
    "account": {"clientBalance": BALANCE, "currentSpendPerHr": SPEND, "spendLimit": 80},
    "networkVolumes": [{"id": "itvol1", "name": "models", "size": 50, "dataCenterId": "US-TX-3"}],
    "endpoints": [
        {"id": SICK, "name": "sick-worker", "gpuIds": "AMPERE_48,ADA_48_PRO",
         "networkVolumeId": "itvol1", "workersMin": 0, "workersMax": 2,
         "template": _template("tpl-sick", 40),
         "health": {"jobs": {"completed": 10}, "workers": {"idle": 1, "ready": 1}}},
        {"id": HEALTHY, "name": "healthy-api", "gpuIds": "ADA_24,AMPERE_24",
         "workersMin": 0, "workersMax": 1, "template": _template("tpl-ok", 60),
         "health": {"jobs": {"completed": 100}, "workers": {"idle": 1, "ready": 1}}},
        {"id": LOOP, "name": "loop-worker", "gpuIds": "ADA_24,AMPERE_24",
         "workersMin": 0, "workersMax": 1, "template": _template("tpl-loop", 60),
         "health": {"jobs": {"completed": 5}, "workers": {"idle": 1, "ready": 1}}},
    ],
    "steps": [
        {"cycles": 2},
        # sick-worker: throttled (no capacity in the volume's datacenter) and one crashed worker
        {"cycles": 3, "endpoints": {SICK: {"health": {
            "jobs": {"inQueue": 2}, "workers": {"idle": 0, "ready": 0, "throttled": 1,
                                                "unhealthy": 1}}}}},
        # loop-worker: a queue that never moves beside a running worker (held from here on)
        {"cycles": 1, "endpoints": {LOOP: {"health": {
            "jobs": {"inQueue": 3}, "workers": {"idle": 0, "ready": 0, "running": 1}}}}},
    ],
}


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _by_key(diagnoses: list[dict[str, Any]]) -> dict[tuple[str, str | None], dict[str, Any]]:
    return {(d["code"], d["endpoint_id"]): d for d in diagnoses}


@dataclass
class Story:
    """What the module's one run-kill-restart-stop story observed."""

    metrics: str = ""
    healthz: tuple[int, str] = (0, "")
    diagnoses: list[dict[str, Any]] = field(default_factory=list)
    endpoints: dict[str, Any] = field(default_factory=dict)
    scraped_at: float = 0.0
    before_kill: list[dict[str, Any]] = field(default_factory=list)
    stall_seen_t: float = 0.0
    killed_at: float = 0.0
    kill_status: int = 0
    restarted_at: float = 0.0
    loop_raised: dict[str, Any] = field(default_factory=dict)
    after_restart: list[dict[str, Any]] = field(default_factory=list)
    term_status: int | None = None
    run1: list[dict[str, Any]] = field(default_factory=list)
    run2: list[dict[str, Any]] = field(default_factory=list)
    run2_stderr: str = ""


def _diagnoses(client: Any, base: str) -> list[dict[str, Any]]:
    r = client.get(f"{base}/api/v1/diagnoses")
    r.raise_for_status()
    out: list[dict[str, Any]] = r.json()["diagnoses"]
    return out


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Story:
    """Simulator + daemon; scrape; SIGKILL mid-incident; restart; wait for crash_loop; SIGTERM."""
    tmp = tmp_path_factory.mktemp("daemon-it")
    scenario = write_yaml(tmp / "scenario.yaml", SCENARIO)
    s = Story()
    with procs(tmp) as group:
        sim = start_simulator(group, scenario, KEY)
        port = free_port()
        config = write_config(tmp / "config.yaml", sim_port(sim), port, tmp / "state.db",
                              rules=RULES)
        base = f"http://127.0.0.1:{port}"
        env = base_env(RUNPOD_API_KEY=KEY)
        run1: Proc | None = None
        run2: Proc | None = None
        try:
            run1 = group.monitor("run1", "run", "--config", str(config), env=env)
            wait_listening(run1, base)
            with http() as client:
                wanted = {("no_gpu_capacity", SICK), ("workers_unhealthy", SICK)}
                wait_until("no_gpu_capacity and workers_unhealthy",
                           lambda: wanted <= set(_by_key(_diagnoses(client, base))), 20)
                s.metrics = client.get(f"{base}/metrics").text
                s.scraped_at = time.time()
                r = client.get(f"{base}/healthz")
                s.healthz = (r.status_code, r.text)
                s.diagnoses = _diagnoses(client, base)
                s.endpoints = client.get(f"{base}/api/v1/endpoints").json()

                def stall_seen() -> float | None:
                    body = client.get(f"{base}/api/v1/endpoints").json()
                    rows = {e["endpoint_id"]: e for e in body["endpoints"]}
                    jobs = rows[LOOP]["jobs"]
                    return _ts(body["observed_at"]) if jobs and jobs["in_queue"] == 3 else None

                s.stall_seen_t = wait_until("loop-worker's queue to stall", stall_seen, 20, 0.1)
                # SIGKILL about half-way through crash_loop's window
                time.sleep(max(0.0, s.stall_seen_t + WINDOW_S / 2 - time.time()))
                s.before_kill = _diagnoses(client, base)
                s.killed_at = time.time()
                run1.kill()
                s.kill_status = run1.popen.returncode

                s.restarted_at = time.time()
                run2 = group.monitor("run2", "run", "--config", str(config), env=env)
                wait_listening(run2, base)

                def loop_raised() -> dict[str, Any] | None:
                    return _by_key(_diagnoses(client, base)).get(("crash_loop", LOOP))

                s.loop_raised = wait_until("crash_loop after the restart", loop_raised,
                                           WINDOW_S + 15, 0.1)
                time.sleep(1.5)  # one more cycle on restored state
                s.after_restart = _diagnoses(client, base)
            run2.signal(SIGTERM)
            s.term_status = run2.wait(15)
        finally:
            for proc in (run1, run2):
                if proc is not None:
                    proc.kill()
        s.run1 = run1.log_lines()
        s.run2 = run2.log_lines()
        s.run2_stderr = run2.stderr()
    return s


# ---------------------------------------------------------------- what a scrape shows


def test_metrics_account_gauges_match_scenario(story: Story) -> None:
    """/metrics shows the scenario's balance, spend and their runway, and the build info."""
    samples = metric_samples(story.metrics)
    assert one_value(samples, "runpod_account_balance_usd") == BALANCE
    assert one_value(samples, "runpod_account_spend_usd_per_hour") == SPEND
    runway = one_value(samples, "runpod_account_runway_seconds")
    assert runway == pytest.approx(BALANCE / SPEND * 3600)
    assert one_value(samples, "runpod_monitor_build_info", version=__version__) == 1


def test_metrics_endpoint_series_match_scenario(story: Story) -> None:
    """Endpoint info labels, worker states and job counts are the simulator's, per endpoint."""
    samples = metric_samples(story.metrics)
    info = {s[1]["endpoint_id"]: s[1] for s in find_samples(samples, "runpod_endpoint_info")}
    assert set(info) == {SICK, HEALTHY, LOOP}
    assert info[SICK] == {"endpoint_id": SICK, "endpoint": "sick-worker",
                          "gpu_ids": "AMPERE_48,ADA_48_PRO", "network_volume_id": "itvol1",
                          "datacenter": "US-TX-3"}
    assert info[HEALTHY]["endpoint"] == "healthy-api"
    assert info[HEALTHY]["network_volume_id"] == ""
    workers = "runpod_endpoint_workers"
    assert one_value(samples, workers, endpoint_id=SICK, state="throttled") == 1
    assert one_value(samples, workers, endpoint_id=SICK, state="unhealthy") == 1
    assert one_value(samples, workers, endpoint_id=SICK, state="idle") == 0
    assert one_value(samples, workers, endpoint_id=HEALTHY, state="throttled") == 0
    assert one_value(samples, workers, endpoint_id=HEALTHY, state="idle") == 1
    assert {s[1]["state"] for s in find_samples(samples, workers, endpoint_id=SICK)} == {
        "idle", "initializing", "ready", "running", "throttled", "unhealthy"}
    assert one_value(samples, "runpod_endpoint_jobs", endpoint_id=SICK, state="in_queue") == 2
    assert one_value(samples, "runpod_endpoint_jobs", endpoint_id=HEALTHY,
                     state="completed") == 100
    assert one_value(samples, "runpod_endpoint_workers_max", endpoint_id=SICK) == 2
    for eid in (SICK, HEALTHY, LOOP):
        assert one_value(samples, "runpod_endpoint_up", endpoint_id=eid) == 1
        assert one_value(samples, "runpod_endpoint_http_status", endpoint_id=eid) == 200


def test_metrics_diagnoses_and_probe_freshness(story: Story) -> None:
    """Active diagnoses are labelled series (none for the healthy endpoint); probes are fresh."""
    samples = metric_samples(story.metrics)
    active = find_samples(samples, "runpod_diagnosis_active")
    assert one_value(samples, "runpod_diagnosis_active", code="no_gpu_capacity",
                     endpoint_id=SICK, endpoint="sick-worker", severity="critical") == 1
    assert one_value(samples, "runpod_diagnosis_active", code="workers_unhealthy",
                     endpoint_id=SICK) == 1
    assert not [s for s in active if s[1]["endpoint_id"] == HEALTHY]
    assert one_value(samples, "runpod_diagnoses_raised_total", code="no_gpu_capacity",
                     severity="critical") == 1
    last = one_value(samples, "runpod_probe_last_success_timestamp_seconds", probe="graphql")
    assert story.scraped_at - 5 < last <= story.scraped_at + 1
    assert find_samples(samples, "runpod_probe_last_success_timestamp_seconds", probe="health")
    assert find_samples(samples, "runpod_monitor_cycle_duration_seconds_count")


def test_healthz_and_json_api(story: Story) -> None:
    """/healthz is 200 with a reason; diagnoses keep the contract; all endpoints are listed."""
    status, text = story.healthz
    assert status == 200
    assert text.startswith("ok")
    contract = {"code", "scope", "endpoint_id", "endpoint_name", "severity", "summary",
                "evidence", "remedy", "since"}
    assert story.diagnoses
    for d in story.diagnoses:
        assert set(d) == contract
        assert d["scope"] == "endpoint"
        assert d["endpoint_name"] == "sick-worker"
        assert d["summary"]
        assert d["remedy"]
        assert isinstance(d["evidence"], dict)
        assert d["evidence"]
        assert d["since"].endswith("Z")
    capacity = _by_key(story.diagnoses)[("no_gpu_capacity", SICK)]
    assert capacity["evidence"]["throttled"] == 1
    # the default control plane (auto) quotes REST v2: a PATCH that widens the GPU pools
    assert f"curl -s -X PATCH https://api.runpod.io/v2/serverless/{SICK} " in capacity["remedy"]
    assert '"gpu": {"pools": ["AMPERE_48", "ADA_48_PRO", ' in capacity["remedy"]
    assert "saveEndpoint" not in capacity["remedy"]
    rows = {e["endpoint_id"]: e for e in story.endpoints["endpoints"]}
    assert set(rows) == {SICK, HEALTHY, LOOP}
    assert rows[HEALTHY]["endpoint_name"] == "healthy-api"
    assert rows[HEALTHY]["workers"]["idle"] == 1
    assert rows[SICK]["workers"]["throttled"] == 1
    assert rows[SICK]["config"]["network_volume_id"] == "itvol1"
    assert story.endpoints["observed_at"].endswith("Z")


# ---------------------------------------------------------------- SIGKILL and restart


def test_restart_does_not_repeat_alerts(story: Story) -> None:
    """Across the SIGKILLed run and its restart, each incident is announced exactly once."""
    assert story.kill_status == -9
    firing = Counter(
        (line["code"], line["endpoint_id"])
        for line in story.run1 + story.run2
        if line.get("event") == "alert" and line.get("kind") == "firing"
    )
    assert {("no_gpu_capacity", SICK), ("workers_unhealthy", SICK),
            ("crash_loop", LOOP)} <= set(firing)
    assert all(n == 1 for n in firing.values()), firing
    run1_codes = {line["code"] for line in story.run1 if line.get("event") == "alert"}
    assert "crash_loop" not in run1_codes


def test_restart_keeps_incidents_and_their_since(story: Story) -> None:
    """The incidents active at the SIGKILL are active after the restart with the same `since`."""
    before = {k: d["since"] for k, d in _by_key(story.before_kill).items()}
    after = {k: d["since"] for k, d in _by_key(story.after_restart).items()}
    assert {("no_gpu_capacity", SICK), ("workers_unhealthy", SICK)} <= set(before)
    assert ("crash_loop", LOOP) not in before
    for key, since in before.items():
        assert after.get(key) == since, key
    restored = [line for line in story.run2 if line.get("event") == "state restored"]
    assert restored
    assert restored[0]["active"] == len(before)


def test_restart_keeps_the_window_counting(story: Story) -> None:
    """crash_loop rises within one window of the restart, from a run begun before the kill."""
    raised = story.loop_raised
    since = _ts(raised["since"])
    first_stalled_t = since - raised["evidence"]["stalled_s"]
    assert raised["evidence"]["restarts"] == 0
    assert raised["evidence"]["stalled_s"] >= WINDOW_S
    # the run the rule measured started before the kill...
    assert first_stalled_t < story.killed_at
    assert first_stalled_t <= story.stall_seen_t + 0.01
    # ...and the raise came sooner than a run starting after the restart could allow
    assert story.restarted_at < since < story.restarted_at + WINDOW_S
    assert story.stall_seen_t + WINDOW_S - 0.01 <= since


def test_sigterm_exits_zero_with_stopped_line(story: Story) -> None:
    """SIGTERM stops the restarted daemon with status 0 and a final "stopped" log line."""
    assert story.term_status == 0
    stopped = [line for line in story.run2 if line.get("event") == "stopped"]
    assert len(stopped) == 1
    assert stopped[0]["cycles"] >= 1
    assert "Traceback" not in story.run2_stderr


SLOW: dict[str, Any] = {
    "name": "slow-cycle",
    "interval_s": 1,
    "account": {"clientBalance": 50, "currentSpendPerHr": 0.1},
    "endpoints": [
        {"id": "itslow000001", "name": "slow", "gpuIds": "ADA_24,AMPERE_24", "workersMin": 0,
         "workersMax": 1, "template": _template("tpl-slow", 60),
         "health": {"workers": {"idle": 1}}},
    ],
    "steps": [{"cycles": 1}],
}


def test_sigterm_lets_the_cycle_in_flight_finish(tmp_path: Path) -> None:
    """SIGTERM mid-cycle: the cycle completes and is logged, then 'stopped', exit 0."""
    scenario = write_yaml(tmp_path / "slow.yaml", SLOW)
    with procs(tmp_path) as group:
        sim = start_simulator(group, scenario, KEY)
        with DelayProxy(sim, delay_s=0.4) as proxy:
            config = write_config(tmp_path / "config.yaml", proxy.port, free_port(),
                                  tmp_path / "state.db", runpod={"timeout_s": 3})
            run = group.monitor("run", "run", "--config", str(config),
                                env=base_env(RUNPOD_API_KEY=KEY))
            try:
                def cycles_logged() -> int:
                    return sum(1 for x in run.log_lines() if x.get("event") == "cycle")

                wait_until("two cycles", lambda: cycles_logged() >= 2, 20, every_s=0.05)
                # the next cycle's first request is being held by the proxy: signal now
                wait_until("a cycle in flight", lambda: proxy.inflight > 0, 5, every_s=0.005)
                sent_at = time.time()
                run.signal(SIGTERM)
                status = run.wait(15)
            finally:
                run.kill()
    lines = run.log_lines()
    assert status == 0
    events = [x.get("event") for x in lines]
    assert events[-1] == "stopped"
    cycles = [x for x in lines if x.get("event") == "cycle"]
    assert [x["cycle"] for x in cycles] == list(range(1, len(cycles) + 1))
    # the last cycle finished after the signal: it was in flight and was let finish
    assert _ts(cycles[-1]["timestamp"]) > sent_at
    assert cycles[-1]["failures"] == 0
    assert lines[-1]["cycles"] == cycles[-1]["cycle"]
    assert "Traceback" not in run.stderr()


# ---------------------------------------------------------------- demo


ACCOUNT_GAUGES = {"runpod_account_balance_usd", "runpod_account_spend_usd_per_hour"}


def test_demo_shows_several_diagnoses_and_account_gauges(tmp_path: Path) -> None:
    """demo within 60 s: >= 3 diagnosis codes, the account gauges, /healthz 200, every scrape
    answered."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    codes: set[str] = set()
    names: set[str] = set()
    failed_scrapes = 0
    with procs(tmp_path) as group:
        demo = group.monitor("demo", "demo", "--port", str(port))
        wait_listening(demo, base)
        with http() as client:
            assert client.get(f"{base}/healthz").status_code == 200
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                assert demo.alive(), demo.tail()
                r = client.get(f"{base}/metrics")
                if r.status_code != 200:
                    failed_scrapes += 1
                else:
                    samples = metric_samples(r.text)
                    names |= {s[0] for s in samples}
                    codes |= {s[1]["code"] for s in
                              find_samples(samples, "runpod_diagnosis_active")}
                if len(codes) >= 3 and names >= ACCOUNT_GAUGES:
                    break  # shown within the 60 s; scraping on would prove nothing more
                time.sleep(1)
            health = client.get(f"{base}/healthz")
        demo.signal(SIGTERM)
        status = demo.wait(15)
    assert failed_scrapes == 0
    assert len(codes) >= 3, codes
    assert names >= ACCOUNT_GAUGES
    assert health.status_code == 200
    assert status == 0
    assert "runpod-monitor demo" in demo.stdout()
