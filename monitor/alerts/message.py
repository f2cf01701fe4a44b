"""The words a person reads: the plain-text form of a notification (Slack's fallback, what
phones show, and replay's `text`)."""

from __future__ import annotations

from collections.abc import Sequence

from monitor.alerts.model import SEVERITY_RANK, Notification
from rules.diagnosis import Diagnosis
from rules.signals import minutes

TRUNCATED = "… (truncated)"
# Slack truncates a message's `text` past 4000 characters; cut it ourselves, visibly.
TEXT_LIMIT = 4000


def truncate(text: str, limit: int, marker: str = TRUNCATED) -> str:
    """`text` cut to at most `limit` characters, ending with `marker` when cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(marker))].rstrip() + marker


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


def resolved_text(d: Diagnosis, lasted_s: float, note: str | None = None) -> str:
    """The all-clear for an announced incident."""
    why = f" (now explained by {note})" if note else ""
    return f"[RESOLVED] {subject(d)} after {minutes(lasted_s)}{why}."


def worst(diagnoses: Sequence[Diagnosis]) -> str:
    """The highest severity among `diagnoses`."""
    return max((d.severity for d in diagnoses), key=lambda s: SEVERITY_RANK.get(s, 0))


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())


def message_text(kind: str, notifications: Sequence[Notification], t: float) -> str:
    """The plain text of one message: the notifications of one batch (one endpoint)."""
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
