"""`/metrics` plain and gzipped at N endpoints, both measured in the same run.

Only the monitor child of `run.py` (history full, as there), so a run takes well under a
minute at N = 1000; the plain scrapes are the baseline the gzip ones are divided by:

    python benchmarks/scrape_gzip.py                 # N = 1000, 50 scrapes of each kind
    python benchmarks/scrape_gzip.py --sizes 100 --scrapes 10

Writes benchmarks/results/scrape-gzip.json (or --json PATH).
"""

from __future__ import annotations

import json
import secrets
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench


def main(argv: list[str]) -> int:
    args = bench.parse_args(["--sizes", "1000", "--cycles", "2", "--no-sweep",
                             "--json", str(bench.RESULTS / "scrape-gzip.json"), *argv])
    sys.path.insert(0, str(bench.ROOT))
    api_key = "bench-" + secrets.token_urlsafe(18)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="runpod-monitor-gzip-") as tmp:
        workdir = Path(tmp)
        for n in (int(s) for s in args.sizes.split(",") if s.strip()):
            path = bench.write_scenario(n, workdir, args.busy_every)
            with bench.Simulator(path, api_key, workdir) as sim:
                m = bench.measure_monitor(sim, n, args, workdir, args.concurrency,
                                          args.cycles, args.scrapes)
            sc = m["scrape"]
            rows.append({"n": n, "scrape": sc, "ratios": {
                "bytes": sc["gzip_payload_bytes"] / sc["payload_bytes"],
                "p99": sc["gzip_p99_ms"] / sc["p99_ms"],
                "after_cycle_p99": sc["gzip_after_cycle_p99_ms"] / sc["after_cycle_p99_ms"],
            }})
    print(f"{'N':>5}  {'body KB plain / gzip':>21}  {'p50/p99 ms plain':>16}  "
          f"{'p50/p99 ms gzip':>15}  {'after-cycle p50/p99 plain':>25}  "
          f"{'after-cycle p50/p99 gzip':>24}  {'gzip/plain bytes, p99, after p99':>32}")
    for r in rows:
        sc, q = r["scrape"], r["ratios"]
        kb = sc["payload_bytes"] / 1024, sc["gzip_payload_bytes"] / 1024
        print(f"{r['n']:>5}  {kb[0]:>10.0f} / {kb[1]:>8.0f}"
              f"  {sc['median_ms']:>7.1f} / {sc['p99_ms']:>6.1f}"
              f"  {sc['gzip_median_ms']:>6.1f} / {sc['gzip_p99_ms']:>6.1f}"
              f"  {sc['after_cycle_median_ms']:>14.1f} / {sc['after_cycle_p99_ms']:>8.1f}"
              f"  {sc['gzip_after_cycle_median_ms']:>13.1f} / {sc['gzip_after_cycle_p99_ms']:>8.1f}"
              f"  {q['bytes']:>10.3f}, {q['p99']:>5.2f}, {q['after_cycle_p99']:>5.2f}")
        g, rd = sc["server_gzip_cpu_ms"], sc["server_render_ms"]
        print(f"       server: render after a cycle {rd['after_cycle_median']:.1f} ms (wall, "
              f"median); gzip CPU {g['after_cycle_median']:.2f} ms (max "
              f"{g['after_cycle_max']:.2f}) after a cycle, {g['compressions']} compressions "
              f"for {2 * args.scrapes + 1} gzip scrapes")
    doc = {"generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
           "command": " ".join(["scrape_gzip.py", *argv]), "machine": bench.machine(),
           "scrapes": args.scrapes, "sizes": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
