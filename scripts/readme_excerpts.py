#!/usr/bin/env python3
"""Write the README's example excerpts from real runs, so none of them is typed by hand.

Each excerpt sits between `<!-- excerpt:NAME -->` and `<!-- /excerpt -->` in README.md:

- `terminal`: what `runpod-monitor demo` prints on a terminal, abridged: the demo scenario
  replayed with the console renderer and the log sink `demo` uses (simulated time from a
  fixed epoch, so the clock reads 00:00:20 and the output is the same on every run).
- `replay`: `runpod-monitor replay tests/scenarios/no-gpu-capacity-stalled.yaml --format text`.
- `slack`: the lock-screen text and the fix section of the Slack message for the demo's
  no_gpu_capacity (the message docs/example-slack-message.md shows in full).

    .venv/bin/python scripts/readme_excerpts.py [--check]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import re
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from monitor import logs  # noqa: E402
from monitor.alerts.router import LogSink  # noqa: E402
from monitor.alerts.slack import render  # noqa: E402
from monitor.commands.demo import demo_scenario  # noqa: E402
from monitor.commands.replay import replay  # noqa: E402
from monitor.commands.timeline import render_text  # noqa: E402
from monitor.simulator import Scenario, load_scenario  # noqa: E402

README = ROOT / "README.md"
REPLAYED = "tests/scenarios/no-gpu-capacity-stalled.yaml"
BLOCK = re.compile(r"(<!-- excerpt:(\w+) -->\n)(.*?)(<!-- /excerpt -->)", re.S)


def _demo() -> Scenario:
    """The demo scenario as `runpod-monitor demo` runs it (group_wait 0)."""
    scenario = demo_scenario()
    monitor = {**scenario.monitor, "alerts": {"group_wait_s": 0}}
    return scenario.model_copy(update={"monitor": monitor})


def _pick(lines: list[str], start: str, stop: str) -> list[str]:
    """From the first line containing `start` up to the last line before `stop` appears."""
    first = next(i for i, line in enumerate(lines) if start in line)
    last = next(i for i, line in enumerate(lines) if i > first and stop in line)
    return lines[first:last]


def terminal() -> str:
    """The demo's console, abridged: low_balance raised, then the cycle most resolve in."""
    buf = io.StringIO()
    stderr, sys.stderr = sys.stderr, buf
    try:
        logs.configure("info", "console")
        asyncio.run(replay(_demo(), env={}, sinks=[LogSink()]))
    finally:
        sys.stderr = stderr
        logs.configure("warning", "json")
    lines = buf.getvalue().splitlines()
    return "\n".join([
        *_pick(lines, "cycle 11 ", "cycle 17 "),
        "⋮",
        *_pick(lines, "cycle 19 ", "cycle 25 "),
    ])


def replay_text() -> str:
    """`replay --format text` of the stalled-capacity scenario."""
    logs.configure("warning", "json")
    return render_text(asyncio.run(replay(load_scenario(ROOT / REPLAYED), env={})))


def slack() -> str:
    """The no_gpu_capacity message: its lock-screen text, then its fix as Slack mrkdwn."""
    logs.configure("warning", "json")
    result = asyncio.run(replay(_demo(), env={}))
    from scripts.example_message import messages

    message = next(m for m in messages(result.alerts)
                   if m.incidents[0].diagnosis.code == "no_gpu_capacity")
    body = render(message)
    fix = next(b["text"]["text"] for b in body["blocks"]
               if b.get("text", {}).get("text", "").startswith("*Fix*"))
    return "\n".join(["text (the lock screen):", body["text"], "", "blocks, the fix:", fix])


EXCERPTS = {"terminal": terminal, "replay": replay_text, "slack": slack}


def rewrite(readme: str) -> str:
    """`readme` with each excerpt block regenerated (a `~~~` fence: Slack's mrkdwn holds
    triple backticks)."""
    def one(m: re.Match[str]) -> str:
        return f"{m.group(1)}~~~text\n{EXCERPTS[m.group(2)]()}\n~~~\n{m.group(4)}"

    return BLOCK.sub(one, readme)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if README.md is not what this script writes")
    args = parser.parse_args(argv)
    old = README.read_text(encoding="utf-8")
    names = {m.group(2) for m in BLOCK.finditer(old)}
    if names != set(EXCERPTS):
        print(f"README.md excerpt markers: {sorted(names)}, want {sorted(EXCERPTS)}",
              file=sys.stderr)
        return 2
    new = rewrite(old)
    if args.check:
        if new != old:
            print("README.md excerpts are stale: run scripts/readme_excerpts.py",
                  file=sys.stderr)
            return 1
        return 0
    README.write_text(new, encoding="utf-8")
    print(f"wrote {README}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
