"""The generated Grafana dashboard: up to date, provisionable, and true to the metrics contract."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = ROOT / "dashboards"
COMMITTED = DASHBOARD_DIR / "runpod-serverless.json"

# Metrics whose series carry the `endpoint` label (spec/metrics.md): every dashboard query
# of them must follow the `$endpoint` variable.
ENDPOINT_METRIC = re.compile(r"^runpod_(endpoint_|job_|diagnosis_active)")

_PROMQL_KEYWORDS = frozenset({
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "and", "or", "unless", "inf", "nan",
})


@cache
def generator() -> ModuleType:
    """dashboards/generate.py, imported from its path (dashboards/ is not a package)."""
    spec = importlib.util.spec_from_file_location("dashboards_generate", DASHBOARD_DIR /
                                                  "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def committed() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(COMMITTED.read_text(encoding="utf-8"))
    return data


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels or keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)            # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)                       # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)                      # range and subquery
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ",
                  text)                                          # label lists
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[m.end():].lstrip()
        if rest.startswith("("):                                 # a function call
            continue
        if m.group().lower() in _PROMQL_KEYWORDS:
            continue
        names.add(m.group())
    return names


def spec_metric_names(spec: str) -> set[str]:
    """Every series name spec/metrics.md allows: histograms as _bucket, _sum and _count."""
    names: set[str] = set()
    for line in spec.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`runpod_"):
            continue
        found = re.findall(r"`([a-z0-9_]+)`", cells[0])
        base = found[0]
        bases = [base] + [
            re.sub(r"_[a-z]+$", suffix, base) for suffix in found[1:] if suffix.startswith("_")
        ]
        for b in bases:
            if cells[1].startswith("histogram"):
                names.update(f"{b}{s}" for s in ("_bucket", "_sum", "_count"))
            else:
                names.add(b)
    return names


def spec_text() -> str:
    """spec/metrics.md: the repo's docs copy, else shared/ beside the clone (as CI lays it)."""
    for path in (ROOT / "docs" / "metrics.md", ROOT.parent / "shared" / "spec" / "metrics.md",
                 Path("/work/shared/spec/metrics.md")):
        if path.is_file():
            return path.read_text(encoding="utf-8")
    pytest.skip("spec/metrics.md not found (neither docs/metrics.md nor ../shared/spec/)")


def exposed_metric_names() -> set[str]:
    """Series names the monitor's own registry exposes (counters with `_total`) once a v2
    cycle fed every family: its extensions included (worker records, the catalog, billing,
    the budget, a costed job)."""
    from model.observation import (
        EndpointConfig,
        EndpointSample,
        GpuStock,
        Health,
        Job,
        Observation,
        Worker,
        Workers,
    )
    from monitor.metrics import CycleFacts, MonitorMetrics
    from monitor.pipeline.budget import V2Budget

    config = EndpointConfig("e1", "sdxl", gpu_ids="ADA_24")
    sample = EndpointSample(
        "e1", "ok", 200, Health(running=1), (Job("j1", "COMPLETED", 10, 2000),), True, config,
        workers=Workers(2, (Worker("w1", "RUNNING", stale=True),)),
    )
    obs = Observation(1, 30.0, "ok", listed_ids=frozenset({"e1"}), endpoints={"e1": sample},
                      endpoint_spend={"e1": 0.5},
                      gpu_stock=(GpuStock("NVIDIA L4", "ADA_24", "LOW"),))
    m = MonitorMetrics(extensions=True)
    m.observe_cycle(CycleFacts(obs, budget=V2Budget().reading(30.0, {"e1": 30.0})))
    names: set[str] = set()
    for family in m.registry.collect():
        if family.type == "histogram":
            names.update(f"{family.name}{s}" for s in ("_bucket", "_sum", "_count"))
        elif family.type == "counter":
            names.add(f"{family.name}_total")
        else:
            names.add(family.name)
    return names


# -- the file ----------------------------------------------------------------------------


def test_committed_json_matches_generator() -> None:
    """The committed JSON is byte-identical to what generate.py renders now."""
    assert COMMITTED.read_text(encoding="utf-8") == generator().render(), (
        "dashboards/runpod-serverless.json is stale: run python dashboards/generate.py"
    )


