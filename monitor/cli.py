"""The `runpod-monitor` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from monitor import __version__


def _replay(args: argparse.Namespace) -> int:
    from monitor import logs
    from monitor.config import ConfigError
    from monitor.replay import replay
    from monitor.simulator import ScenarioError, load_scenario
    from monitor.timeline import render_text

    logs.configure(level="warning", fmt="json")
    try:
        scenario = load_scenario(args.scenario)
        result = asyncio.run(replay(scenario))
    except (ScenarioError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.format == "json":
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(render_text(result))
    return 1 if result.failed else 0


def _simulate(args: argparse.Namespace) -> int:
    from monitor import logs
    from monitor.simulator.cli import simulate_main

    logs.configure(level="info")
    return simulate_main(args.scenario, args.port, args.interval, None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runpod-monitor",
        description="Diagnoses for RunPod Serverless: what is wrong, and how to fix it.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("replay", help="run the pipeline over a scenario in simulated time")
    p.add_argument("scenario", help="scenario YAML file")
    p.add_argument("--format", choices=("json", "text"), default="json")
    p.set_defaults(func=_replay)

    p = sub.add_parser("simulate", help="serve a scenario as a fake RunPod API on loopback")
    p.add_argument("scenario", help="scenario YAML file")
    p.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (default 8765)")
    p.add_argument("--interval", type=float, default=None,
                   help="real seconds per scenario cycle (default: the scenario's interval_s)")
    p.set_defaults(func=_simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
