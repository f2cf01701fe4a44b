"""The words a person reads: the short text of a notification (Slack's `text`, what a phone's
lock screen shows, replay's `text`) and its full plain-text form (the Slack retry when the
blocks are refused)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

from monitor.alerts.model import SEVERITY_RANK, Notification
from rules.diagnosis import Diagnosis
from rules.log_evidence import EVIDENCE_KEY as LOGS_KEY
from rules.log_evidence import excerpt
from rules.signals import minutes

TRUNCATED = "… (truncated)"
# Slack truncates a message's `text` past 4000 characters; cut it ourselves, visibly.
TEXT_LIMIT = 4000
# A phone's lock screen shows about four lines of a notification, some 40 characters each
# on a narrow phone, before it cuts: the short text says severity, what and where in that.
LOCK_SCREEN_LIMIT = 160


def truncate(text: str, limit: int, marker: str = TRUNCATED) -> str:
    """`text` cut to at most `limit` characters, ending with `marker` when cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(marker))].rstrip() + marker


CODE_STARTS = ("mutation {", "mutation{", "query {", "curl ", "{ ")


def code_split(line: str) -> tuple[str, str]:
    """(prose, code) of one remedy line: code starts at a mutation, a query or a curl, at
    the line's start or after ': ', and runs to the end of the line."""
    stripped = line.strip()
    for start in CODE_STARTS:
        if stripped.startswith(start):
            return "", stripped
        at = line.find(": " + start)
        if at >= 0:
            return line[: at + 1].strip(), line[at + 2:].strip()
    return line, ""


def shell_words(command: str) -> list[str]:
    """`command` split at the spaces a shell splits it at, each word kept as written
    (quotes included), so the words joined by spaces are the command again."""
    words: list[str] = []
    word: list[str] = []
    quote = ""
    escaped = False
    for ch in command:
        if escaped:
            escaped = False
        elif ch == "\\" and quote != "'":
            escaped = True
        elif quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch.isspace():
            if word:
                words.append("".join(word))
                word = []
            continue
        word.append(ch)
    if word:
        words.append("".join(word))
    return words


def shell_lines(command: str, width: int) -> list[str]:
    """`command` over lines of about `width` characters joined by ' \\' continuations,
    broken only before an option (`-H`, `-d`, ...) and never inside a quoted word, so it
    pastes as the same command; an option wider than `width` keeps a line to itself."""
    units: list[str] = []
    for word in shell_words(command):
        if units and not word.startswith("-"):
            units[-1] += " " + word  # an option's argument stays with it
        else:
            units.append(word)
    lines: list[str] = []
    for unit in units:
        if lines and len(lines[-1]) + 1 + len(unit) <= width:
            lines[-1] += " " + unit
        else:
            lines.append(unit)
    return [line + " \\" for line in lines[:-1]] + lines[-1:]


def shorten(text: str, limit: int) -> str:
    """`text` on one line, cut at a word to at most `limit` characters, ending in '…'."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space >= limit * 2 // 3:
        cut = cut[:space]
    return cut.rstrip(" ,;:") + "…"


def subject(d: Diagnosis) -> str:
    """'no_gpu_capacity on mocha-video (ep7throttle1)', or just the code for the account."""
    if d.endpoint_id is None:
        return f"{d.code} (account)"
    name = d.endpoint_name or d.endpoint_id
    return f"{d.code} on {name} ({d.endpoint_id})"


def place(d: Diagnosis) -> str:
    """'mocha-video (ep7throttle1)', or 'the account'."""
    if d.endpoint_id is None:
        return "the account"
    return f"{d.endpoint_name or d.endpoint_id} ({d.endpoint_id})"


def firing_text(d: Diagnosis) -> str:
    """One notification's text: severity, what, the sentence with the numbers, the fix."""
    return f"[{d.severity.upper()}] {subject(d)}: {d.summary}\nFix: {d.remedy}"


# A remedy line the guarded fixes add (monitor/actions): shown on a resolved alert too,
# since a purge is proposed when a crash loop ends.
PROPOSED_PREFIX = "proposed fix:"


def proposed_lines(d: Diagnosis) -> list[str]:
    """The guarded fixes proposed for `d` (lines of its remedy)."""
    return [line for line in d.remedy.splitlines() if line.startswith(PROPOSED_PREFIX)]


def resolved_text(d: Diagnosis, lasted_s: float, note: str | None = None) -> str:
    """The all-clear for an announced incident, with any fix proposed now it ended."""
    why = f" (now explained by {note})" if note else ""
    return "\n".join([f"[RESOLVED] {subject(d)} after {minutes(lasted_s)}{why}.",
                      *proposed_lines(d)])


def worst(diagnoses: Sequence[Diagnosis]) -> str:
    """The highest severity among `diagnoses`."""
    return max((d.severity for d in diagnoses), key=lambda s: SEVERITY_RANK.get(s, 0))


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())


