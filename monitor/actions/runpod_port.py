"""`Port` over the RunPod client: the fresh reads (job status, /health, the v2 endpoint)
and the three writes (`cancel_job`, `purge_queue`, `patch_endpoint`), each one request
through the client's limiters (RUNPOD_LIMITS: cancel 100 and purge-queue 2 per 10 s per
endpoint) and its scrubbed, classified failures."""

from __future__ import annotations

from monitor.actions.model import Proposal
from monitor.runpod.client import RunPodClient
from monitor.runpod.models import Failure, Ok, Result


class RunPodPort:
    """The guarded fixes' door to RunPod."""

    def __init__(self, client: RunPodClient) -> None:
        self.client = client

    async def job_status(self, endpoint_id: str, job_id: str) -> Result[str]:
        """`GET /{id}/status/{job}`: the job's status (a purged job is `http_404`)."""
        got = await self.client.status(endpoint_id, job_id)
        return got if isinstance(got, Failure) else Ok(got.value.status, got.status)

    async def queue_length(self, endpoint_id: str) -> Result[int]:
        """`GET /{id}/health`: jobs.inQueue."""
        got = await self.client.health(endpoint_id)
        return got if isinstance(got, Failure) else Ok(got.value.in_queue, got.status)

    async def endpoint_workers(self, endpoint_id: str) -> Result[tuple[int, int]]:
        """`GET /v2/serverless/{id}`: workers (min, max)."""
        got = await self.client.get_endpoint(endpoint_id)
        if isinstance(got, Failure):
            return got
        return Ok((got.value.workers_min, got.value.workers_max), got.status)

    async def execute(self, p: Proposal) -> Result[str]:
        """Make the proposal's call; a short text of what RunPod answered."""
        if p.kind == "cancel_overrun":
            job = await self.client.cancel_job(p.endpoint_id, p.job_id or "")
            if isinstance(job, Failure):
                return job
            return Ok(f"job {job.value.id} {job.value.status}", job.status)
        if p.kind == "purge_after_crash_loop":
            removed = await self.client.purge_queue(p.endpoint_id)
            if isinstance(removed, Failure):
                return removed
            return Ok(f"removed {removed.value} queued jobs", removed.status)
        body = dict(p.call.body or {})
        config = await self.client.patch_endpoint(p.endpoint_id, body)
        if isinstance(config, Failure):
            return config
        c = config.value
        return Ok(f"workers min {c.workers_min} max {c.workers_max}", config.status)
