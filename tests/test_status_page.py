"""The status page at `/`: rendering from a fake runtime, and a real browser over the demo."""

from __future__ import annotations

import base64
import contextlib
import os
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
from monitor.incidents import Incident
from monitor.status_page import render
from monitor.web import build_app
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
        cycle=42, t=NOW - 12, graphql_outcome=OK,
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
    failed = Observation(cycle=obs.cycle, t=obs.t, graphql_outcome="timeout",
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
    """With no observation yet the page renders and says so."""
    page = render(_runtime(observation=None), now=NOW)
    assert "no probe cycle has completed yet" in page
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
