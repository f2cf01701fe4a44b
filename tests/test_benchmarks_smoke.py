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
    "control_plane", "concurrency", "cycles", "endpoints_probed", "requests_per_cycle",
    "calls_per_cycle", "v2_calls_per_cycle", "v2_429s", "v2_plan", "graphql_per_cycle",
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
V2_KEYS = (
    "n", "cycles", "crashing", "trouble_ids", "logs_hold_s", "calls_per_cycle_by_kind",
    "v2_calls_per_cycle", "v2_calls_per_minute", "v2_quota_per_minute", "v2_allowance_per_cycle",
    "v2_unserved_trouble_per_cycle", "v2_429s", "trouble_workers_this_cycle",
    "trouble_workers_every_cycle_from", "crash_loop_raised_cycle", "log_reads_per_cycle",
    "status_per_cycle", "cycle_wall_s", "cycle_wall_s_per_cycle", "cycle_cpu_s",
    "phase_cpu_s_median", "peak_rss_mb", "failures_per_cycle", "active_by_code",
)
V2_CYCLES = 8  # crash_loop is raised at cycle 5: two record restarts in 120 s
TARGET_KEYS = (
    "cycle_wall_s", "cycle_cpu_s", "peak_rss_mb", "scrape_p99_ms", "cpu_vs_floor",
    "cpu_vs_floor_aiohttp", "wall_speedup_vs_naive", "wall_speedup_vs_naive_keepalive",
)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "results.json"
    proc = subprocess.run(
        [sys.executable, str(RUN), "--sizes", "10", "--cycles", "2", "--scrapes", "5",
         "--v2-sizes", "10", "--v2-cycles", str(V2_CYCLES), "--v2-logs-hold", "0",
         "--json", str(out), "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "ratios" in proc.stdout  # the printed table
    assert "v2 cycle" in proc.stdout
    data: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def graphql_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench-graphql") / "results.json"
    proc = subprocess.run(
        [sys.executable, str(RUN), "--sizes", "10", "--cycles", "2", "--scrapes", "2",
         "--control-plane", "graphql", "--json", str(out), "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
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


def test_calls_per_cycle_in_auto_mode(results: dict[str, Any]) -> None:
    """The default (`control_plane: auto`), counted by the simulator: GraphQL once (the spend
    query), /health once per endpoint, /requests only for the endpoint with jobs in flight
    (one of ten), REST v2 reads within the quota (no 429)."""
    mon = results["sizes"][0]["monitor"]
    assert results["settings"]["control_plane"] == mon["control_plane"] == "auto"
    assert mon["graphql_per_cycle"] == [1, 1]
    for calls in mon["calls_per_cycle"]:
        assert {k: calls[k] for k in ("graphql", "health", "requests")} == {
            "graphql": 1, "health": 10, "requests": 1}
        assert calls["v2_workers"] == 10  # the quota covers every endpoint at N = 10
    assert all(n > 0 for n in mon["v2_calls_per_cycle"])
    assert mon["v2_429s"] == 0
    assert mon["failures_per_cycle"] == [0, 0]
    for plan in mon["v2_plan"]:
        assert plan["planned"] <= plan["allowance"]


def test_graphql_mode_still_measured(graphql_results: dict[str, Any]) -> None:
    """`--control-plane graphql`: GraphQL `myself` once per cycle and no REST v2 call; the
    v2 cycle is not run (it needs v2)."""
    mon = graphql_results["sizes"][0]["monitor"]
    assert mon["control_plane"] == "graphql"
    assert mon["calls_per_cycle"] == [{"graphql": 1, "health": 10, "requests": 1}] * 2
    assert mon["v2_calls_per_cycle"] == [0, 0]
    assert graphql_results["v2_cycle"]["sizes"] == []
    floor = graphql_results["sizes"][0]["floor_aiohttp"]
    assert floor["requests_per_cycle"] == {"graphql": 1, "health": 10, "requests": 1}


def test_baselines_and_ratios(results: dict[str, Any]) -> None:
    """Both floors and both naive pollers were measured; every ratio is a number."""
    size = results["sizes"][0]
    for name in ("floor", "floor_aiohttp", "naive", "naive_keepalive"):
        for key in BASELINE_KEYS:
            assert key in size[name], (name, key)
        assert _number(size[name]["cycle_cpu_s"]["median"]), name
        assert size[name]["failures_per_cycle"] == [0] * size[name]["cycles"], name
    # the floors replay the monitor's requests: the same kinds, cycle by cycle
    assert size["floor"]["requests_per_cycle"] == size["monitor"]["requests_per_cycle"]
    assert size["floor_aiohttp"]["requests_per_cycle"] == size["monitor"]["requests_per_cycle"]
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
    for key in ("v2_429s", "trouble_workers_every_cycle_from",
                "crash_loop_same_cycle_as_small_n", "cpu_vs_floor_aiohttp", "peak_rss_mb"):
        assert targets["v2"][key]["met"] is None, key


def test_v2_cycle(results: dict[str, Any]) -> None:
    """The v2 cycle at N = 10 (10 endpoints in trouble, one crash-looping, 60 v2 calls a
    minute on the simulator's clock): no 429, every endpoint in trouble gets /workers in
    every cycle, crash_loop raised after two record restarts, calls by kind per cycle, the
    aiohttp floor replaying the same requests, and the crash storm's log reads."""
    v2 = results["v2_cycle"]
    [run] = v2["sizes"]
    for key in V2_KEYS:
        assert key in run, key
    assert (run["n"], run["cycles"], run["crashing"]) == (10, V2_CYCLES, 1)
    assert run["v2_429s"] == 0
    assert run["v2_quota_per_minute"] == 60
    assert max(run["v2_calls_per_minute"]) <= 60
    assert len(run["trouble_ids"]) == 10
    assert run["trouble_workers_every_cycle_from"] == 1
    assert all(all(v) for v in run["trouble_workers_this_cycle"].values())
    assert run["crash_loop_raised_cycle"] == 5  # records at t = 0, 60, 120: 2 restarts
    assert v2["crash_loop_raised_cycle_by_n"] == {"10": 5}
    by_kind = run["calls_per_cycle_by_kind"]
    assert by_kind["health"] == [10] * V2_CYCLES
    assert by_kind["graphql"] == [1] * V2_CYCLES
    assert by_kind["v2_workers"] == [10] * V2_CYCLES
    assert len(run["status_per_cycle"]) == V2_CYCLES
    assert all(_number(x) for x in run["cycle_wall_s_per_cycle"])
    assert _number(run["peak_rss_mb"])
    assert run["peak_rss_mb"] > 0
    assert _number(run["cpu_vs_floor_aiohttp"])
    assert run["floor_aiohttp"]["cycles"] == V2_CYCLES
    storm = run["storm"]
    assert (storm["crashing"], storm["v2_429s"]) == (10, 0)
    assert storm["crash_loop_endpoints_last_cycle"] == 10
    reads = storm["log_reads_per_cycle"]
    assert 1 <= max(reads) <= 3  # at most MAX_LOG_READS a cycle, within the budget
    assert storm["trouble_workers_every_cycle_from"] == 1


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
