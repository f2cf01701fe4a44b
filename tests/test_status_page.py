"""The status page at `/`: rendering from a fake runtime, and a real browser over the demo."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestClient, TestServer

from model.history import History
from model.observation import (
    OK,
    Account,
    EndpointConfig,
    EndpointSample,
    EnvVar,
    Health,
    Job,
    Observation,
    Template,
)
from monitor.http.status_page import render
from monitor.http.web import build_app
from monitor.state.episodes import Episode
from monitor.state.incidents import Incident
from rules.diagnosis import Diagnosis

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
API_KEY = "rpa_TESTSECRETAPIKEY0123456789"
TEMPLATE_TOKEN = "hf_TemplateTokenThatMustNotShow0123456789"
XSS = "<script>alert('x')</script>"


@dataclass
class FakeRuntime:
    """A Runtime with fixed data; it holds secrets the page must never show."""

    observation: Observation | None
    active: list[Incident] = field(default_factory=list)
    ok: bool = True
    reason: str = "ok: last cycle 3 s ago"
    interval: float = 30.0
    api_key: str = API_KEY
    names: dict[str, str] = field(default_factory=dict)
    past: list[Observation] | None = None  # the history; [observation] when None
    log: list[Episode] = field(default_factory=list)

    def metrics_body(self) -> tuple[bytes, str]:
        return b"", "text/plain"

    def health(self) -> tuple[bool, str]:
        return self.ok, self.reason

    def incidents(self) -> list[Incident]:
        return self.active

    def last_observation(self) -> Observation | None:
        return self.observation

    def endpoint_name(self, endpoint_id: str) -> str:
        return self.names.get(endpoint_id, endpoint_id)

    def register_job(self, endpoint_id: str, job_id: str) -> bool:
        return True

    def interval_s(self) -> float:
        return self.interval

    def history(self) -> History:
        from model.history import Memory

        past = self.past if self.past is not None else (
            [] if self.observation is None else [self.observation])
        memory = Memory()  # what the daemon's buffer learns from each observation
        for o in past:
            memory = memory.updated(o)
        return History(tuple(past), memory)

    def episodes(self) -> list[Episode]:
        return list(self.log)


def _observation(account: Account | None = None) -> Observation:
    template = Template(
        id="tpl1", name="llm", image_name="example/llm:1",
        env=(EnvVar("HF_TOKEN", TEMPLATE_TOKEN), EnvVar("HF_HOME", "/runpod-volume/hf")),
    )
    busy = EndpointSample(
        endpoint_id="ep-busy",
        health_outcome=OK,
        http_status=200,
        health=Health(in_queue=7, in_progress=1, running=1, throttled=2, unhealthy=1, idle=0),
        jobs=(
            Job("j1", "IN_QUEUE", delay_ms=95_000),
            Job("j2", "IN_QUEUE", delay_ms=12_000),
            Job("j3", "COMPLETED", delay_ms=400_000),
        ),
        listed=True,
        config=EndpointConfig(
            id="ep-busy", name="busy<b>", gpu_ids="AMPERE_48,ADA_48_PRO",
            workers_min=0, workers_max=3, template=template,
        ),
    )
    gone = EndpointSample(endpoint_id="ep-gone", health_outcome="http_404", http_status=404)
    flaky = EndpointSample(endpoint_id="ep-flaky", health_outcome="timeout")
    return Observation(
        cycle=42, t=NOW - 12, control_outcome=OK,
        account=account or Account(balance=118.4, spend_per_hr=0.5, spend_limit=80),
        endpoints={"ep-busy": busy, "ep-gone": gone, "ep-flaky": flaky},
    )


def _incident(**kw: Any) -> Incident:
    values: dict[str, Any] = {
        "code": "crash_loop", "scope": "endpoint", "severity": "critical",
        "summary": "busy crash-loops.", "remedy": "Read the worker logs.",
        "evidence": {"in_queue": 7}, "endpoint_id": "ep-busy", "endpoint_name": "busy<b>",
    }
    values.update(kw)
    return Incident(Diagnosis(**values), since=NOW - 600, raised_cycle=22)


def _runtime(**kw: Any) -> FakeRuntime:
    rt = FakeRuntime(_observation(), names={"ep-busy": "busy<b>"})
    for key, value in kw.items():
        setattr(rt, key, value)
    return rt


class _Collect(HTMLParser):
    """Collects the text of elements of one class (a tiny DOM query for the tests)."""

    def __init__(self, tag: str, cls: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tag, self.cls = tag, cls
        self.found: list[str] = []
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = (dict(attrs).get("class") or "").split()
        if self._depth:
            self._depth += tag == self.tag
        elif tag == self.tag and self.cls in classes:
            self._depth = 1
            self.found.append("")

    def handle_endtag(self, tag: str) -> None:
        if self._depth and tag == self.tag:
            self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._depth:
            self.found[-1] += data


def texts(page: str, tag: str, cls: str) -> list[str]:
    """The text content of every `<tag class="... cls ...">` in the page."""
    parser = _Collect(tag, cls)
    parser.feed(page)
    return parser.found


# ---------------------------------------------------------------- unit: rendering


def test_summary_markup_is_escaped() -> None:
    """A diagnosis summary holding <script> shows as text, never as markup."""
    page = render(_runtime(active=[_incident(summary=XSS)]), now=NOW)
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert texts(page, "p", "summary") == [XSS]


def test_every_runpod_value_is_escaped() -> None:
    """Names, evidence keys and values, codes and remedies from RunPod or rules are escaped."""
    incident = _incident(
        code="<i>code", evidence={"<k>": "<v>", "list": ["<x>"]},
        remedy="</pre><img src=x onerror=alert(1)>",
    )
    page = render(_runtime(active=[incident]), now=NOW)
    for raw in ("<i>", "<k>", "<v>", "<x>", "<img", "busy<b>"):
        assert raw not in page
    assert "busy&lt;b&gt;" in page


def test_remedy_is_shown_in_a_pre() -> None:
    """The remedy appears whole, whitespace kept, in a <pre>."""
    remedy = 'Fix it:\n  mutation { saveEndpoint(input: { id: "ep-busy" }) { id } }'
    page = render(_runtime(active=[_incident(remedy=remedy)]), now=NOW)
    assert texts(page, "pre", "remedy") == [remedy]


def test_diagnosis_card_has_severity_code_endpoint_since_and_evidence() -> None:
    """A diagnosis card shows its severity colour class, code, endpoint, since and evidence."""
    page = render(_runtime(active=[_incident(evidence={"in_queue": 7, "ratio": 0.123456})]),
                  now=NOW)
    assert 'class="card diag critical"' in page
    assert '<code class="code">crash_loop</code>' in page
    assert "ep-busy" in page
    assert '<time datetime="2025-12-31T23:50:00Z"' in page
    assert "(10 min ago)" in page
    assert "<th>in_queue</th><td>7</td>" in page
    assert "<th>ratio</th><td>0.123456</td>" in page


def test_no_secret_on_the_page() -> None:
    """Neither the runtime's API key nor a template env value reaches the page."""
    page = render(_runtime(active=[_incident()]), now=NOW)
    assert API_KEY not in page
    assert TEMPLATE_TOKEN not in page
    assert "HF_TOKEN" not in page


