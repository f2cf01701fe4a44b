"""Jobs the user's app registers (`POST /api/v1/jobs`), polled via `/status` until terminal."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Protocol

from model.observation import TERMINAL_JOB_STATUSES, Job, TrackedJob
from monitor.runpod.client import RunPodClient
from monitor.runpod.models import Failure, Ok

# A job that RunPod no longer knows (404, `request does not exist`) was purged or expired.
GONE = "http_404"


class DataPlaneGate(Protocol):
    """Whether an endpoint's data plane may be called now (`monitor.probes.Prober`)."""

    def data_plane_due(self, endpoint_id: str, t: float) -> bool: ...

    def hold(self, endpoint_id: str, t: float, retry_after_s: float) -> None: ...


class TrackerFull(Exception):
    """The tracker holds `limit` jobs: a new one is refused (the ones tracked are kept)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} jobs tracked already")
        self.limit = limit


class JobTracker:
    """Keeps registered jobs until `/status` says they ended; bounded in count and age."""

    def __init__(self, max_jobs: int = 10_000, max_age_s: float = 86_400) -> None:
        self.max_jobs = max_jobs
        self.max_age_s = max_age_s
        self._jobs: OrderedDict[tuple[str, str], float] = OrderedDict()

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
        self._jobs[key] = now
        return True

    def tracked(self) -> list[tuple[str, str]]:
        return list(self._jobs)

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
            if isinstance(result, Failure) and result.retry_after_s is not None and gate:
                gate.hold(eid, now, result.retry_after_s)
            if isinstance(result, Ok):
                answered.append(TrackedJob(eid, result.value))
                if result.value.status in TERMINAL_JOB_STATUSES:
                    self._jobs.pop((eid, jid), None)
                    continue
            elif isinstance(result, Failure) and result.kind == GONE:
                answered.append(TrackedJob(eid, Job(jid, "CANCELLED")))
                self._jobs.pop((eid, jid), None)
                continue
            if now - self._jobs[(eid, jid)] > self.max_age_s:
                self._jobs.pop((eid, jid), None)
        return answered
