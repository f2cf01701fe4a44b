"""benchmarks/run.py end to end at N=10: every measurement and ratio is in its JSON.

No timing assertions: the speed targets live in benchmarks/README.md and its results,
never in unit tests (a shared 2-core machine makes them noise here).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "benchmarks" / "run.py"

CYCLE_KEYS = ("min", "median", "max")
MONITOR_KEYS = (
    "concurrency", "cycles", "endpoints_probed", "requests_per_cycle", "graphql_per_cycle",
    "failures_per_cycle", "active_diagnoses", "history_observations", "prefill_s",
    "cycle_wall_s", "cycle_cpu_s", "cpu_ms_per_endpoint", "phase_cpu_s_median",
    "phase_wall_s_median", "gc_s_per_cycle", "gc_collections_per_cycle",
    "bytes_per_observation", "peak_rss_mb", "rss_mb_after_warmup", "rss_mb_with_history",
    "sqlite_bytes_per_cycle", "sqlite_db_bytes_after", "simulator_cpu_s_per_cycle", "scrape",
)
SCRAPE_KEYS = (
    "count", "cold_ms", "median_ms", "p99_ms", "after_cycle_median_ms", "after_cycle_p99_ms",
    "payload_bytes", "series", "server_render_ms",
)
BASELINE_KEYS = ("cycles", "requests_per_cycle", "failures_per_cycle", "cycle_wall_s",
                 "cycle_cpu_s", "peak_rss_mb")
RATIO_KEYS = (
    "wall_vs_floor", "cpu_vs_floor", "wall_vs_floor_aiohttp", "cpu_vs_floor_aiohttp",
    "wall_vs_naive", "cpu_vs_naive", "naive_wall_speedup", "wall_vs_naive_keepalive",
    "cpu_vs_naive_keepalive", "naive_keepalive_wall_speedup",
)
TARGET_KEYS = (
    "cycle_wall_s", "cycle_cpu_s", "peak_rss_mb", "scrape_p99_ms", "cpu_vs_floor",
    "cpu_vs_floor_aiohttp", "wall_speedup_vs_naive", "wall_speedup_vs_naive_keepalive",
)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "results.json"
    proc = subprocess.run(
        [sys.executable, str(RUN), "--sizes", "10", "--cycles", "2", "--scrapes", "5",
         "--json", str(out), "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "ratios" in proc.stdout  # the printed table
    data: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return data


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def test_machine_and_settings(results: dict[str, Any]) -> None:
    """The run says where it ran and with what settings."""
    assert {"nproc", "cpu_model", "python"} <= set(results["machine"])
    assert results["settings"]["sizes"] == [10]
    assert results["settings"]["cycles"] == 2


def test_monitor_measurements(results: dict[str, Any]) -> None:
    """Cycle wall and CPU, per-endpoint CPU, RSS, scrape latency and size, SQLite bytes."""
    [size] = results["sizes"]
    mon = size["monitor"]
    for key in MONITOR_KEYS:
        assert key in mon, key
    assert mon["cycles"] == 2
    assert mon["endpoints_probed"] == 10
    for key in ("cycle_wall_s", "cycle_cpu_s"):
        assert all(_number(mon[key][k]) for k in CYCLE_KEYS), mon[key]
    for key in ("cpu_ms_per_endpoint", "peak_rss_mb", "sqlite_bytes_per_cycle"):
        assert _number(mon[key]), (key, mon[key])
        assert mon[key] > 0, (key, mon[key])
    for key in SCRAPE_KEYS:
        assert key in mon["scrape"], key
    assert mon["scrape"]["count"] == 5
    assert mon["scrape"]["payload_bytes"] > 0
    assert set(mon["phase_cpu_s_median"]) == {"probe", "rules", "metrics", "persist"}


def test_restart_on_the_full_database(results: dict[str, Any]) -> None:
    """A daemon restarted on the monitor's database restores the whole window (240
    observations at 30 s, less the oldest past retention) and reports its memory."""
    restart = results["sizes"][0]["monitor"]["restart"]
    assert restart["observations_restored"] >= 230
    for key in ("restore_wall_s", "restore_cpu_s", "rss_mb_restored", "rss_mb_after_cycle",
                "peak_rss_mb"):
        assert _number(restart[key]), (key, restart[key])


def test_one_graphql_request_per_cycle(results: dict[str, Any]) -> None:
    """Whatever N, a cycle sends GraphQL once, /health once per endpoint, and /requests only
    for the endpoint with jobs in flight (one of ten)."""
    mon = results["sizes"][0]["monitor"]
    assert mon["graphql_per_cycle"] == [1, 1]
    assert mon["requests_per_cycle"] == {"graphql": 1, "health": 10, "requests": 1}
    assert mon["failures_per_cycle"] == [0, 0]


def test_baselines_and_ratios(results: dict[str, Any]) -> None:
    """Both floors and both naive pollers were measured; every ratio is a number."""
    size = results["sizes"][0]
    for name in ("floor", "floor_aiohttp", "naive", "naive_keepalive"):
        for key in BASELINE_KEYS:
            assert key in size[name], (name, key)
        assert _number(size[name]["cycle_cpu_s"]["median"]), name
        assert size[name]["failures_per_cycle"] == [0] * size[name]["cycles"], name
    assert size["floor"]["requests_per_cycle"] == {"graphql": 1, "health": 10, "requests": 1}
    assert size["naive"]["requests_per_cycle"] == {"health": 10}
    for key in RATIO_KEYS:
        assert _number(size["ratios"][key]), (key, size["ratios"][key])


def test_targets_reported(results: dict[str, Any]) -> None:
    """The target check names every target, unjudged here: they are stated for N=1000."""
    targets = results["targets"]
    assert targets["n"] == 1000
    assert targets["measured"] is False
    for key in TARGET_KEYS:
        assert targets[key]["met"] is None, key
        assert _number(targets[key]["target"]), key
    assert results["cpu_fit_ms_per_endpoint"] is None  # one size: nothing to fit
    assert targets["cpu_linear_in_n"]["met"] is None


def test_status_page_benchmark_reports_every_variant(tmp_path: Path) -> None:
    """benchmarks/status_page.py at N = 10: render time, size and ratio of each variant
    against the page without charts, and the page fetched over loopback."""
    out = tmp_path / "page.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "status_page.py"), "--sizes", "10",
         "--repeat", "1", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    [size] = json.loads(out.read_text(encoding="utf-8"))["sizes"]
    assert size["n"] == 10
    variants = size["variants"]
    assert len(variants) == 4
    for v in variants.values():
        for key in ("render_ms_median", "bytes", "gzip_bytes", "charts", "cards",
                    "render_vs_baseline", "bytes_vs_baseline"):
            assert _number(v[key]), key
    assert variants["baseline: no charts, every card"]["charts"] == 0
    assert variants["page 1 (in trouble first)"]["charts"] == 3 * 10 + 2
    # the same page, but for the "... ago" texts of the wall clock it was served at
    assert abs(size["served"]["bytes"] / variants["page 1 (in trouble first)"]["bytes"] - 1) < 0.02
