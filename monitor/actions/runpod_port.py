"""`Port` over the RunPod client: the fresh reads (job status, /health, the v2 endpoint)
and the three writes, each one request through the client's bounded, scrubbed `_call`."""

from __future__ import annotations

from urllib.parse import quote

from monitor.actions.model import Call
from monitor.runpod.client import RunPodClient
from monitor.runpod.models import Failure, Ok, Result

DEFAULT_V2_URL = "https://api.runpod.io/v2"
PROBES = {"cancel": "cancel", "purge-queue": "purge-queue"}


class RunPodPort:
    """The guarded fixes' door to RunPod. `v2_url`: the REST v2 base (the PATCH and the
    endpoint read); the data plane is the client's `rest_url`."""

    def __init__(self, client: RunPodClient, v2_url: str = DEFAULT_V2_URL) -> None:
        self.client = client
        self.v2_url = v2_url.rstrip("/")

    async def job_status(self, endpoint_id: str, job_id: str) -> Result[str]:
        got = await self.client.status(endpoint_id, job_id)
        return got if isinstance(got, Failure) else Ok(got.value.status, got.status)

    async def queue_length(self, endpoint_id: str) -> Result[int]:
        got = await self.client.health(endpoint_id)
        return got if isinstance(got, Failure) else Ok(got.value.in_queue, got.status)

    async def endpoint_workers(self, endpoint_id: str) -> Result[tuple[int, int]]:
        """`GET /v2/serverless/{id}`: workers (min, max)."""
        url = f"{self.v2_url}/serverless/{quote(endpoint_id, safe='')}"
        out = await self.client._call("GET", url, "v2-endpoint", endpoint_id, None)
        if isinstance(out, Failure):
            return out
        body, status, _ = out
        workers = body.get("workers") if isinstance(body, dict) else None
        low = workers.get("min") if isinstance(workers, dict) else None
        high = workers.get("max") if isinstance(workers, dict) else None
        if not (isinstance(low, int) and isinstance(high, int)) or isinstance(low, bool) \
                or isinstance(high, bool):
            return Failure("malformed", status, message="no workers.min/max in the v2 endpoint")
        return Ok((low, high), status)

    async def execute(self, call: Call) -> Result[str]:
        """Make the proposal's call; a short text of what RunPod answered."""
        base = self.v2_url if call.api == "v2" else self.client._rest_url
        probe = "v2-update-endpoint" if call.api == "v2" else call.path.rsplit("/", 2)[-2]
        if call.path.endswith("/purge-queue"):
            probe = "purge-queue"
        endpoint_id = call.path.strip("/").split("/")[1 if call.api == "v2" else 0]
        body = None if call.body is None else dict(call.body)
        out = await self.client._call(call.method, base + call.path, probe, endpoint_id, body)
        if isinstance(out, Failure):
            return out
        answer, status, _ = out
        return Ok(_describe(answer), status)


def _describe(answer: object) -> str:
    """What the write answered, in a few words (never the whole endpoint body)."""
    if not isinstance(answer, dict):
        return "answered"
    if "removed" in answer:
        return f"removed {answer['removed']} queued jobs"
    if "status" in answer and "id" in answer:
        return f"job {answer['id']} {answer['status']}"
    workers = answer.get("workers")
    if isinstance(workers, dict):
        return f"workers min {workers.get('min')} max {workers.get('max')}"
    return "answered"