def message_text(kind: str, notifications: Sequence[Notification], t: float) -> str:
    """The short text of one message (one batch, one endpoint): severity, what and where on
    one line of at most LOCK_SCREEN_LIMIT characters; the remedy is in the blocks."""
    if not notifications:
        return ""
    ds = [n.incident.diagnosis for n in notifications]
    if kind == "resolved":
        if len(notifications) == 1:
            n = notifications[0]
            return shorten(resolved_text(ds[0], _lasted(n, t), n.note), LOCK_SCREEN_LIMIT)
        ended = ", ".join(
            f"{d.code} after {minutes(_lasted(n, t))}"
            + (f" (now explained by {n.note})" if n.note else "")
            for n, d in zip(notifications, ds, strict=True)
        )
        return shorten(f"[RESOLVED] {len(ds)} problems on {place(ds[0])}: {ended}",
                       LOCK_SCREEN_LIMIT)
    prefix = "[REMINDER] " if kind == "reminder" else ""
    if len(ds) == 1:
        d = ds[0]
        still = (
            f" still active after {minutes(t - notifications[0].incident.since)}"
            if kind == "reminder" else ""
        )
        return shorten(f"{prefix}[{d.severity.upper()}] {subject(d)}{still}: {d.summary}",
                       LOCK_SCREEN_LIMIT)
    still = " still active" if kind == "reminder" else ""
    head = f"{prefix}[{worst(ds).upper()}] {len(ds)} problems on {place(ds[0])}{still}: "
    return shorten(head + _listed([d.code for d in ds], LOCK_SCREEN_LIMIT - len(head)),
                   LOCK_SCREEN_LIMIT)


def _listed(items: Sequence[str], room: int) -> str:
    """As many of `items` as fit in `room` characters, then '+N more'."""
    for shown in range(len(items), 0, -1):
        rest = len(items) - shown
        text = ", ".join(items[:shown]) + (f" +{rest} more" if rest else "")
        if len(text) <= room:
            return text
    return f"{len(items)} codes"


def plain_text(kind: str, notifications: Sequence[Notification], t: float) -> str:
    """The full plain text of one message, with each fix: what Slack shows when it refused
    the blocks."""
    if not notifications:
        return ""
    ds = [n.incident.diagnosis for n in notifications]
    if kind == "resolved":
        if len(notifications) == 1:
            n = notifications[0]
            text = resolved_text(ds[0], _lasted(n, t), n.note)
        else:
            lines = [f"[RESOLVED] {len(ds)} problems on {place(ds[0])}:"]
            for n, d in zip(notifications, ds, strict=True):
                why = f" (now explained by {n.note})" if n.note else ""
                lines.append(f"- {d.code} after {minutes(_lasted(n, t))}{why}")
            text = "\n".join(lines)
        return truncate(text, TEXT_LIMIT)
    prefix = "[REMINDER] " if kind == "reminder" else ""
    if len(ds) == 1:
        d = ds[0]
        still = (
            f" still active after {minutes(t - notifications[0].incident.since)}"
            if kind == "reminder" else ""
        )
        text = f"{prefix}[{d.severity.upper()}] {subject(d)}{still}: {d.summary}\nFix: {d.remedy}"
        return truncate(text, TEXT_LIMIT)
    still = " still active" if kind == "reminder" else ""
    lines = [f"{prefix}[{worst(ds).upper()}] {len(ds)} problems on {place(ds[0])}{still}:"]
    for d in ds:
        lines.append(f"- [{d.severity.upper()}] {d.code}: {d.summary}")
        lines.append(_indent(f"Fix: {d.remedy}", "  "))
    return truncate("\n".join(lines), TEXT_LIMIT)


def _lasted(n: Notification, t: float) -> float:
    end = n.incident.resolved_at if n.incident.resolved_at is not None else t
    return max(0.0, end - n.incident.since)


# The text block of one incident, read on the console (monitor/logs.py) and in
# `replay --format text` (monitor/commands/timeline.py).
WIDTH = 100


def _evidence(evidence: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in evidence.items() if k != LOGS_KEY)


def _wrap(label: str, text: str) -> list[str]:
    """`text` under `label`: prose wrapped at WIDTH; each command whole, on lines of its
    own joined by ' \\' (never cut inside a quoted word), so it pastes as it is."""
    lines: list[str] = []
    for para in text.splitlines() or [""]:
        prose, code = code_split(para)
        if prose:
            indent = " " * (len(prose) - len(prose.lstrip()))
            prefix = f"    {label:<6}" if not lines else " " * 10
            lines.extend(textwrap.wrap(prose.strip(), width=WIDTH, initial_indent=prefix + indent,
                                       subsequent_indent=" " * 10 + indent,
                                       break_on_hyphens=False)
                         or [prefix.rstrip()])
        if code:
            # inline ("4. Check: curl ..."): the command goes under its step
            lead = prose if prose else para
            indent = " " * (len(lead) - len(lead.lstrip())) + ("   " if prose else "")
            prefix = f"    {label:<6}" if not lines else " " * 10
            for i, piece in enumerate(shell_lines(code, WIDTH - 12)):
                lines.append((prefix if i == 0 else " " * 12) + indent + piece)
        if not prose and not code:
            lines.append(f"    {label:<6}".rstrip() if not lines else "")
    return lines


def incident_block(d: Diagnosis, head: str) -> list[str]:
    """One incident as a person reads it: `head`, then what, why, the worker's log lines
    when it has them, and the fix."""
    logs = excerpt(d.evidence, max_lines=5, max_chars=WIDTH - 12)
    return [
        head,
        *_wrap("what", d.summary),
        *_wrap("why", _evidence(dict(d.evidence))),
        *(_wrap("logs", "\n".join(logs)) if logs else []),
        *_wrap("fix", d.remedy),
    ]