def test_script_writes_identical_bytes(tmp_path: Path) -> None:
    """Running `python dashboards/generate.py` writes the committed bytes, twice alike."""
    out = tmp_path / "dash.json"
    for _ in range(2):
        subprocess.run([sys.executable, str(DASHBOARD_DIR / "generate.py"), "--output",
                        str(out)], check=True, timeout=60)
        assert out.read_bytes() == COMMITTED.read_bytes()
    assert out.read_bytes().endswith(b"}\n")


def test_check_flag_detects_a_stale_file(tmp_path: Path) -> None:
    """`generate.py --check` exits 0 on the committed file and 1 on an edited one."""
    script = str(DASHBOARD_DIR / "generate.py")
    ok = subprocess.run([sys.executable, script, "--check"], capture_output=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    stale = tmp_path / "dash.json"
    stale.write_text(COMMITTED.read_text(encoding="utf-8").replace("RunPod", "Runpod"))
    bad = subprocess.run([sys.executable, script, "--check", "--output", str(stale)],
                         capture_output=True, timeout=60)
    assert bad.returncode == 1


def _through_grafanas_model(data: dict[str, Any]) -> dict[str, Any]:
    """`data` decoded into the Foundation SDK's Grafana model and encoded back to JSON."""
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models.dashboard import Dashboard

    register_default_plugins()  # panel options and Prometheus queries decode to their types
    back: dict[str, Any] = json.loads(json.dumps(Dashboard.from_json(data), cls=JSONEncoder))
    return back


def test_committed_json_is_grafanas_model() -> None:
    """Decoding the file into Grafana's model (Foundation SDK) and back loses nothing."""
    assert _through_grafanas_model(committed()) == committed()


def test_model_round_trip_drops_unknown_fields() -> None:
    """The round trip above can fail: a field Grafana's model lacks does not survive it."""
    for edit in (
        lambda d: d["panels"][1]["fieldConfig"]["defaults"].update(colour="red"),
        lambda d: d["panels"][1]["options"].update(textSize=3),
        lambda d: d["panels"][1]["targets"][0].update(exprs="up"),
        lambda d: d.update(schemaVersoin=41),
    ):
        data = committed()
        edit(data)
        assert _through_grafanas_model(data) != data


def _mypy(path: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir",
         str(cache), str(path)], capture_output=True, text=True, timeout=300, cwd=ROOT,
    )


def test_generator_type_checks_against_grafanas_model(tmp_path: Path) -> None:
    """generate.py passes mypy --strict against the SDK's types, which do reject a wrong
    value: a number where Grafana wants a unit string, a mode it does not have."""
    done = _mypy(DASHBOARD_DIR / "generate.py", tmp_path / "cache")
    assert done.returncode == 0, done.stdout + done.stderr
    wrong = tmp_path / "wrong.py"
    wrong.write_text(
        "from grafana_foundation_sdk.builders import stat\n"
        "from grafana_foundation_sdk.models import common\n"
        "stat.Panel().unit(3)\n"
        "stat.Panel().color_mode(common.BigValueGraphMode.AREA)\n"
    )
    done = _mypy(wrong, tmp_path / "cache")
    assert done.returncode == 1
    assert "wrong.py:3: error" in done.stdout
    assert "wrong.py:4: error" in done.stdout


def test_provisionable() -> None:
    """No `id`, fixed uid and title, a modern schemaVersion, unique panel ids on a 24 grid."""
    dash = committed()
    assert "id" not in dash
    assert dash["uid"] == "runpod-serverless"
    assert dash["schemaVersion"] >= 36
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        pos = p["gridPos"]
        assert pos["x"] >= 0, p["title"]
        assert pos["x"] + pos["w"] <= 24, p["title"]
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            for t in p["targets"]:
                assert t["datasource"]["uid"] == "${datasource}", p["title"]


def test_template_variables() -> None:
    """`datasource` picks a Prometheus; `endpoint` lists endpoint names, multi with All."""
    variables = {v["name"]: v for v in committed()["templating"]["list"]}
    ds = variables["datasource"]
    assert (ds["type"], ds["query"]) == ("datasource", "prometheus")
    ep = variables["endpoint"]
    assert ep["type"] == "query"
    assert ep["query"]["query"] == "label_values(runpod_endpoint_info, endpoint)"
    assert ep["multi"] is True
    assert ep["includeAll"] is True
    assert ep["datasource"]["uid"] == "${datasource}"


