"""Jobs: the handler raises on a large share of the jobs it finishes (job_failures).

`/health` counts completed and failed jobs; the rise of those counters over the window
gives the failure share. The error texts come from the jobs `/requests` or `/status`
described: a person can tell bad client input from a broken worker by reading them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from itertools import pairwise

from model.history import History
from model.observation import Health
from rules.diagnosis import Diagnosis, evidence
from rules.remedies import rest_curl
from rules.rule import Finding, Rule
from rules.signals import minutes, plural
from rules.spend import cost_so_far
from rules.thresholds import Thresholds

MAX_ERRORS = 3
MAX_ERROR_CHARS = 200
_CLASS_RE = re.compile(r"^<class '(?:[\w.]+\.)?(\w+)'>$")


def diagnose(history: History, th: Thresholds) -> list[Diagnosis]:
    """job_failures for every watched endpoint."""
    found: list[Diagnosis] = []
    for eid in history.endpoints_with_health():
        for rule in RULES:
            finding = rule.check(history, th, eid, history.observations[-1].t)
            if finding is not None:
                found.append(rule.diagnosis(finding, eid, history.endpoint_name(eid)))
    return found


def counter_rise(samples: Sequence[tuple[float, Health]], field: str) -> int:
    """How much a job counter rose over the samples, ignoring drops (a counter reset)."""
    values = [getattr(h, field) for _, h in samples]
    return sum(max(0, b - a) for a, b in pairwise(values))


def error_text(raw: str, limit: int = MAX_ERROR_CHARS) -> str:
    """A job's `error` for a person: 'type: message' when the worker sent its JSON form."""
    text = raw.strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and parsed.get("error_message"):
        message = str(parsed["error_message"]).strip()
        kind = str(parsed.get("error_type") or "").strip()
        match = _CLASS_RE.match(kind)
        if match:
            kind = match.group(1)
        text = f"{kind}: {message}" if kind else message
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def recent_errors(
    history: History, eid: str, since: float, limit: int = MAX_ERRORS
) -> list[tuple[str, str]]:
    """(job id, error text) of the newest FAILED jobs seen since `since`, distinct texts."""
    found: list[tuple[str, str]] = []
    seen_jobs: set[str] = set()
    seen_texts: set[str] = set()
    for o, s in reversed(history.endpoint_samples(eid)):
        if o.t < since:
            break
        for job in s.jobs or ():
            if job.status != "FAILED" or not job.error or job.id in seen_jobs:
                continue
            seen_jobs.add(job.id)
            text = error_text(job.error)
            if text in seen_texts:
                continue
            seen_texts.add(text)
            found.append((job.id, text))
            if len(found) >= limit:
                return found
    return found


def _known_since(history: History, eid: str, since: float) -> list[tuple[float, Health]]:
    """The endpoint's known (t, health) with t >= since, oldest first.

    With time-ordered observations (as the buffer keeps them) those are the newest ones:
    walk back from the newest and stop at the first older one.
    """
    series = history.known_health(eid)
    if not history.time_ordered:
        return [(t, h) for t, h in series if t >= since]
    window: list[tuple[float, Health]] = []
    for t, h in reversed(series):
        if t < since:
            break
        window.append((t, h))
    window.reverse()
    return window


def _failed_rise_since(history: History, eid: str, since: float) -> int:
    """`counter_rise` of `failed` over the known samples since `since` (time-ordered
    history), walking back from the newest without building the window."""
    if history.memory.failed_quiet_since(eid, since):
        return 0  # nearly every endpoint: the memory saw no rise since then
    rise = 0
    newer: Health | None = None
    for t, h in reversed(history.known_health(eid)):
        if t < since:
            break
        if newer is not None and newer.failed > h.failed:
            rise += newer.failed - h.failed
        newer = h
    return rise


