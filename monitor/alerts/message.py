"""The words a person reads: the plain-text form of a notification (Slack's fallback)."""

from __future__ import annotations

from rules.model import Diagnosis
from rules.signals import minutes


def subject(d: Diagnosis) -> str:
    """'no_gpu_capacity on mocha-video (ep7throttle1)', or just the code for the account."""
    if d.endpoint_id is None:
        return f"{d.code} (account)"
    name = d.endpoint_name or d.endpoint_id
    return f"{d.code} on {name} ({d.endpoint_id})"


def firing_text(d: Diagnosis) -> str:
    """One notification's text: severity, what, the sentence with the numbers, the fix."""
    return f"[{d.severity.upper()}] {subject(d)}: {d.summary}\nFix: {d.remedy}"


def resolved_text(d: Diagnosis, lasted_s: float) -> str:
    """The all-clear for an announced incident."""
    return f"[RESOLVED] {subject(d)} after {minutes(lasted_s)}."
