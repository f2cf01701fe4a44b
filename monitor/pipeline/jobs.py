"""Jobs the user's app registers (`POST /api/v1/jobs`), polled via `/status` until terminal."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterable
from typing import Protocol

from model.observation import TERMINAL_JOB_STATUSES, Job, TrackedJob
from monitor.runpod.client import RUNPOD_LIMITS, RunPodClient
from monitor.runpod.models import Failure, Ok

# A job that RunPod no longer knows (404, `request does not exist`) was purged or expired.
GONE = "http_404"

# Completions sampled from `/requests` (each read once through `/status`, for empty_output):
# per endpoint per cycle, and per cycle in all. Far inside RunPod's `/status` limit of
# 2000 per 10 s and 400 at once per endpoint (RUNPOD_LIMITS): a 30 s cycle sends at most
# SAMPLE_PER_ENDPOINT of them per endpoint, plus the registered jobs, which the sample
# never pushes past the concurrency limit.
SAMPLE_PER_ENDPOINT = 2
SAMPLE_PER_CYCLE = 100
SAMPLED_REMEMBERED = 20_000


class DataPlaneGate(Protocol):
    """Whether an endpoint's data plane may be called now (`monitor.pipeline.probes.Prober`)."""

    def data_plane_due(self, endpoint_id: str, t: float) -> bool: ...

    def hold(self, endpoint_id: str, t: float, retry_after_s: float) -> None: ...


class TrackerFull(Exception):
    """The tracker holds `limit` jobs: a new one is refused (the ones tracked are kept)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} jobs tracked already")
        self.limit = limit


class JobTracker:
    """Keeps registered jobs until `/status` says they ended; bounded in count and age."""

    def __init__(
        self,
        max_jobs: int = 10_000,
        max_age_s: float = 86_400,
        *,
        sample_per_endpoint: int = SAMPLE_PER_ENDPOINT,
        sample_per_cycle: int = SAMPLE_PER_CYCLE,
    ) -> None:
        self.max_jobs = max_jobs
        self.max_age_s = max_age_s
        self.sample_per_endpoint = sample_per_endpoint
        self.sample_per_cycle = sample_per_cycle
        self._jobs: OrderedDict[tuple[str, str], float] = OrderedDict()
        # sampled completions waiting for their one /status read, and every one offered
        # (bounded), so that a job /requests keeps listing is read once
        self._sampled: set[tuple[str, str]] = set()
        self._offered: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._per_endpoint: dict[str, int] = {}
        self._cycle_t: float | None = None
        self._cycle_sampled = 0

    def sample_completed(self, endpoint_id: str, jobs: Iterable[Job], now: float) -> int:
        """Queue COMPLETED jobs that `/requests` listed (it shows no output) for one `/status`
        read in the next poll: at most `sample_per_endpoint` per endpoint and
        `sample_per_cycle` in all per cycle, each job once; returns how many were queued."""
        if self._cycle_t != now:
            self._cycle_t, self._cycle_sampled = now, 0
        room = min(
            self.sample_per_endpoint,
            self.sample_per_cycle - self._cycle_sampled,
            RUNPOD_LIMITS["status"].concurrent - self._per_endpoint.get(endpoint_id, 0),
            self.max_jobs - len(self._jobs),
        )
        queued = 0
        for job in jobs:
            if queued >= room:
                break
            key = (endpoint_id, job.id)
            if job.status != "COMPLETED" or key in self._offered or key in self._jobs:
                continue
            self._offer(key)
            self._add(key, now)
            self._sampled.add(key)
            queued += 1
        self._cycle_sampled += queued
        return queued

    def _offer(self, key: tuple[str, str]) -> None:
        self._offered[key] = None
        self._offered.move_to_end(key)
        if len(self._offered) > SAMPLED_REMEMBERED:
            self._offered.popitem(last=False)

    def _add(self, key: tuple[str, str], now: float) -> None:
        self._jobs[key] = now
        self._per_endpoint[key[0]] = self._per_endpoint.get(key[0], 0) + 1

    def _drop(self, key: tuple[str, str]) -> None:
        self._offer(key)  # read through /status already: not a sample later
        if self._jobs.pop(key, None) is not None:
            left = self._per_endpoint.get(key[0], 1) - 1
            if left > 0:
                self._per_endpoint[key[0]] = left
            else:
                self._per_endpoint.pop(key[0], None)
        self._sampled.discard(key)

    def __len__(self) -> int:
        return len(self._jobs)

    def register(self, endpoint_id: str, job_id: str, now: float) -> bool:
        """Track a job; False when it was tracked already; TrackerFull at `max_jobs` (refused
        rather than dropping the oldest, which anyone posting could otherwise push out)."""
        key = (endpoint_id, job_id)
        if key in self._jobs:
            return False
        if len(self._jobs) >= self.max_jobs:
            raise TrackerFull(self.max_jobs)
        self._add(key, now)
        return True

    def tracked(self) -> list[tuple[str, str]]:
        return [k for k in self._jobs if k not in self._sampled]

    async def poll(
        self, client: RunPodClient, now: float, gate: DataPlaneGate | None = None
    ) -> list[TrackedJob]:
        """Ask `/status` for every tracked job; return its answers and forget the jobs
        that ended (a job RunPod no longer knows comes back CANCELLED).

        With a `gate`, the jobs of an endpoint whose data plane is closed (back-off or
        Retry-After) wait, and a Retry-After from `/status` closes it."""
        keys = [k for k in self._jobs if gate is None or gate.data_plane_due(k[0], now)]
        results = await asyncio.gather(*(client.status(eid, jid) for eid, jid in keys))
        answered: list[TrackedJob] = []
        for (eid, jid), result in zip(keys, results, strict=True):
            key = (eid, jid)
            if isinstance(result, Failure) and result.retry_after_s is not None and gate:
                gate.hold(eid, now, result.retry_after_s)
            if isinstance(result, Ok):
                answered.append(TrackedJob(eid, result.value))
                if result.value.status in TERMINAL_JOB_STATUSES:
                    self._drop(key)
                    continue
            elif isinstance(result, Failure) and result.kind == GONE:
                if key not in self._sampled:
                    answered.append(TrackedJob(eid, Job(jid, "CANCELLED")))
                self._drop(key)
                continue
            if key in self._sampled or now - self._jobs[key] > self.max_age_s:
                self._drop(key)  # a sample gets one read, answered or not
        return answered
