#!/usr/bin/env python3
"""Write docs/example-slack-message.md: Slack messages rendered from a real `replay`.

Replays the built-in demo scenario (as `runpod-monitor demo` runs it: group_wait 0) and
renders, exactly as the Slack sink posts them, the first grouped firing message, the first
firing message with a remedy, and the first resolved message: the Block Kit JSON and the
`text` fallback that phones show. The replay runs in simulated time from a fixed epoch, so
the output is the same on every run.

    .venv/bin/python scripts/example_message.py [--out docs/example-slack-message.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from monitor.alerts.model import Message, Notification  # noqa: E402
from monitor.alerts.slack import render  # noqa: E402
from monitor.commands.demo import demo_scenario  # noqa: E402
from monitor.commands.replay import replay  # noqa: E402


def messages(alerts: Sequence[Notification]) -> list[Message]:
    """Replay's alerts (one per incident) back into the messages that carried them."""
    out: list[Message] = []
    for n in alerts:
        if out and out[-1].batch == n.batch:
            last = out[-1]
            out[-1] = Message(last.kind, last.sink, last.batch, last.t, last.cycle,
                              (*last.notifications, n), last.text)
        else:
            out.append(Message(n.kind, n.sink or "slack", n.batch, n.t, n.cycle, (n,), n.text))
    return out


def pick(all_messages: list[Message]) -> list[tuple[str, Message]]:
    grouped = next(m for m in all_messages if m.kind == "firing" and len(m.notifications) > 1)
    capacity = next(m for m in all_messages if m.kind == "firing"
                    and m.incidents[0].diagnosis.code == "no_gpu_capacity")
    resolved = next(m for m in all_messages if m.kind == "resolved")
    return [
        ("A firing message: one endpoint, one diagnosis", capacity),
        ("Two diagnoses of one endpoint in one message", grouped),
        ("A resolved message (short, green bar)", resolved),
    ]


def document(chosen: list[tuple[str, Message]], scenario: str) -> str:
    lines = [
        "# Example Slack messages",
        "",
        "Rendered by `scripts/example_message.py` from a real `replay` of the built-in "
        f"`{scenario}` scenario (group_wait 0, as `runpod-monitor demo` runs it), exactly as "
        "the Slack sink posts them: `text` is the short fallback a phone's lock screen shows "
        "(one line of at most 160 characters: severity, what, where), `blocks` (or, for a "
        "resolved message, the green attachment's blocks) is what the Slack apps render, with "
        "the fix and each command once, ready to paste. Paste a body into Slack's Block Kit "
        "Builder to see it.",
        "",
        "Regenerate with `.venv/bin/python scripts/example_message.py`.",
        "",
    ]
    for title, message in chosen:
        d = message.incidents[0].diagnosis
        where = d.endpoint_name or d.endpoint_id or "the account"
        body = render(message)
        lines += [
            f"## {title}",
            "",
            f"`{message.kind}` for {where}, replay cycle {message.cycle}.",
            "",
            "Fallback text (`text`):",
            "",
            "```text",
            body["text"],
            "```",
            "",
            "Body posted to the webhook or `chat.postMessage`:",
            "",
            "```json",
            json.dumps(body, indent=2, ensure_ascii=False),
            "```",
            "",
        ]
    return "\n".join(lines)


async def build() -> str:
    scenario = demo_scenario()
    monitor = {**scenario.monitor, "alerts": {"group_wait_s": 0}}
    result = await replay(scenario.model_copy(update={"monitor": monitor}), env={})
    return document(pick(messages(result.alerts)), scenario.name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "example-slack-message.md")
    args = parser.parse_args(argv)
    import logging

    import structlog

    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    text = asyncio.run(build())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