def test_account_balance_spend_and_runway() -> None:
    """The account card shows balance, spend per hour, the runway and the spend limit."""
    page = render(_runtime(), now=NOW)
    assert "$118.40" in page
    assert "$0.500/h" in page
    assert "236.8 h" not in page
    assert "9.9 days" in page
    assert "limit $80.00/h" in page
    low = _observation(Account(balance=0.4, spend_per_hr=1.2))
    assert "20 min" in render(_runtime(observation=low), now=NOW)
    idle = _observation(Account(balance=10, spend_per_hr=0))
    assert "Runway</div><div class=\"value\">—" in render(_runtime(observation=idle), now=NOW)


def test_low_balance_colours_the_account_card() -> None:
    """An active low_balance diagnosis colours balance and runway with its severity."""
    low = _incident(code="low_balance", scope="account", endpoint_id=None, endpoint_name=None,
                    severity="warning")
    page = render(_runtime(active=[low]), now=NOW)
    assert 'class="stat warning"><div class="label">Balance' in page
    assert 'href="#d-low_balance"' in page
    assert 'id="d-low_balance"' in page


def test_account_unknown_when_graphql_failed() -> None:
    """Without account data the page says why instead of showing numbers."""
    obs = _observation()
    failed = Observation(cycle=obs.cycle, t=obs.t, control_outcome="timeout",
                         endpoints=obs.endpoints)
    page = render(_runtime(observation=failed), now=NOW)
    assert "Balance and spend unknown this cycle (GraphQL probe: timeout)" in page


def test_endpoint_state_at_a_glance() -> None:
    """Each endpoint shows name and id, up or HTTP status, workers by state, queue, wait."""
    page = render(_runtime(active=[_incident()]), now=NOW)
    assert "busy&lt;b&gt;" in page
    assert "<code>ep-busy</code>" in page
    assert "up · HTTP 200" in page
    assert "down · HTTP 404" in page
    assert "unknown · timeout" in page
    assert '<span class="chip hot">throttled <b>2</b></span>' in page
    assert '<span class="chip bad">unhealthy <b>1</b></span>' in page
    assert '<span class="chip good">running <b>1</b></span>' in page
    assert '<span class="chip zero">idle <b>0</b></span>' in page
    assert "in queue<b>7</b>" in page
    assert "oldest wait<b>95 s</b>" in page  # the oldest queued job, not a finished one
    assert "workers<b>0–3</b>" in page
    assert 'href="#d-crash_loop-ep-busy"' in page
    assert 'id="d-crash_loop-ep-busy"' in page


