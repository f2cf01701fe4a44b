"""What the MCP tools cost: the daemon's one-endpoint route and the tools' answers at scale,
and the server's start over stdio, each next to a baseline measured in the same run.

    python benchmarks/mcp_tools.py                 # N = 1000 endpoints, 240 cycles of history
    python benchmarks/mcp_tools.py --endpoints 100 --cycles 120

In process (no sockets): a History of N endpoints over `--cycles` observations 30 s apart
(the retention window at the default interval), every 100th endpoint throttled with jobs
queued. Timed: `endpoint_report` (the body of GET /api/v1/endpoints/{id}) against
`endpoints_json` for all N (GET /api/v1/endpoints, the route the page and Prometheus users
already have); `finish` on a list_diagnoses answer of N diagnoses (the size bound at work).
Over stdio: `runpod-monitor mcp` from spawn to the MCP `initialize` answer, against a bare
`python -c "import monitor.commands.check"` (what `runpod-monitor check` loads before it probes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model.history import History  # noqa: E402
from model.observation import (  # noqa: E402
    EndpointConfig,
    EndpointSample,
    Health,
    Observation,
    Template,
)
from monitor.http.history_api import endpoint_report  # noqa: E402
from monitor.http.web import endpoints_json  # noqa: E402
from monitor.logs import Redactor  # noqa: E402
from monitor.mcp import answers  # noqa: E402

T0 = 1_800_000_000.0


def build_history(n: int, cycles: int) -> History:
    configs = {
        f"ep{i:05d}": EndpointConfig(
            f"ep{i:05d}", f"worker-{i}", "AMPERE_48,ADA_48_PRO", None, 0, 3,
            template=Template(f"tpl{i}", f"tpl{i}", "acme/worker:1", "", 60),
        )
        for i in range(n)
    }
    observations = []
    for c in range(cycles):
        endpoints = {}
        for i, (eid, config) in enumerate(configs.items()):
            sick = i % 100 == 0
            health = Health(completed=1000 + c, in_queue=4 if sick else 0,
                            throttled=1 if sick else 0, idle=0 if sick else 1)
            endpoints[eid] = EndpointSample(eid, "ok", 200, health, (), True, config)
        observations.append(Observation(c, T0 + 30 * c, "ok", endpoints=endpoints))
    return History(tuple(observations))


def timed(fn: Any, repeat: int) -> float:
    """Median seconds of `repeat` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


async def _initialize(config: Path) -> float:
    from mcp import ClientSession, StdioServerParameters, stdio_client

    params = StdioServerParameters(command=sys.executable,
                                   args=["-m", "monitor", "mcp", "--config", str(config)])
    start = time.perf_counter()
    async with stdio_client(params, errlog=subprocess.DEVNULL) as (r, w), \
            ClientSession(r, w) as session:
        await session.initialize()
        return time.perf_counter() - start


def startup(repeat: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(f"state: {{path: {tmp}/state.db}}\n", encoding="utf-8")
        config.chmod(0o600)
        mcp_s = statistics.median(asyncio.run(_initialize(config)) for _ in range(repeat))

    def bare() -> None:
        subprocess.run([sys.executable, "-c", "import monitor.commands.check"], check=True)

    return {"mcp_initialize_s": mcp_s, "check_import_s": timed(bare, repeat)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=240)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    history = build_history(args.endpoints, args.cycles)
    latest = history.observations[-1]
    eid = "ep00000"
    one = Observation(latest.cycle, latest.t, "ok", endpoints={eid: latest.endpoints[eid]})

    def report() -> dict[str, Any] | None:
        row = endpoints_json(one, history.endpoint_name)["endpoints"][0]
        return endpoint_report(history, eid, 3600, row)

    def all_endpoints() -> bytes:
        return json.dumps(endpoints_json(latest, history.endpoint_name)).encode()

    report_s = timed(lambda: json.dumps(report()), args.repeat)
    all_s = timed(all_endpoints, args.repeat)
    body = report()
    assert body is not None

    diagnoses = [{"code": "no_gpu_capacity", "severity": "critical", "endpoint_id": f"ep{i}",
                  "summary": "s" * 200, "remedy": "r" * 1500, "evidence": {"throttled": 1}}
                 for i in range(args.endpoints)]
    raw = answers.list_diagnoses(diagnoses, None, None)
    redactor = Redactor(["not-a-real-key-123456"])
    finish_s = timed(lambda: answers.finish(raw, redactor), args.repeat)
    bounded = answers.finish(raw, redactor)
    unbounded_chars = len(json.dumps(diagnoses, separators=(",", ":")))

    out = {
        "endpoints": args.endpoints, "cycles": args.cycles,
        "endpoint_route_ms": round(report_s * 1000, 2),
        "endpoint_route_bytes": len(json.dumps(body)),
        "endpoint_route_points": len(body["history"]["points"]),
        "all_endpoints_route_ms": round(all_s * 1000, 2),
        "all_endpoints_route_bytes": len(all_endpoints()),
        "endpoint_vs_all_time_ratio": round(report_s / all_s, 3),
        "list_diagnoses_finish_ms": round(finish_s * 1000, 2),
        "list_diagnoses_chars": len(json.dumps(bounded, separators=(",", ":"))),
        "list_diagnoses_kept": len(bounded["diagnoses"]),
        "list_diagnoses_unbounded_chars": unbounded_chars,
        **{k: round(v, 3) for k, v in startup(max(1, args.repeat // 2)).items()},
    }
    out["mcp_initialize_vs_check_import"] = round(
        out["mcp_initialize_s"] / out["check_import_s"], 2)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
