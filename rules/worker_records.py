"""Restarts, ghosts and the declared start-up budget, read from REST v2 worker records.

A worker record is one `GET /v2/serverless/{id}/workers` answer (`History.worker_records`).
v2 reports no restart count or exit code (spec/runpod-rest-v2.md 2.3), so a restart is
read from two records in a row: a worker id that disappears while a new one appears (it
was replaced), or the same id whose `startedAt` moved later or whose `uptimeSeconds`
went down (it started again). A stale worker replaced by a new one is a rollout doing its
job, not a restart; a THROTTLED one never started, so it cannot restart.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from model.observation import EndpointConfig, Health, Worker, Workers

# Workers that exist on a machine (or are getting one): what /health counts as present.
ALIVE = frozenset({"RUNNING", "IDLE", "INITIALIZING"})
SERVING = frozenset({"RUNNING", "IDLE"})
INIT_TIMEOUT_ENV = "RUNPOD_INIT_TIMEOUT"
# A declared budget above a day is taken as a day: a typo must not silence crash_loop forever.
MAX_INIT_TIMEOUT_S = 86400.0
# startedAt moving later by less than this is clock noise between two answers, not a start
STARTED_AT_SLACK_S = 5.0
# a worker gone without a successor yet is taken as replaced by a new id this soon after;
# later, a new worker is a scale-up, not a restart
REPLACED_WITHIN_S = 300.0

Records = Sequence[tuple[float, Workers]]


@dataclass(frozen=True, slots=True)
class Restart:
    """One restart seen between two records: the worker that died and how long it lived."""

    t: float  # the record that showed it
    worker_id: str  # the id it had
    how: Literal["replaced", "restarted"]  # a new id took its place / the same id again
    lived_s: float | None  # the longest it was seen alive (since startedAt, or its uptime)


@dataclass(frozen=True, slots=True)
class Ghost:
    """A worker RunPod counts but that never gets going: INITIALIZING in every record of
    a run, or counted by /health while the records do not list it."""

    worker_id: str | None  # None: a worker /health counts that the records do not list
    status: Literal["INITIALIZING", "absent"]
    since: float  # the first record of the run
    seconds: float  # from that record to the newest one
    count: int = 1


def _lived(t: float, w: Worker) -> float | None:
    known: list[float] = []
    if w.uptime_s is not None:
        known.append(float(w.uptime_s))
    if w.started_at is not None:
        known.append(max(0.0, t - w.started_at))
    return max(known) if known else None


def _started_again(before: Worker, after: Worker) -> bool:
    if before.started_at is not None and after.started_at is not None:
        return after.started_at > before.started_at + STARTED_AT_SLACK_S
    if before.uptime_s is not None and after.uptime_s is not None:
        return after.uptime_s < before.uptime_s
    return False


@dataclass(frozen=True, slots=True)
class RestartTrack:
    """What restart detection carries from one record to the next: the last record, and
    the workers gone from it not yet replaced (when they went, their restart if replaced)."""

    last: tuple[float, Workers] | None = None
    pending: tuple[tuple[float, Restart], ...] = ()


def restart_step(
    track: RestartTrack, record: tuple[float, Workers],
    replaced_within_s: float = REPLACED_WITHIN_S,
) -> tuple[list[Restart], RestartTrack]:
    """The restarts `record` shows after the records `track` followed, and the track to
    carry on with: `restarts` one record at a time (the metrics count each restart once)."""
    if track.last is None:
        return [], RestartTrack(record)
    (t0, a), (t1, b) = track.last, record
    out: list[Restart] = []
    before = {w.id: w for w in a.workers}
    after = {w.id: w for w in b.workers}
    for wid, w0 in before.items():
        w1 = after.get(wid)
        if w1 is not None and _started_again(w0, w1):
            out.append(Restart(t1, wid, "restarted", _lived(t0, w0)))
    pending = [(t, r) for t, r in track.pending if t1 - t <= replaced_within_s]
    pending += [(t0, Restart(t1, w.id, "replaced", _lived(t0, w)))
                for wid, w in before.items()
                if wid not in after and not w.stale and w.status != "THROTTLED"]
    new = sum(1 for wid, w in after.items() if wid not in before and w.status != "THROTTLED")
    for _, r in pending[:new]:
        out.append(Restart(t1, r.worker_id, "replaced", r.lived_s))
    return out, RestartTrack(record, tuple(pending[new:]))


def restarts(records: Records, replaced_within_s: float = REPLACED_WITHIN_S) -> list[Restart]:
    """Every restart the records show, oldest first. A worker gone from one record is
    replaced by a new id in the same or a later record within `replaced_within_s` (RunPod
    may show no worker for a poll or two in between); the same id restarted shows between
    two records in a row."""
    out: list[Restart] = []
    track = RestartTrack()
    for record in records:
        found, track = restart_step(track, record, replaced_within_s)
        out += found
    return out


def initializing_ghosts(records: Records) -> list[Ghost]:
    """Workers of the newest record that have been INITIALIZING, without starting again,
    in every record back to the first of their run."""
    if not records:
        return []
    t_last, latest = records[-1]
    found: list[Ghost] = []
    for w in latest.workers:
        if w.status != "INITIALIZING":
            continue
        since = t_last
        for t, rec in reversed(records[:-1]):
            same = next((x for x in rec.workers if x.id == w.id), None)
            if same is None or same.status != "INITIALIZING" or _started_again(same, w):
                break
            since = t
        found.append(Ghost(w.id, "INITIALIZING", since, t_last - since))
    return found


def health_present(h: Health) -> int:
    """The workers /health counts on a machine: running, idle (ready duplicates it) and
    initializing."""
    return h.running + max(h.idle, h.ready) + h.initializing


def listed_alive(w: Workers) -> int:
    """The workers a record lists as running, idle or initializing."""
    return sum(1 for x in w.workers if x.status in ALIVE)


def absent_ghost(records: Records, health_at: Mapping[float, Health]) -> Ghost | None:
    """Workers /health counts in every record of the newest run that the record does not
    list (absent, or gone from the list): the fewest such in the run, and how long."""
    run: list[tuple[float, int]] = []
    for t, rec in reversed(records):
        h = health_at.get(t)
        if h is None:
            continue  # /health unknown at that record: neither counts nor breaks the run
        extra = health_present(h) - listed_alive(rec)
        if extra <= 0:
            break
        run.append((t, extra))
    if not run:
        return None
    since, last = run[-1][0], run[0][0]
    return Ghost(None, "absent", since, last - since, count=min(n for _, n in run))


def declared_init_timeout_s(config: EndpointConfig | None) -> float | None:
    """The start-up budget the endpoint declares in RUNPOD_INIT_TIMEOUT (seconds), when it
    is a positive number; junk is ignored and more than a day counts as a day."""
    if config is None or config.template is None:
        return None
    for e in config.template.env:
        if e.key != INIT_TIMEOUT_ENV:
            continue
        try:
            value = float(e.value.strip())
        except ValueError:
            return None
        if not math.isfinite(value) or value <= 0:
            return None
        return min(value, MAX_INIT_TIMEOUT_S)
    return None


def stale_workers(w: Workers) -> list[Worker]:
    """The workers of a record that serve (running or idle) an older release (`isStale`)."""
    return [x for x in w.workers if x.stale and x.status in SERVING]


def ids(workers: Iterable[Worker | Restart]) -> list[str]:
    """Their worker ids, in order, without repeats."""
    seen: dict[str, None] = {}
    for x in workers:
        seen.setdefault(x.id if isinstance(x, Worker) else x.worker_id, None)
    return list(seen)