def test_expected_panels_exist() -> None:
    """The rows and panels the dashboard promises are there, with the runway thresholds."""
    dash = committed()
    titles = {p["title"] for p in dash["panels"]}
    for title in (
        "Account", "Balance", "Spend per hour", "Runway", "Diagnoses", "Active diagnoses",
        "Endpoint $endpoint", "Workers by state", "Queue depth", "Oldest queued job wait",
        "Job delay (queue wait incl. cold start)", "Job execution time",
        "Completed vs failed", "Endpoint up", "/health HTTP status", "Monitor health",
        "Probe errors by reason", "Last good answer, age", "Cycle duration",
        "Alerts sent and failed", "Alerts pending", "Worker restarts", "Stale workers",
        "Billed spend per hour", "Worker data age", "REST v2 and GPUs", "REST v2 call budget",
        "GPU availability",
    ):
        assert title in titles, title
    runway = next(p for p in dash["panels"] if p["title"] == "Runway")
    steps = runway["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [(s["color"], s["value"]) for s in steps] == [
        ("red", None), ("orange", 7200), ("green", 86400)
    ]
    table = next(p for p in dash["panels"] if p["title"] == "Active diagnoses")
    assert table["type"] == "table"
    assert table["targets"][0]["instant"] is True
    assert "/api/v1/diagnoses" in table["description"]
    row = next(p for p in dash["panels"] if p["title"] == "Endpoint $endpoint")
    assert row["repeat"] == "endpoint"
    budget = next(p for p in dash["panels"] if p["title"] == "REST v2 call budget")
    assert [t["expr"].split("(")[1].split(")")[0] for t in budget["targets"]] == [
        "window", "window", "window"]
    assert {n for t in budget["targets"] for n in metric_names(t["expr"])} == {
        "runpod_monitor_v2_budget_quota", "runpod_monitor_v2_budget_remaining",
        "runpod_monitor_v2_budget_spent"}
    gpus = next(p for p in dash["panels"] if p["title"] == "GPU availability")
    assert 'datacenter!=""' in gpus["targets"][0]["expr"]  # the per-type totals left out


def test_panel_queries_cover_every_target() -> None:
    """panel_queries() lists exactly the exprs of the committed JSON, in order."""
    from_json = [
        (p["title"], t["expr"]) for p in committed()["panels"] for t in p.get("targets", [])
    ]
    assert generator().panel_queries() == from_json
    assert len(from_json) >= 20


def test_metric_name_extraction() -> None:
    """The PromQL name extractor finds metrics and skips functions, labels and keywords."""
    expr = ('histogram_quantile(0.9, sum by (le, endpoint) (rate(runpod_job_delay_seconds_bucket'
            '{endpoint=~"$endpoint", state="up"}[$__rate_interval]))) or on (code) '
            'time() - up{job="x"} * 60')
    assert metric_names(expr) == {"runpod_job_delay_seconds_bucket", "up"}


def test_queries_use_only_contract_metrics() -> None:
    """Every panel expr selects only metrics of spec/metrics.md (histogram suffixes) or `up`."""
    allowed = spec_metric_names(spec_text()) | {"up"}
    assert "runpod_endpoint_workers_min" in allowed
    assert "runpod_job_delay_seconds_bucket" in allowed
    for title, expr in generator().panel_queries():
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr}"
        assert names <= allowed, f"{title}: {sorted(names - allowed)} not in spec/metrics.md"


def test_queries_use_only_exposed_metrics() -> None:
    """Every panel expr selects a metric the monitor's registry really exposes (or `up`)."""
    exposed = exposed_metric_names() | {"up"}
    for title, expr in generator().panel_queries():
        missing = metric_names(expr) - exposed
        assert not missing, f"{title}: {sorted(missing)} not exposed by monitor.metrics"


def test_endpoint_queries_follow_the_variable() -> None:
    """Each query of an endpoint-labelled metric filters with `endpoint=~"$endpoint..."`."""
    for title, expr in generator().panel_queries():
        if any(ENDPOINT_METRIC.match(n) for n in metric_names(expr)):
            assert 'endpoint=~"$endpoint' in expr, f"{title}: {expr}"
