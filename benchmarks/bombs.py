#!/usr/bin/env python3
"""What one hostile answer costs `runpod-monitor check` (see benchmarks/README.md).

A loopback server (tests/bombkit.py) answers `/graphql`, or the data plane, with a gzip
or deflate bomb (1 MB that inflates to 1 GiB), an endless chunked body, a gzip stream
made as it is read, a deflate stream of empty blocks, or a Content-Length of 1 TB that
never arrives; `runpod-monitor check` runs against each under `/usr/bin/time -v` and the
script prints its peak RSS and wall time next to the same command against a normal
answer from the same server (the baseline, measured in the same run).

It also sizes the caps: the simulator's GraphQL `myself` answer for an account of
`--sizing` endpoints (benchmarks/run.py's accounts), decoded and gzip-compressed.

    python benchmarks/bombs.py                    # every kind, sizing at N = 5000
    python benchmarks/bombs.py --kinds gzip --target rest --sizing 0
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

import yaml  # noqa: E402
from bombkit import KINDS, BombServer, bomb  # noqa: E402

KEY = "bomb-bench-key-0123456789"


def sizing(n: int) -> dict[str, int]:
    """The simulator's `myself` answer for benchmarks/run.py's account of `n` endpoints."""
    import aiohttp
    from run import scenario_dict

    from monitor.runpod.queries import MYSELF
    from monitor.simulator.scenario import Scenario
    from monitor.simulator.server import SimulatorServer

    async def fetch() -> bytes:
        server = SimulatorServer(Scenario.from_dict(scenario_dict(n)), KEY)
        url = await server.start()
        try:
            async with aiohttp.ClientSession() as s, s.post(
                f"{url}/graphql", json={"query": MYSELF},
                headers={"Authorization": f"Bearer {KEY}", "Accept-Encoding": "identity"},
            ) as resp:
                return await resp.read()
        finally:
            await server.stop()

    body = asyncio.run(fetch())
    return {"endpoints": n, "decoded_bytes": len(body),
            "gzip_bytes": len(gzip.compress(body, compresslevel=6))}


class Background:
    """The bomb server on its own event loop in a thread (it is not what is measured)."""

    def __init__(self) -> None:
        self.server = BombServer(decoded_bytes=1 << 30)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> BombServer:
        for encoding in ("gzip", "deflate"):  # made once, before anything is timed
            bomb(encoding, self.server.decoded_bytes)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)
        return self.server

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def run_check(base: str, workdir: Path, timeout_s: float) -> dict[str, Any]:
    """`runpod-monitor check` once under /usr/bin/time -v: peak RSS, wall time, exit code,
    and the failure it logged for each call that failed."""
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump({
        "runpod": {"graphql_url": f"{base}/graphql", "rest_url": f"{base}/v2",
                   "timeout_s": timeout_s},
        "state": {"path": str(workdir / "state.db")},
        "log": {"level": "info", "format": "json"},
    }))
    config.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if "PROXY" not in k.upper()}
    env["RUNPOD_API_KEY"] = KEY
    exe = Path(sys.executable).with_name("runpod-monitor")
    start = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-v", str(exe), "check", "--config", str(config), "--format", "json"],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    wall = time.perf_counter() - start
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    failures = []
    for line in done.stderr.splitlines():
        if '"runpod_call_failed"' in line:
            event = json.loads(line)
            failures.append(f"{event['probe']}: {event['kind']}: {event['message']}")
    return {"exit": done.returncode, "wall_s": round(wall, 2),
            "peak_rss_mb": round(int(rss.group(1)) / 1024, 1) if rss else None,
            "failures": failures}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default=",".join(k for k in KINDS if k != "ok"))
    parser.add_argument("--target", choices=("graphql", "rest"), default="graphql")
    parser.add_argument("--sizing", type=int, default=5000, help="endpoints; 0: skip")
    parser.add_argument("--timeout", type=float, default=10.0, help="runpod.timeout_s")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    out: dict[str, Any] = {"target": args.target, "timeout_s": args.timeout, "runs": {}}
    if args.sizing:
        out["sizing"] = sizing(args.sizing)
        s = out["sizing"]
        print(f"myself at N = {s['endpoints']}: {s['decoded_bytes']:,} bytes decoded, "
              f"{s['gzip_bytes']:,} gzip")
    with Background() as server, tempfile.TemporaryDirectory() as tmp:
        for kind in ["ok", *args.kinds.split(",")]:
            server.kinds = {"graphql": "ok", "rest": "ok", args.target: kind}
            run = run_check(server.base, Path(tmp), args.timeout)
            out["runs"][kind] = run
    base_rss = out["runs"]["ok"]["peak_rss_mb"]
    print(f"{'answer':<14} {'exit':>4} {'wall s':>7} {'peak RSS MB':>12} {'x baseline':>10}")
    for kind, run in out["runs"].items():
        ratio = run["peak_rss_mb"] / base_rss if run["peak_rss_mb"] and base_rss else float("nan")
        print(f"{kind:<14} {run['exit']:>4} {run['wall_s']:>7.2f} {run['peak_rss_mb']:>12} "
              f"{ratio:>10.2f}")
        for failure in run["failures"][:2]:
            print(f"{'':<14} {failure[:150]}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