def surge_start(history: History, eid: str, window_s: float, now: float) -> float | None:
    """When the failures began: the earliest failed rise of the run of rises, walking back
    from `now`, in which no two rises are more than `window_s` apart (a surge that lasts
    hours began hours ago, though the rule's window sees its last minutes)."""
    start: float | None = None
    newer: tuple[float, Health] | None = None
    last_rise = now
    for t, h in reversed(history.known_health(eid)):
        if t > now:
            continue
        if newer is not None and newer[1].failed > h.failed:
            if last_rise - newer[0] > window_s:
                break
            start = t
            last_rise = t
        elif last_rise - t > window_s:
            break
        newer = (t, h)
    return start


def _job_failures(history: History, th: Thresholds, eid: str, now: float) -> Finding | None:
    since = now - th.job_failures_window_s
    if history.time_ordered and _failed_rise_since(history, eid, since) < th.job_failures_min:
        return None  # nearly every endpoint: decided without building its window
    window = _known_since(history, eid, since)
    if len(window) < 2:
        return None
    failed = counter_rise(window, "failed")
    if failed < th.job_failures_min:
        return None
    completed = counter_rise(window, "completed")
    share = failed / (failed + completed)
    if share < th.job_failures_ratio:
        return None
    name = history.endpoint_name(eid)
    errors = recent_errors(history, eid, since)
    span = minutes(window[-1][0] - window[0][0])
    summary = (
        f"{name} failed {failed} of the {plural(failed + completed, 'job')} it finished in "
        f"the last {span} ({share:.0%}, threshold {th.job_failures_ratio:.0%}): the handler "
        f"is raising."
    )
    began = surge_start(history, eid, th.job_failures_window_s, now)
    cost = None if began is None else cost_so_far(history, eid, began, window[-1][0])
    if cost is not None:
        summary += cost.sentence()
    steps = [f"The handler is raising on {share:.0%} of the jobs it finishes."]
    if errors:
        steps.append("Recent errors of failed jobs:")
        steps += [f"- {job_id}: {text}" for job_id, text in errors]
        steps.append(
            "If they name the input (a missing field, a bad URL, a validation error), fix "
            "the client's requests; if they are the same for any input (an import error, "
            "CUDA or out of memory, a missing file), the worker is broken: check the image or "
            "template change that came before the failures, read the worker logs, roll back."
        )
        status = rest_curl(eid, f"status/{errors[0][0]}", "GET")
        steps.append(f"Full error and traceback of one job: {status}")
    else:
        steps.append(
            "No error text was seen for the failed jobs (/requests and /status gave none): "
            "read the worker logs (RunPod console > Serverless > "
            f"{name} > Logs), tell bad client input from a broken worker, and check recent "
            "image or template changes. Fetch a failed job with: "
            f"{rest_curl(eid, 'status/JOB_ID', 'GET')}"
        )
    ev = evidence(
        failed_rise=failed,
        completed_rise=completed,
        failure_share=round(share, 3),
        window_s=window[-1][0] - window[0][0],
        failed_total=window[-1][1].failed,
        completed_total=window[-1][1].completed,
        surge_since_s=None if began is None else window[-1][0] - began,
        **(cost.evidence() if cost is not None else {}),
    )
    for i, (job_id, text) in enumerate(errors, start=1):
        ev[f"error_{i}"] = text
        ev[f"error_{i}_job"] = job_id
    return Finding(
        severity="warning",
        summary=summary,
        remedy="\n".join(steps),
        evidence=ev,
    )


# --- the records ---------------------------------------------------------------------

# (history, thresholds, endpoint id, the latest observation's time) -> diagnosis
EndpointCheck = Callable[[History, Thresholds, str, float], Finding | None]

RULES: tuple[Rule[EndpointCheck], ...] = (
    Rule(
        code="job_failures", scope="endpoint", severity="warning", source="health",
        family="jobs", check=_job_failures,
        thresholds=("job_failures_window_s", "job_failures_min", "job_failures_ratio"),
        raised_when="within 10 min failed rose by ≥ 3 and is ≥ half of the finished jobs; "
        "quotes up to three job errors",
    ),
)