def test_endpoints_with_worse_diagnoses_come_first() -> None:
    """Endpoints are ordered by their worst active diagnosis, then by name."""
    info = _incident(code="single_gpu_tier", severity="info", endpoint_id="ep-gone")
    crit = _incident(endpoint_id="ep-flaky")
    page = render(_runtime(active=[info, crit]), now=NOW)
    order = [page.index(f'id="ep-{e}"') for e in ("ep-flaky", "ep-gone", "ep-busy")]
    assert order == sorted(order)


def test_head_refresh_viewport_and_freshness() -> None:
    """The page refreshes every interval, fits a phone, and says when the last cycle ran."""
    page = render(_runtime(interval=2.5), now=NOW)
    assert '<meta http-equiv="refresh" content="3">' in page
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert "last cycle #42" in page
    assert "(12 s ago)" in page
    assert "monitor ok" in page
    stale = render(_runtime(ok=False, reason="stale: last cycle 400 s ago"), now=NOW)
    assert "monitor stale" in stale
    assert "stale: last cycle 400 s ago" in stale


def test_no_external_assets_and_no_script() -> None:
    """The page loads nothing from elsewhere and runs no script."""
    page = render(_runtime(active=[_incident()]), now=NOW)
    assert "<script" not in page
    assert "src=" not in page
    assert 'href="http' not in page
    assert "url(" not in page
    assert "@import" not in page


def test_before_the_first_cycle() -> None:
    """With no observation yet the page renders and says so; with one, it draws no chart
    yet and says when it will."""
    page = render(_runtime(observation=None), now=NOW)
    assert "no probe cycle has completed yet" in page
    first = render(_runtime(), now=NOW)
    assert "<svg" not in first
    assert "charts from the second probe cycle on" in first
    assert "No endpoint observed yet." in page
    assert "No active diagnosis" in page


async def test_route_is_html_and_behind_basic_auth() -> None:
    """GET / needs the basic auth of the other routes and serves HTML with a strict CSP."""
    app = build_app(_runtime(), auth=("admin", "pw"))
    async with TestClient(TestServer(app)) as client:
        denied = await client.get("/")
        assert denied.status == 401
        token = base64.b64encode(b"admin:pw").decode()
        ok = await client.get("/", headers={"Authorization": f"Basic {token}"})
        assert ok.status == 200
        assert ok.headers["Content-Type"] == "text/html; charset=utf-8"
        assert "default-src 'none'" in ok.headers["Content-Security-Policy"]
        assert ok.headers["Cache-Control"] == "no-store"
        assert "RunPod Serverless status" in await ok.text()


# ---------------------------------------------------------------- integration: a browser


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _diagnoses(base: str) -> list[dict[str, Any]] | None:
    """The daemon's active diagnoses, or None while it does not answer."""
    try:
        resp = httpx.get(f"{base}/api/v1/diagnoses", timeout=5, trust_env=False)
    except httpx.HTTPError:
        return None
    found: list[dict[str, Any]] = resp.json()["diagnoses"]
    return found


