#!/usr/bin/env python3
"""The completion sampler's data-plane calls per cycle, against RunPod's limits, and the CPU
of the spend rules (job_overrun, empty_output, cold_start_regression) per cycle.

The worst case for the sampler: every endpoint finishes `--jobs` new jobs every cycle, so
`/health`'s counters move, `/requests` is read on each, and each lists only completions the
monitor has not read yet. The simulator counts the calls it receives per (endpoint,
operation); the real pipeline (`build_pipeline`, as the daemon builds it, shipped config)
runs `--cycles` cycles against it on loopback.

    python benchmarks/spend_sampling.py                       # N = 10, 100, 1000
    python benchmarks/spend_sampling.py --sizes 100 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from structlog.testing import capture_logs  # noqa: E402

from monitor.config import load_settings  # noqa: E402
from monitor.pipeline.cycle import build_pipeline  # noqa: E402
from monitor.pipeline.jobs import SAMPLE_PER_CYCLE, SAMPLE_PER_ENDPOINT  # noqa: E402
from monitor.runpod.client import RUNPOD_LIMITS, RunPodClient  # noqa: E402
from monitor.simulator import Scenario, SimulatorServer  # noqa: E402
from rules import spend  # noqa: E402

KEY = "spend-sampling-benchmark-key-0123"
INTERVAL_S = 30.0


def scenario(n: int, cycles: int, jobs: int) -> Scenario:
    eids = [f"bench{i:06d}x" for i in range(n)]
    endpoints = [{
        "id": eid, "name": f"ep-{i}", "gpuIds": "ADA_24,AMPERE_24", "workersMin": 0,
        "workersMax": 2, "idleTimeout": 5,
        "template": {"id": f"tpl-{i}", "name": "w", "imageName": "acme/w:1", "dockerArgs": "",
                     "containerDiskInGb": 50, "env": []},
        "health": {"jobs": {"completed": 0}, "workers": {"idle": 1}},
    } for i, eid in enumerate(eids)]
    steps = [{"cycles": 1, "endpoints": {eid: {
        "health": {"jobs": {"completed": (c + 1) * jobs}},
        "jobs": [{"id": f"{eid}-{c}-{k}", "status": "COMPLETED", "delayTime": 200,
                  "executionTime": 3000, "output": None if k % 3 == 0 else {"r": k}}
                 for k in range(jobs)],
    } for eid in eids}} for c in range(cycles)]
    return Scenario.from_dict({"name": "spend-sampling", "interval_s": INTERVAL_S,
                               "account": {"clientBalance": 500.0, "currentSpendPerHr": 1.0},
                               "endpoints": endpoints, "steps": steps})


async def measure(n: int, cycles: int, jobs: int) -> dict[str, Any]:
    sc = scenario(n, cycles, jobs)
    server = SimulatorServer(sc, KEY)
    url = await server.start()
    per_cycle: list[dict[str, Any]] = []
    rules_ms: list[float] = []
    try:
        async with RunPodClient(api_key=KEY, graphql_url=f"{url}/graphql",
                                rest_url=f"{url}/v2", timeout_s=30.0) as client:
            settings = load_settings(None, env={})
            pipeline = build_pipeline(settings, client, sinks=[], interval_s=INTERVAL_S)
            for k in range(1, cycles + 1):
                server.set_cycle(k)
                before = dict(server.request_counts)
                with capture_logs():
                    await pipeline.cycle(k, (k - 1) * INTERVAL_S)
                sent = {key: v - before.get(key, 0) for key, v in server.request_counts.items()
                        if v - before.get(key, 0)}
                status = [v for (_, op), v in sent.items() if op == "status"]
                requests = [v for (_, op), v in sent.items() if op == "requests"]
                per_cycle.append({
                    "status_total": sum(status),
                    "status_max_per_endpoint": max(status, default=0),
                    "requests_total": sum(requests),
                    "requests_max_per_endpoint": max(requests, default=0),
                })
                history = pipeline.history.view()
                t0 = time.process_time()
                spend.diagnose(history, settings.rules)
                rules_ms.append((time.process_time() - t0) * 1000)
    finally:
        await server.stop()
    status_limit = RUNPOD_LIMITS["status"]
    requests_limit = RUNPOD_LIMITS["requests"]
    return {
        "endpoints": n,
        "new_completions_per_endpoint_per_cycle": jobs,
        "cycles": cycles,
        "per_cycle": per_cycle,
        "status_max_per_endpoint_per_cycle": max(c["status_max_per_endpoint"] for c in per_cycle),
        "status_max_per_cycle": max(c["status_total"] for c in per_cycle),
        "requests_max_per_endpoint_per_cycle": max(
            c["requests_max_per_endpoint"] for c in per_cycle),
        "limits": {
            "sample_per_endpoint": SAMPLE_PER_ENDPOINT,
            "sample_per_cycle": SAMPLE_PER_CYCLE,
            "status_per_endpoint": f"{status_limit.calls}/{status_limit.window_s:g}s, "
                                   f"{status_limit.concurrent} at once",
            "requests_per_endpoint": f"{requests_limit.calls}/{requests_limit.window_s:g}s, "
                                     f"{requests_limit.concurrent} at once",
        },
        "spend_rules_cpu_ms_median": round(statistics.median(rules_ms), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--cycles", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=10)
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" /
                    "spend-sampling.json")
    args = ap.parse_args()
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        r = asyncio.run(measure(n, args.cycles, args.jobs))
        results.append(r)
        print(f"N={n}: /status max {r['status_max_per_endpoint_per_cycle']} per endpoint, "
              f"{r['status_max_per_cycle']} per cycle; /requests max "
              f"{r['requests_max_per_endpoint_per_cycle']} per endpoint; spend rules "
              f"{r['spend_rules_cpu_ms_median']} ms CPU per cycle", flush=True)
    args.json.write_text(json.dumps({"results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
