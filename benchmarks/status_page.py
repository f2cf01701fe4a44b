#!/usr/bin/env python3
"""The status page at N endpoints (default 1000): render time and size, with its charts,
against the page without them measured in the same run (see benchmarks/README.md).

The history is the retention window's 240 observations (7200 s / 30 s), built as the probe
path keeps them: an unchanged endpoint's sample is the same object from cycle to cycle.
Every 10th endpoint is busy (its queue depth, jobs and workers change every cycle: the
charts' worst case), every 100th has `no_gpu_capacity` active; 50 incidents came and went
in the window. Each variant is rendered `--repeat` times; the median CPU time is reported,
and the bytes of the page as served (UTF-8) and gzipped. Then page 1 is fetched over
loopback from the daemon's own aiohttp app (`monitor.http.web.build_app`).

    python benchmarks/status_page.py                 # N = 1000
    python benchmarks/status_page.py --sizes 100,1000,5000 --repeat 5 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import http.client
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiohttp import web  # noqa: E402

from model.history import History  # noqa: E402
from model.observation import (  # noqa: E402
    OK,
    Account,
    EndpointConfig,
    EndpointSample,
    Health,
    Job,
    Observation,
    Template,
)
from monitor.http.status_page import render  # noqa: E402
from monitor.http.web import build_app  # noqa: E402
from monitor.state.episodes import Episode  # noqa: E402
from monitor.state.incidents import Incident  # noqa: E402
from rules.diagnosis import Diagnosis  # noqa: E402

INTERVAL_S = 30.0
OBSERVATIONS = 240  # state.retention_s 7200 / 30 s
T_END = 1_767_225_600.0


@dataclass
class Runtime:
    """The Runtime protocol over a fixed history (what the page reads from the daemon)."""

    observations: list[Observation]
    active: list[Incident]
    log: list[Episode]
    names: dict[str, str] = field(default_factory=dict)

    def metrics_body(self) -> tuple[bytes, str]:
        return b"", "text/plain"

    def health(self) -> tuple[bool, str]:
        return True, "ok"

    def incidents(self) -> list[Incident]:
        return self.active

    def last_observation(self) -> Observation | None:
        return self.observations[-1]

    def endpoint_name(self, endpoint_id: str) -> str:
        return self.names.get(endpoint_id, endpoint_id)

    def register_job(self, endpoint_id: str, job_id: str) -> bool:
        return False

    def interval_s(self) -> float:
        return INTERVAL_S

    def history(self) -> History:
        return History(tuple(self.observations))

    def episodes(self) -> list[Episode]:
        return self.log


def build(n: int) -> Runtime:
    """N endpoints over the retention window, as described in the module docstring."""
    template = Template(id="tpl", name="worker", image_name="example/worker:1")
    configs = {
        f"ep{i:05d}": EndpointConfig(
            id=f"ep{i:05d}", name=f"worker-{i:05d}", gpu_ids="AMPERE_48,ADA_48_PRO",
            workers_min=0, workers_max=3, template=template,
        ) for i in range(n)
    }
    idle = {eid: EndpointSample(eid, OK, 200, Health(idle=1, ready=1), (), True, cfg)
            for eid, cfg in configs.items()}
    stuck = [eid for i, eid in enumerate(configs) if i % 100 == 0]
    observations = []
    for c in range(OBSERVATIONS):
        t = T_END - (OBSERVATIONS - 1 - c) * INTERVAL_S
        endpoints = dict(idle)
        for i, eid in enumerate(configs):
            if i % 100 == 0:
                endpoints[eid] = EndpointSample(
                    eid, OK, 200, Health(in_queue=7, throttled=2), (
                        Job(f"{eid}-a", "IN_QUEUE", delay_ms=1000 * 30 * c),
                    ), True, configs[eid])
            elif i % 10 == 0:
                q = (c + i) % 6
                endpoints[eid] = EndpointSample(
                    eid, OK, 200,
                    Health(in_queue=q, in_progress=1, running=1 + (c % 2), idle=c % 3),
                    tuple(Job(f"{eid}-{c}-{k}", "IN_QUEUE", delay_ms=700 * (c % 40) + k)
                          for k in range(q)), True, configs[eid])
        account = Account(balance=500 - c * 0.02, spend_per_hr=2.4 + (c % 7) * 0.1)
        observations.append(Observation(c + 1, t, OK, account=account, endpoints=endpoints))

    def diagnosis(eid: str, severity: str = "critical") -> Diagnosis:
        return Diagnosis(
            code="no_gpu_capacity", scope="endpoint", severity=severity,  # type: ignore[arg-type]
            summary=f"{configs[eid].name} has 2 throttled workers while 7 jobs wait.",
            remedy="Add a GPU tier.", evidence={"throttled": 2, "in_queue": 7},
            endpoint_id=eid, endpoint_name=configs[eid].name,
        )

    t0 = observations[0].t
    active = [Incident(diagnosis(eid), since=t0 + 600, raised_cycle=21) for eid in stuck]
    log = [Episode.opened(i) for i in active]
    busy = [eid for i, eid in enumerate(configs) if i % 10 == 0 and i % 100] or list(configs)
    for k in range(50):
        eid = busy[k % len(busy)]
        since = t0 + 120 * k
        log.append(Episode(
            code="queue_backlog", endpoint_id=eid, endpoint_name=configs[eid].name,
            summary="The queue grew for 10 min.", first_severity="warning",
            severity="critical", since=since, raised_cycle=1 + 4 * k,
            escalated_at=since + 300, ended_at=since + 900, ended_cycle=31 + 4 * k,
        ))
    names = {eid: cfg.name for eid, cfg in configs.items()}
    return Runtime(observations, active, sorted(log, key=lambda e: -e.since), names)


def measure(rt: Runtime, repeat: int, **kw: Any) -> dict[str, Any]:
    """Median CPU (process time) of rendering the page `repeat` times, and its size."""
    times = []
    page = ""
    for _ in range(repeat):
        start = time.process_time()
        page = render(rt, now=T_END + 10, **kw)
        times.append(time.process_time() - start)
    body = page.encode()
    return {
        "render_ms_median": round(statistics.median(times) * 1000, 2),
        "render_ms_min": round(min(times) * 1000, 2),
        "bytes": len(body),
        "gzip_bytes": len(gzip.compress(body, 6)),
        "charts": page.count('<svg class="chart"'),
        "cards": page.count('class="card ep'),
    }


async def fetch(rt: Runtime, repeat: int) -> dict[str, Any]:
    """GET / from the daemon's app over loopback: wall ms per request (median)."""
    runner = web.AppRunner(build_app(rt), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]

    def get() -> tuple[float, int]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        start = time.perf_counter()
        conn.request("GET", "/")
        resp = conn.getresponse()
        n = len(resp.read())
        elapsed = time.perf_counter() - start
        conn.close()
        if resp.status != 200:
            raise RuntimeError(f"GET / answered {resp.status}")
        return elapsed, n

    try:
        results = [await asyncio.to_thread(get) for _ in range(repeat)]
    finally:
        await runner.cleanup()
    return {"wall_ms_median": round(statistics.median(r[0] for r in results) * 1000, 2),
            "bytes": results[0][1]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000", help="comma-separated N (default 1000)")
    ap.add_argument("--repeat", type=int, default=7, help="renders per variant (default 7)")
    ap.add_argument("--json", type=Path, help="write the results here too")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    out: dict[str, Any] = {"observations": OBSERVATIONS, "repeat": args.repeat, "sizes": []}
    print(f"status page, {OBSERVATIONS} observations of history, median of {args.repeat}")
    print(f"{'N':>6} {'variant':<34} {'render ms':>10} {'KB':>8} {'gzip KB':>8} "
          f"{'charts':>6} {'vs baseline':>12}")
    for n in sizes:
        rt = build(n)
        variants = {
            "baseline: no charts, every card": measure(rt, args.repeat, per_page=None,
                                                       pictures=False),
            "page 1 (in trouble first)": measure(rt, args.repeat, page=1),
            "last page (idle endpoints)": measure(rt, args.repeat, page=10**6),
            "every card with charts (unpaged)": measure(rt, max(1, args.repeat // 3),
                                                        per_page=None),
        }
        base = variants["baseline: no charts, every card"]
        for name, v in variants.items():
            v["render_vs_baseline"] = round(v["render_ms_median"] / base["render_ms_median"], 3)
            v["bytes_vs_baseline"] = round(v["bytes"] / base["bytes"], 3)
            print(f"{n:>6} {name:<34} {v['render_ms_median']:>10.1f} {v['bytes'] / 1024:>8.0f} "
                  f"{v['gzip_bytes'] / 1024:>8.0f} {v['charts']:>6} "
                  f"{v['render_vs_baseline']:>6.2f}x time {v['bytes_vs_baseline']:.2f}x size")
        served = asyncio.run(fetch(rt, args.repeat))
        print(f"{n:>6} {'GET / over loopback (page 1)':<34} {served['wall_ms_median']:>10.1f} "
              f"{served['bytes'] / 1024:>8.0f}")
        out["sizes"].append({"n": n, "variants": variants, "served": served})
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
