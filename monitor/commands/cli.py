"""The `runpod-monitor` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from monitor import __version__

if TYPE_CHECKING:
    from monitor.config import Settings


def _replay(args: argparse.Namespace) -> int:
    from monitor import logs
    from monitor.commands.replay import replay
    from monitor.commands.timeline import render_text
    from monitor.config import ConfigError
    from monitor.simulator import ScenarioError, load_scenario

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


def _settings(path: str | None, shard: str | None = None) -> Settings | None:
    """Load the configuration (`--shard` over its `shard`), or print every problem and
    return None (exit 2)."""
    from monitor.config import ConfigError, load_settings

    try:
        return load_settings(path, overrides=None if shard is None else {"shard": shard})
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return None


def _run(args: argparse.Namespace) -> int:
    from monitor import logs
    from monitor.commands.daemon import Daemon, serve
    from monitor.config import ConfigError

    settings = _settings(args.config, args.shard)
    if settings is None:
        return 2
    logs.configure(settings.log.level, args.log_format or settings.log.format,
                   settings.secrets())
    try:
        daemon = Daemon(settings, dry_run=args.dry_run)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return asyncio.run(serve(daemon))


def _check(args: argparse.Namespace) -> int:
    import time

    from monitor import logs
    from monitor.actions import Proposal
    from monitor.commands.check import check_once, failed_to_probe, render, render_dry_run
    from monitor.config import ConfigError

    settings = _settings(args.config)
    if settings is None:
        return 2
    logs.configure("warning", "json", settings.secrets())
    try:
        proposals: list[Proposal] = []
        result, incidents = asyncio.run(check_once(settings, time.time(), proposals))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if args.dry_run and args.format == "json":
        out = json.loads(render(result, incidents, "json"))
        out.update(json.loads(render_dry_run(settings, proposals, "json")))
        print(json.dumps(out, indent=2))
    else:
        print(render(result, incidents, args.format))
        if args.dry_run:
            print(render_dry_run(settings, proposals, "text"))
    # a RunPod that cannot be reached is not "nothing wrong": a script must not read it as 0
    critical = any(i.diagnosis.severity == "critical" for i in incidents)
    return 1 if critical or failed_to_probe(result) else 0


def _record(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from monitor import logs
    from monitor.commands.record import check_writable, default_name, record, run_until_signalled
    from monitor.config import ConfigError
    from monitor.pipeline.cycle import CycleResult

    # bad options exit 2 before the configuration is read or RunPod is called
    if args.cycles < 1:
        print(f"error: --cycles: must be at least 1 (got {args.cycles})", file=sys.stderr)
        return 2
    if args.interval is not None and not args.interval > 0:
        print(f"error: --interval: must be > 0 seconds (got {args.interval:g})",
              file=sys.stderr)
        return 2
    out = Path(args.out or f"{default_name(time.time())}.yaml")
    problem = check_writable(out)
    if problem is not None:
        print(f"error: --out: {problem}", file=sys.stderr)
        return 2
    settings = _settings(args.config)
    if settings is None:
        return 2
    logs.configure("warning", "json", settings.secrets())
    interval = args.interval if args.interval is not None else settings.interval_s

    def progress(k: int, n: int, result: CycleResult) -> None:
        obs = result.observation
        failed = sum(1 for c in result.calls if c.outcome != "ok")
        raised = ", ".join(i.diagnosis.code for i in result.changes.raised)
        resolved = ", ".join(i.diagnosis.code for i in result.changes.resolved)
        tail = "".join(f" | {w} {codes}" for w, codes in (("raised", raised),
                                                          ("resolved", resolved)) if codes)
        print(f"record: cycle {k}/{n}  {len(obs.endpoints)} endpoints, {len(result.calls)} "
              f"calls, {failed} failed{tail}", file=sys.stderr, flush=True)

    try:
        result = run_until_signalled(record(settings, args.cycles, interval, out,
                                            progress=progress))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError):
        kept = f"the cycles recorded so far are in {out}" if out.exists() else "no cycle ended"
        print(f"record: interrupted; {kept}", file=sys.stderr)
        return 130
    rec = result.recorder
    print(f"wrote {out}: {rec.cycles} cycles in {result.steps} steps, "
          f"{len(rec.incidents)} incidents; replay it with: runpod-monitor replay {out}")
    return 0


def _mcp(args: argparse.Namespace) -> int:
    import os

    from monitor import logs
    from monitor.mcp.daemon_api import target_for
    from monitor.mcp.server import serve_stdio

    # an agent starts the server in its own project, where there may be no config.yaml:
    # then the defaults (the daemon on 127.0.0.1:9108, or --url) serve
    config = args.config
    if config is None and os.path.exists("config.yaml"):
        config = "config.yaml"
    settings = _settings(config)
    if settings is None:
        return 2
    # stdout carries the protocol: every log line goes to stderr (logs.configure does)
    logs.configure("warning", "json", settings.secrets())
    token = os.environ.get("RUNPOD_MONITOR_WRITE_TOKEN")
    return serve_stdio(settings, target_for(settings, args.url, token))


def _demo(args: argparse.Namespace) -> int:
    import os

    from monitor import logs
    from monitor.commands.demo import run_demo

    logs.configure("info", args.log_format or "auto")
    return asyncio.run(run_demo(args.port, os.environ, host=args.host))


def _log_format(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--log-format", choices=("auto", "json", "console"), default=None,
                   help="console: lines and incident blocks for a person; json: one JSON "
                        f"object a line; auto: console on a TTY, else json (default: {default})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runpod-monitor",
        description="Diagnoses for RunPod Serverless: what is wrong, and how to fix it.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("run", help="run the monitor daemon (probes, rules, metrics, alerts)")
    p.add_argument("--config", default="config.yaml",
                   help="configuration file (default config.yaml)")
    p.add_argument("--shard", metavar="I/N", default=None,
                   help="watch this replica's share of the endpoints (overrides `shard`)")
    p.add_argument("--dry-run", action="store_true",
                   help="propose and approve guarded fixes (actions:) but never call them; "
                        "GET /api/v1/actions shows what would run")
    _log_format(p, "log.format, auto by default")
    p.set_defaults(func=_run)

    p = sub.add_parser("check", help="probe once now and print the diagnoses (exit 1 if critical)")
    p.add_argument("--config", default="config.yaml",
                   help="configuration file (default config.yaml)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--dry-run", action="store_true",
                   help="also list the guarded fixes this cycle proposes and the calls they "
                        "would make (check never calls them)")
    p.set_defaults(func=_check)

    p = sub.add_parser("mcp", help="serve the diagnoses to a coding agent (MCP over stdio)")
    p.add_argument("--config", default=None,
                   help="configuration file: where the daemon listens, its basic auth, the "
                        "RunPod key for `check` (default config.yaml if present, else none)")
    p.add_argument("--url", default=None,
                   help="the daemon's base URL (default: from http.listen in the config)")
    p.set_defaults(func=_mcp)

    p = sub.add_parser("demo", help="the daemon against the built-in simulator, on 127.0.0.1")
    p.add_argument("--port", type=int, default=9108, help="the daemon's port (default 9108)")
    p.add_argument("--host", default="127.0.0.1",
                   help="the daemon's address (default 127.0.0.1; 0.0.0.0 in a container)")
    _log_format(p, "auto")
    p.set_defaults(func=_demo)

    p = sub.add_parser("replay", help="run the pipeline over a scenario in simulated time")
    p.add_argument("scenario", help="scenario YAML file")
    p.add_argument("--format", choices=("json", "text"), default="json")
    p.set_defaults(func=_replay)

    p = sub.add_parser(
        "record", help="poll the account N cycles and write a scenario file replay plays back",
        description="Poll RunPod with the normal pipeline (same config, same client) for N "
                    "cycles and write what it saw as a scenario: per cycle the endpoints' "
                    "configuration, /health, /requests, failures as faults (429 with its "
                    "Retry-After), the account, and the REST v2 facts when read. Identical "
                    "cycles merge into one step; `expect:` holds the incidents this run "
                    "raised, so `runpod-monitor replay FILE` checks itself. The file names no "
                    "API key; env values of secret-looking keys (TOKEN, KEY, SECRET, "
                    "PASSWORD...) and token-shaped values are placeholders, log lines masked. "
                    "Nothing is alerted or stored. Exit 0, 2 for bad options or config, 130 "
                    "when interrupted (the cycles so far are written). See docs/record.md.")
    p.add_argument("--cycles", type=int, required=True, help="how many probe cycles (>= 1)")
    p.add_argument("--interval", type=float, default=None,
                   help="seconds between cycles (default: the config's interval_s)")
    p.add_argument("--out", default=None,
                   help="the scenario file to write (default recorded-<UTC time>.yaml)")
    p.add_argument("--config", default="config.yaml",
                   help="configuration file (default config.yaml)")
    p.set_defaults(func=_record)

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