@pytest.mark.integration
def test_demo_status_page_in_headless_chromium(tmp_path: Path) -> None:
    """Headless Chromium shows the demo's diagnoses and a remedy, and screenshots the page."""
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (scripts/install-system-deps installs it)")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in ("RUNPOD_API_KEY",)}
    env["NO_PROXY"] = "127.0.0.1,localhost"
    log = (tmp_path / "demo.log").open("w")
    demo = subprocess.Popen(
        [sys.executable, "-m", "monitor", "demo", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    try:
        deadline = time.monotonic() + 60
        before: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            assert demo.poll() is None, (tmp_path / "demo.log").read_text()
            before = _diagnoses(base) or []
            if before:
                break
            time.sleep(0.5)
        assert before, "the demo raised no diagnosis within 60 s"
        png = tmp_path / "status.png"
        shot = subprocess.run(
            [
                browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}",
                "--window-size=412,1600", "--dump-dom", f"{base}/",
            ],
            capture_output=True, text=True, timeout=120, check=False,
        )
        after = _diagnoses(base) or []
    finally:
        demo.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            demo.wait(timeout=15)
        if demo.poll() is None:
            demo.kill()
            demo.wait(timeout=5)
        log.close()
    assert shot.returncode == 0, shot.stderr[-2000:]
    dom = shot.stdout
    # the page was rendered between the two API reads: what both list, it must show
    steady = {(d["code"], d["endpoint_id"]) for d in before} & {
        (d["code"], d["endpoint_id"]) for d in after
    }
    assert steady, f"no diagnosis held across the screenshot: {before} / {after}"
    shown = set(texts(dom, "code", "code"))
    assert {code for code, _ in steady} <= shown
    remedies = set(texts(dom, "pre", "remedy"))
    assert any(d["remedy"] in remedies for d in before if (d["code"], d["endpoint_id"]) in steady)
    assert "hf_DemoOnly" not in dom  # the demo template's token stays masked
    assert png.is_file()
    assert png.stat().st_size > 10_000
    keep = os.environ.get("STATUS_PAGE_SCREENSHOT")
    if keep:
        shutil.copyfile(png, keep)


# ---------------------------------------------------------------- the past: charts, history

STALLED = Path(__file__).parent / "scenarios" / "no-gpu-capacity-stalled.yaml"
FLUX = "x2f7l1u5k9d3hb"
SIM_KEY = "sim-key-for-the-page-test"
# what the scenario file scripts for FLUX's /health inQueue, cycle by cycle (1-based)
STALLED_QUEUE = [0, 0, 6, 6, 6, 5, 5, 4] + [7] * 22 + [3] * 4 + [0] * 4
STALLED_CYCLES = len(STALLED_QUEUE)  # 38: the whole scenario


@dataclass
class _Node:
    tag: str
    attrs: dict[str, str]
    children: list[_Node] = field(default_factory=list)
    parent: _Node | None = None


class _Tree(HTMLParser):
    """A minimal DOM of the elements the chart checks read (svg, path, rect, article, li)."""

    KEEP = frozenset({"svg", "path", "rect", "article", "li", "g", "title"})
    VOID = frozenset({"path", "rect"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = _Node("root", {})
        self._at = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.KEEP:
            return
        node = _Node(tag, {k: v or "" for k, v in attrs}, parent=self._at)
        self._at.children.append(node)
        if tag not in self.VOID:
            self._at = node

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.KEEP:
            self._at.children.append(_Node(tag, {k: v or "" for k, v in attrs}, parent=self._at))

    def handle_endtag(self, tag: str) -> None:
        if tag in self.KEEP and tag not in self.VOID and self._at.tag == tag:
            assert self._at.parent is not None
            self._at = self._at.parent


def _tree(page: str) -> _Node:
    t = _Tree()
    t.feed(page)
    return t.root


def _all(node: _Node, tag: str) -> list[_Node]:
    out = []
    for c in node.children:
        if c.tag == tag:
            out.append(c)
        out.extend(_all(c, tag))
    return out


def _charts(root: _Node, article_id: str | None) -> dict[str, _Node]:
    """The charts (by data-chart) of one endpoint card, or outside every card for None."""
    if article_id is None:
        inside = {id(s) for a in _all(root, "article") for s in _all(a, "svg")}
        svgs = [s for s in _all(root, "svg") if id(s) not in inside]
    else:
        [card] = [a for a in _all(root, "article") if a.attrs.get("id") == article_id]
        svgs = _all(card, "svg")
    return {s.attrs["data-chart"]: s for s in svgs if "data-chart" in s.attrs}


def _steps(d: str) -> list[tuple[float, float, float]]:
    """A step path read back: the (x from, x to, value) of every horizontal segment."""
    out: list[tuple[float, float, float]] = []
    x = y = 0.0
    for cmd, args in re.findall(r"([MHVZ])([^MHVZ]*)", d):
        nums = [float(a) for a in args.split()]
        if cmd == "M":
            x, y = nums
        elif cmd == "H":
            out.append((x, nums[0], y))
            x = nums[0]
        elif cmd == "V":
            y = nums[0]
    return out


def _at(steps: list[tuple[float, float, float]], x: float) -> float | None:
    for x0, x1, v in steps:
        if x0 <= x < x1:
            return v
    return None


def _series(svg: _Node, name: str) -> list[tuple[float, float, float]]:
    """The segments of series `name` in a chart (its first path: area or line, the same)."""
    paths = [p for p in _all(svg, "path") if p.attrs.get("data-series") == name]
    assert paths, f"no series {name} in chart {svg.attrs['data-chart']}"
    steps = _steps(paths[0].attrs["d"])
    for p in paths[1:]:
        assert _steps(p.attrs["d"]) == steps, "the area and the line of a series differ"
    return steps


def _check_charts_against(page: str, observations: list[Observation], eid: str) -> None:
    """Every chart of the page holds, at each observation's time, the observed value."""
    from monitor.metrics.recorder import _queue_delay_s

    root = _tree(page)
    mine = _charts(root, f"ep-{eid}")
    assert set(mine) == {"in_queue", "oldest_wait_s", "workers"}
    t0 = int(mine["in_queue"].attrs["data-t0"])
    queue = _series(mine["in_queue"], "in_queue")
    wait = _series(mine["oldest_wait_s"], "oldest_wait_s")
    stack = {p.attrs["data-series"]: _steps(p.attrs["d"])
             for p in _all(mine["workers"], "path") if "data-series" in p.attrs}
    last_wait: float | None = None
    for o in observations:
        x = round(o.t - t0)
        s = o.endpoints[eid]
        h = s.health
        assert h is not None
        assert _at(queue, x) == h.in_queue, (o.cycle, "queue")
        if s.jobs is not None:
            last_wait = _queue_delay_s(s.jobs, last_wait)
        got = _at(wait, x)
        assert (got is None and last_wait is None) or got == round(last_wait or 0, 3), (
            o.cycle, "oldest wait", got, last_wait)
        below = 0.0
        for state in ("running", "idle", "ready", "initializing", "throttled", "unhealthy"):
            cum = _at(stack[state], x) if state in stack else None
            cum = below if cum is None and state not in stack else cum
            assert cum is not None
            assert cum - below == getattr(h, state), (o.cycle, state)
            below = cum
    account = _charts(root, None)
    balance = _series(account["balance_usd"], "balance_usd")
    spend = _series(account["spend_usd_per_hr"], "spend_usd_per_hr")
    for o in observations:
        assert o.account is not None
        x = round(o.t - t0)
        assert _at(balance, x) == round(o.account.balance, 3), o.cycle
        assert _at(spend, x) == round(o.account.spend_per_hr, 3), o.cycle


async def _run_daemon(tmp_path: Path, cycles: int, scenario_file: Path | None = None,
                      control_plane: str | None = None) -> tuple[Any, Any, float]:
    """A real daemon against the simulator playing STALLED (or `scenario_file`), `cycles`
    cycles ticked by hand, the last one just now; returns (daemon, simulator, t of cycle 1)."""
    from monitor.commands import daemon as daemon_module
    from monitor.commands.demo import demo_settings
    from monitor.config import settings_from_dict
    from monitor.simulator import SimulatorServer, load_scenario

    scenario = load_scenario(scenario_file or STALLED)
    server = SimulatorServer(scenario, SIM_KEY)
    url = await server.start()
    data = demo_settings(scenario, url, SIM_KEY, 0, tmp_path, {})
    data["log"] = {"level": "warning"}
    if control_plane is not None:
        data["runpod"]["control_plane"] = control_plane
    settings = settings_from_dict(data, env={})
    start = time.time() - (cycles - 0.5) * scenario.interval_s
    clock = [start]
    # the cycles run faster than real time, as in replay: RunPod's per-endpoint limits on
    # the real clock would hold every tenth /requests call for 10 s
    limits = daemon_module.RUNPOD_LIMITS
    daemon_module.RUNPOD_LIMITS = None  # type: ignore[assignment]
    try:
        daemon = daemon_module.Daemon(settings, sinks=[], clock=lambda: clock[0])
    finally:
        daemon_module.RUNPOD_LIMITS = limits
    for k in range(1, cycles + 1):
        server.set_cycle(k)
        clock[0] = start + (k - 1) * scenario.interval_s
        await daemon.tick()
    return daemon, server, start


async def test_charts_and_history_show_what_the_daemon_saw(tmp_path: Path) -> None:
    """A daemon through the stalled-capacity scenario: its page's charts hold the history's
    values cycle by cycle (the scripted queue depths), the incident's span and history row
    say raised at cycle 6, escalated, resolved at cycle 29; a restarted daemon still has it."""
    from monitor.commands.daemon import Daemon

    daemon, server, start = await _run_daemon(tmp_path, STALLED_CYCLES)
    try:
        observations = list(daemon.history().observations)
        assert [o.endpoints[FLUX].health.in_queue for o in observations  # type: ignore[union-attr]
                ] == STALLED_QUEUE
        page = render(daemon)
        _check_charts_against(page, observations, FLUX)
        [episode] = daemon.episodes()
        assert episode.code == "no_gpu_capacity"
        assert (episode.first_severity, episode.severity) == ("warning", "critical")
        assert episode.since == start + 5 * 30  # raised at cycle 6
        assert episode.ended_at == start + 28 * 30  # resolved at cycle 29
        assert episode.escalated_at is not None
        assert episode.since < episode.escalated_at < episode.ended_at
        root = _tree(page)
        t0 = int(_charts(root, f"ep-{FLUX}")["in_queue"].attrs["data-t0"])
        for svg in _charts(root, f"ep-{FLUX}").values():
            rects = [r for r in _all(svg, "rect") if r.attrs.get("data-code") == "no_gpu_capacity"]
            assert [r.attrs["class"] for r in rects] == ["sp warning", "sp critical"]
            edges = [(int(r.attrs["x"]), int(r.attrs["x"]) + int(r.attrs["width"]))
                     for r in rects]
            assert edges == [
                (round(episode.since - t0), round(episode.escalated_at - t0)),
                (round(episode.escalated_at - t0), round(episode.ended_at - t0)),
            ]
        [row] = [li for li in _all(root, "li") if "ev" in li.attrs.get("class", "").split()]
        assert row.attrs["data-code"] == "no_gpu_capacity"
        assert row.attrs["data-endpoint"] == FLUX
        assert row.attrs["data-since"] == f"{episode.since:.0f}"
        assert row.attrs["data-escalated"] == f"{episode.escalated_at:.0f}"
        assert row.attrs["data-ended"] == f"{episode.ended_at:.0f}"
        assert "lasted 12 min" in page  # cycles 6 to 29: 23 cycles of 30 s
    finally:
        await daemon.stop(grace_s=2)
        await server.stop()
    again = Daemon(daemon.settings, sinks=[], clock=lambda: start + STALLED_CYCLES * 30)
    try:
        assert again.episodes() == [episode]
        assert 'data-code="no_gpu_capacity"' in render(again)
    finally:
        again.store.close()


async def _shoot(browser: str, url: str, png: Path, profile: Path, size: str,
                 dark: bool) -> str:
    """Headless Chromium loads `url`, screenshots it to `png`; returns the DOM it built."""
    import asyncio

    args = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
        f"--screenshot={png}", f"--window-size={size}", "--dump-dom", url,
    ]
    if dark:
        args.insert(1, "--force-dark-mode")  # prefers-color-scheme: dark
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    assert await asyncio.to_thread(lambda: png.stat().st_size) > 10_000
    return out.decode()


@pytest.mark.integration
async def test_charts_in_headless_chromium(tmp_path: Path) -> None:
    """The daemon's page in a real browser, on a phone (light and dark) and a desktop: what
    the browser parsed still holds the history's values and the incident span."""
    import asyncio

    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (scripts/install-system-deps installs it)")
    from aiohttp import web as aioweb

    daemon, server, _ = await _run_daemon(tmp_path, STALLED_CYCLES)
    runner = aioweb.AppRunner(build_app(daemon), access_log=None)
    await runner.setup()
    port = _free_port()
    await aioweb.TCPSite(runner, "127.0.0.1", port).start()
    shots = {"phone": ("390,1700", False), "phone-dark": ("390,1700", True),
             "desktop": ("1100,1000", False)}
    try:
        observations = list(daemon.history().observations)
        doms = {}
        for name, (size, dark) in shots.items():
            doms[name] = await _shoot(browser, f"http://127.0.0.1:{port}/", tmp_path /
                                      f"{name}.png", tmp_path / f"profile-{name}", size, dark)
    finally:
        await runner.cleanup()
        await daemon.stop(grace_s=2)
        await server.stop()
    for dom in doms.values():
        _check_charts_against(dom, observations, FLUX)
        spans = [r for r in _all(_tree(dom), "rect") if r.attrs.get("data-code")]
        assert {r.attrs["data-code"] for r in spans} == {"no_gpu_capacity"}
        assert "no_gpu_capacity (critical)" in dom  # the span's tooltip
        assert "hf_" not in dom
    keep = os.environ.get("STATUS_PAGE_SCREENSHOTS")  # a directory to keep them in
    if keep:
        await asyncio.to_thread(_keep, [tmp_path / f"{name}.png" for name in shots], Path(keep))


def _keep(pngs: list[Path], where: Path) -> None:
    where.mkdir(parents=True, exist_ok=True)
    for png in pngs:
        shutil.copyfile(png, where / f"status-{png.name}")


# ---------------------------------------------------------------- unit: charts, paging, history


def test_step_paths_read_back_to_the_values_with_gaps() -> None:
    """A series drawn as a step line and as an area reads back to its values; an unknown
    value and a missing stretch of samples break it (a new subpath), never join over it."""
    from monitor.http import charts

    times = [NOW + 30 * k for k in (0, 1, 2, 3, 4, 8, 9)]  # cycles 5-7 missing
    values: list[float | None] = [0, 6, 6, None, 5, 7, 7.25]
    w = charts.window(times, 30)
    g = charts.grid(w, times)
    parts = charts.runs(g, values)
    line, area = charts.line_path(parts), charts.area_path(parts, 0)
    assert line.count("M") == area.count("M") == 3
    for d in (line, area):
        steps = _steps(d)
        for t, v in zip(times, values, strict=True):
            assert _at(steps, round(t - w.t0)) == v
        assert _at(steps, round(times[4] - w.t0) + 45) is None  # the gap after cycle 4
    assert _steps(line) == [(0, 30, 0), (30, 90, 6), (120, 150, 5), (240, 270, 7),
                            (270, 300, 7.25)]


def test_long_histories_are_bucketed_keeping_the_peaks() -> None:
    """Past MAX_POINTS samples a series is bucketed: bounded, and each bucket's max kept."""
    from monitor.http import charts

    times = [NOW + 5 * k for k in range(5000)]
    values: list[float | None] = [float(k % 50 == 0) * k for k in range(5000)]
    w = charts.window(times, 5)
    bucketed, [out] = charts.bucket(w, times, [values])
    assert len(bucketed) <= charts.MAX_POINTS + 1
    assert max(v for v in out if v is not None) == max(v for v in values if v is not None)
    parts = charts.runs(charts.grid(w, bucketed), out)
    assert len(charts.line_path(parts)) < 8 * charts.MAX_POINTS * 2


def _fleet(n: int, bad: set[int]) -> FakeRuntime:
    obs = _observation()
    samples = {}
    for i in range(n):
        eid = f"e{i:03d}"
        samples[eid] = EndpointSample(endpoint_id=eid, health_outcome=OK, http_status=200,
                                      health=Health(in_queue=i, idle=1), jobs=())
    fleet = Observation(cycle=obs.cycle, t=obs.t, control_outcome=OK, account=obs.account,
                        endpoints=samples)
    before = Observation(cycle=obs.cycle - 1, t=obs.t - 30, control_outcome=OK,
                         account=obs.account, endpoints=samples)
    active = [_incident(endpoint_id=f"e{i:03d}", endpoint_name=None) for i in sorted(bad)]
    return _runtime(observation=fleet, past=[before, fleet], active=active, names={})


def test_endpoints_are_paged_trouble_first() -> None:
    """25 cards a page, endpoints with a diagnosis first; a page past the end shows the
    last one; only the cards shown get charts."""
    rt = _fleet(60, bad={40, 59})
    first = render(rt, now=NOW)
    ids = [a.attrs["id"] for a in _all(_tree(first), "article") if "ep" in a.attrs["class"]]
    assert len(ids) == 25
    assert ids[:3] == ["ep-e040", "ep-e059", "ep-e000"]
    assert "1–25 of 60, in trouble first" in first
    assert 'href="?page=2#endpoints"' in first
    assert first.count('data-chart="in_queue"') == 25
    last = render(rt, now=NOW, page=99)
    ids = [a.attrs["id"] for a in _all(_tree(last), "article") if "ep" in a.attrs["class"]]
    assert len(ids) == 10
    assert ids[-1] == "ep-e058"
    assert "page 3 of 3" in last
    assert 'href="?page=2#endpoints"' in last


def test_without_pictures_the_page_is_as_before() -> None:
    """pictures=False (the benchmark's baseline): every card, no chart, no history."""
    page = render(_fleet(60, bad=set()), now=NOW, per_page=None, pictures=False)
    assert page.count('class="card ep') == 60
    assert "<svg" not in page
    assert 'id="history"' not in page


async def test_page_query_is_validated() -> None:
    """?page=K serves that page; anything but a positive integer is a 400 naming the field."""
    app = build_app(_fleet(60, bad=set()))
    async with TestClient(TestServer(app)) as client:
        ok = await client.get("/?page=3")
        assert ok.status == 200
        assert "page 3 of 3" in await ok.text()
        for bad in ("0", "-1", "x", "²", "1" * 12):
            resp = await client.get("/", params={"page": bad})
            assert resp.status == 400, bad
            assert (await resp.text()).startswith("page: must be a positive integer")


def test_incident_history_rows_are_escaped_and_say_what_happened() -> None:
    """A row per episode: severity, code, where, raised/escalated/resolved, how long, the
    summary; everything escaped; an active one says so; past HISTORY_ROWS the rest count."""
    from monitor.http.status_page import HISTORY_ROWS

    noon = NOW + 12 * 3600  # times of the same day show without their date

    ended = Episode(code=XSS, endpoint_id="ep-busy", endpoint_name="busy<b>", summary=XSS,
                    first_severity="warning", severity="critical", since=noon - 3000,
                    raised_cycle=1, escalated_at=noon - 2700, ended_at=noon - 1200, ended_cycle=60)
    live = Episode(code="low_balance", endpoint_id=None, endpoint_name=None,
                   summary="Balance is low.", first_severity="warning", severity="warning",
                   since=noon - 600, raised_cycle=80)
    obs = _observation()
    past = [Observation(cycle=k, t=noon - 3600 + 60 * k, control_outcome=OK,
                        account=obs.account, endpoints=obs.endpoints) for k in range(60)]
    page = render(_runtime(log=[live, ended], past=past), now=noon)
    assert 'data-code="&lt;script&gt;' in page  # its span on the charts, escaped too
    assert "<script" not in page
    assert "busy&lt;b&gt;" in page
    rows = [li for li in _all(_tree(page), "li") if "ev" in li.attrs.get("class", "")]
    assert [r.attrs["data-code"] for r in rows] == ["low_balance", XSS]
    assert rows[1].attrs["data-ended"] == f"{noon - 1200:.0f}"
    assert ("raised 11:10, escalated to critical 11:15, resolved 11:40 UTC · lasted 30 min"
            in page)
    assert "raised 11:50 UTC · for 10 min so far" in page
    many = [Episode("c", f"e{k}", None, "s", "info", "info", noon - k, k) for k in range(130)]
    page = render(_runtime(log=many), now=noon)
    assert page.count('class="card ev') == HISTORY_ROWS
    assert f"and {130 - HISTORY_ROWS} older not shown" in page


def test_incident_spans_on_the_endpoint_charts() -> None:
    """An episode of an endpoint shades its charts from raised to resolved (escalated: two
    spans), with a tooltip naming it; the account's episodes shade the account's charts."""
    obs = _observation()
    past = [Observation(cycle=k, t=NOW - 12 - 30 * (40 - k), control_outcome=OK,
                        account=obs.account, endpoints=obs.endpoints) for k in range(41)]
    ended = Episode("crash_loop", "ep-busy", "busy<b>", "s", "warning", "critical",
                    since=past[10].t, raised_cycle=10, escalated_at=past[20].t,
                    ended_at=past[30].t, ended_cycle=30)
    low = Episode("low_balance", None, None, "s", "warning", "warning", since=past[35].t,
                  raised_cycle=35)
    page = render(_runtime(past=past, log=[ended, low]), now=NOW)
    root = _tree(page)
    t0 = int(past[0].t)
    for svg in _charts(root, "ep-ep-busy").values():
        rects = [(r.attrs["class"], int(r.attrs["x"]), int(r.attrs["width"]))
                 for r in _all(svg, "rect")]
        assert rects == [("sp warning", 300, 300), ("sp critical", 600, 300)]
    for svg in _charts(root, None).values():
        [(cls, x, width)] = [(r.attrs["class"], int(r.attrs["x"]), int(r.attrs["width"]))
                             for r in _all(svg, "rect")]
        assert (cls, x, x + width) == ("sp warning", round(past[35].t - t0), 1230)
    assert "crash_loop (critical) 2025-12-31 23:44–2025-12-31 23:54 UTC" in page


# ---------------------------------------------------------------- the control plane


def _v2(graphql_state: str | None, control_plane: str = "rest") -> Observation:
    from dataclasses import replace

    return replace(_observation(), control_plane=control_plane, graphql_state=graphql_state,
                   sources={"endpoints": "rest", "balance": "rest", "spend_per_hr": "graphql",
                            "gpu_stock": "rest"})


def test_graphql_retired_notice_in_auto_and_rest() -> None:
    """GraphQL retired while the monitor reads REST v2: a notice, not an error."""
    page = render(_runtime(observation=_v2("retired")), now=NOW)
    assert "GraphQL is retired; reading REST v2 only." in page
    assert 'id="graphql-retired" role="status"' in page
    assert "set <code>runpod.control_plane" not in page.lower()
    assert "control plane: <b>REST v2</b>" in page


def test_graphql_retired_is_an_error_in_graphql_mode() -> None:
    """With runpod.control_plane: graphql a retired GraphQL leaves the facts unknown: an
    error that says which setting to change."""
    page = render(_runtime(observation=_v2("retired", "graphql")), now=NOW)
    assert 'class="card notice critical" id="graphql-retired" role="alert"' in page
    assert "<code>runpod.control_plane: auto" in page
    assert "reading REST v2 only" not in page


def test_no_notice_while_graphql_answers_and_sources_per_fact() -> None:
    page = render(_runtime(observation=_v2(None)), now=NOW)
    assert "graphql-retired" not in page
    cells = dict(re.findall(r'<td data-fact="([a-z_]+)">([^<]+)</td>', page))
    assert cells == {"endpoints": "REST v2", "balance": "REST v2", "spend_per_hr": "GraphQL",
                     "gpu_stock": "REST v2"}


def test_endpoint_card_shows_the_worker_records_age() -> None:
    """The freshest /workers record of the endpoint, however old, on its card; none when
    the history holds no record (GraphQL mode)."""
    from dataclasses import replace

    from model.observation import Worker, Workers

    obs = _v2(None)
    busy = replace(obs.endpoints["ep-busy"], workers=Workers(1, (Worker("w1", "RUNNING"),)))
    older = replace(obs, cycle=40, t=NOW - 300,
                    endpoints={**obs.endpoints, "ep-busy": busy})
    page = render(_runtime(observation=obs, past=[older, obs]), now=NOW)
    assert texts(page, "div", "workers-age") == ["worker records: 5 min old"]
    assert 'class="small muted workers-age"' not in render(_runtime(), now=NOW)


RETIRED_MIDRUN = Path(__file__).parent / "scenarios" / "v2" / "graphql-retired-midrun.yaml"


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["auto", "graphql"])
async def test_graphql_retired_notice_in_headless_chromium(tmp_path: Path, mode: str) -> None:
    """GraphQL retires at cycle 7 of the scenario: before it the page has no notice; after
    it a real browser shows "reading REST v2 only" (auto), or an error naming the setting to
    change (graphql mode)."""
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (scripts/install-system-deps installs it)")
    from aiohttp import web as aioweb

    daemon, server, _ = await _run_daemon(tmp_path, 6, RETIRED_MIDRUN, mode)
    try:
        assert "graphql-retired" not in render(daemon)
        for k in (7, 8):
            server.set_cycle(k)
            await daemon.tick()
        runner = aioweb.AppRunner(build_app(daemon), access_log=None)
        await runner.setup()
        port = _free_port()
        await aioweb.TCPSite(runner, "127.0.0.1", port).start()
        try:
            dom = await _shoot(browser, f"http://127.0.0.1:{port}/", tmp_path / "page.png",
                               tmp_path / "profile", "412,1400", False)
        finally:
            await runner.cleanup()
    finally:
        await daemon.stop(grace_s=2)
        await server.stop()
    [notice] = texts(dom, "div", "notice")
    if mode == "auto":
        assert "GraphQL is retired; reading REST v2 only." in notice
        assert "control plane: REST v2" in " ".join(texts(dom, "div", "muted"))
        assert "critical" not in re.search(r'<div class="card notice[^"]*"', dom)[0]  # type: ignore[index]
    else:
        assert "error" in notice
        assert "runpod.control_plane: auto" in notice
        assert 'class="card notice critical"' in dom
