"""What the job rules remember of each endpoint beyond the window (part of `Memory`).

Recent execution times (job_overrun's p95) and cold starts (cold_start_regression's
baseline) outlive the rules' window and a restart: they are persisted with the memory.

A cold start is the delay of the first job to leave the queue after the endpoint sat at
zero workers: `/health` showed no worker and nothing in progress, then a job that was not
already finished then is seen IN_PROGRESS or finished with its `delayTime`. When several
leave the queue in that cycle, the longest delay is the cold start (the job that waited
for the whole boot). A wait during which throttled workers were seen is a capacity wait,
not a cold start, and is not recorded.

Where REST v2 `/workers` answered, a worker's start-to-ready is learned too: a worker seen
INITIALIZING (with its `startedAt`) and in the next `/workers` answer past it (IDLE or
RUNNING) was ready between those two answers; the midpoint, less `startedAt`, is its
start-to-ready (off by at most half the gap between the answers).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from model.observation import EndpointSample, Job, Observation, Worker

EXECUTIONS_KEPT = 50
COLD_STARTS_KEPT = 20
_STARTED = frozenset({"IN_PROGRESS", "COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"})
_READY = frozenset({"IDLE", "RUNNING"})


@dataclass(frozen=True, slots=True)
class ColdStart:
    """One cold start: when it was seen, its delay, and the release and image then."""

    t: float
    delay_ms: int
    version: int | None = None  # the endpoint's release (`endpointVersion`), when v2 said
    image: str | None = None


@dataclass(frozen=True, slots=True)
class EndpointJobs:
    """One endpoint's remembered job facts."""

    # (job id, executionTime ms) of the newest finished jobs, oldest first
    executions: tuple[tuple[str, int], ...] = ()
    cold_starts: tuple[ColdStart, ...] = ()  # oldest first
    # while the endpoint sits at zero workers: the ids of the jobs already started then
    # (their delays are not a cold start); None when it is not waiting for a scale-up
    at_zero: frozenset[str] | None = None
    throttled: bool = False  # throttled workers seen since it was at zero
    version: int | None = None  # the last release seen (v2 `/workers` or `/releases`)
    image: str | None = None  # the last image seen in its configuration
    # worker start-to-ready from v2 worker records, oldest first (delay_ms: start-to-ready)
    ready_starts: tuple[ColdStart, ...] = ()
    # (worker id, startedAt, when seen) of the workers the last `/workers` showed INITIALIZING
    booting: tuple[tuple[str, float, float], ...] = ()


_EMPTY = EndpointJobs()  # an endpoint with nothing remembered (not stored)


def _endpoint_jobs(s: EndpointSample, tracked: Iterable[Job]) -> list[Job]:
    return [*(s.jobs or ()), *tracked]


def _version(s: EndpointSample) -> int | None:
    if s.workers is not None and s.workers.endpoint_version is not None:
        return s.workers.endpoint_version
    if s.releases is not None:
        return s.releases.endpoint_version
    return None


def _image(s: EndpointSample) -> str | None:
    if s.config is not None and s.config.template is not None:
        return s.config.template.image_name or None
    return None


def _unchanged(e: EndpointJobs, s: EndpointSample, jobs: list[Job]) -> bool:
    """Whether the sample cannot change `e`: the common case of an idle endpoint, decided
    without building anything (a jobless sample moves only the zero-worker state)."""
    if jobs or s.workers is not None or s.releases is not None:
        return False
    image = _image(s)
    if image is not None and image != e.image:
        return False
    h = s.health
    if h is None:
        return True
    if e.at_zero is None:
        return not (h.workers_total == 0 and h.in_progress == 0)
    return e.throttled or h.throttled == 0


def _step(e: EndpointJobs, s: EndpointSample, jobs: list[Job], t: float) -> EndpointJobs:
    if _unchanged(e, s, jobs):
        return e
    version = _version(s) or e.version
    image = _image(s) or e.image
    executions = e.executions
    seen = {jid for jid, _ in executions}
    added = [
        (j.id, j.execution_ms) for j in jobs
        if j.status == "COMPLETED" and j.execution_ms is not None and j.id not in seen
    ]
    if added:
        unique = dict(added)
        executions = (*executions, *unique.items())[-EXECUTIONS_KEPT:]
    at_zero, throttled, cold = e.at_zero, e.throttled, e.cold_starts
    h = s.health
    if h is not None:
        if at_zero is not None:
            started = [j for j in jobs if j.status in _STARTED and j.id not in at_zero
                       and j.delay_ms is not None]
            throttled = throttled or h.throttled > 0
            if started:
                if not throttled:
                    delay = max(j.delay_ms or 0 for j in started)
                    cold = (*cold, ColdStart(t, delay, version, image))[-COLD_STARTS_KEPT:]
                at_zero, throttled = None, False
            elif h.workers_total == 0:
                done = {j.id for j in jobs if j.status != "IN_QUEUE"}
                if not done <= at_zero:
                    at_zero = at_zero | done
        elif h.workers_total == 0 and h.in_progress == 0:
            at_zero = frozenset(j.id for j in jobs if j.status != "IN_QUEUE")
            throttled = False
    ready, booting = e.ready_starts, e.booting
    if s.workers is not None:
        ready, booting = _ready(e, s.workers.workers, t, version, image)
    new = EndpointJobs(executions, cold, at_zero, throttled, version, image, ready, booting)
    return e if new == e else new


def _ready(
    e: EndpointJobs, workers: Iterable[Worker], t: float, version: int | None,
    image: str | None,
) -> tuple[tuple[ColdStart, ...], tuple[tuple[str, float, float], ...]]:
    before = {wid: (started, seen) for wid, started, seen in e.booting}
    ready = e.ready_starts
    booting: list[tuple[str, float, float]] = []
    for w in workers:
        if w.started_at is None:
            continue
        if w.status == "INITIALIZING":
            booting.append((w.id, w.started_at, t))
        elif w.status in _READY and w.id in before and before[w.id][0] == w.started_at:
            started, seen = before[w.id]
            ms = int(((seen + t) / 2 - started) * 1000)
            if ms >= 0:
                item = ColdStart(t, ms, version, w.image or image)
                ready = (*ready, item)[-COLD_STARTS_KEPT:]
    return ready, tuple(booting)


def jobs_updated(
    memory: Mapping[str, EndpointJobs], obs: Observation
) -> Mapping[str, EndpointJobs]:
    """The endpoints' job memory after one more observation (the same mapping when
    nothing changed)."""
    tracked: dict[str, list[Job]] = {}
    for tj in obs.tracked_jobs:
        tracked.setdefault(tj.endpoint_id, []).append(tj.job)
    out: dict[str, EndpointJobs] | None = None
    for eid, s in obs.endpoints.items():
        before = memory.get(eid)
        if (s.health is None and s.jobs is None and s.workers is None and eid not in tracked
                and before is not None):
            continue
        e = before if before is not None else _EMPTY
        after = _step(e, s, _endpoint_jobs(s, tracked.get(eid, ())), obs.t)
        if after is not e and (before is not None or after != _EMPTY):
            if out is None:
                out = dict(memory)
            out[eid] = after
    return memory if out is None else out


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-quantile (0..1) of `values`, nearest rank; None for none."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(len(ordered) * q))
    return ordered[min(rank, len(ordered)) - 1]


__all__ = [
    "COLD_STARTS_KEPT",
    "EXECUTIONS_KEPT",
    "ColdStart",
    "EndpointJobs",
    "jobs_updated",
    "percentile",
]
