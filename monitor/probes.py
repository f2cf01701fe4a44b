"""One cycle's probing: GraphQL once, then REST per watched endpoint, into an Observation."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from monitor.runpod.client import RunPodClient
from monitor.runpod.models import Failure, Myself, Ok, Result
from monitor.sharding import owns
from rules.model import OK, EndpointConfig, EndpointSample, Health, Job, Observation


@dataclass(frozen=True, slots=True)
class ProbeCall:
    """One API call of a cycle, for the probe metrics and the cycle log line."""

    probe: str  # graphql, health, requests, status
    outcome: str  # "ok" or a failure kind
    status: int
    elapsed_s: float
    endpoint_id: str | None = None
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class ProbeReport:
    observation: Observation
    calls: list[ProbeCall] = field(default_factory=list)
    listed: tuple[EndpointConfig, ...] | None = None


def outcome_of(result: Result[object]) -> tuple[str, int]:
    """The outcome name and HTTP status of a client result."""
    if isinstance(result, Failure):
        return result.kind, result.status
    return OK, result.status


def select_endpoints(
    configured: Sequence[str],
    listed: Sequence[EndpointConfig] | None,
    previous: Sequence[str],
) -> list[str]:
    """The endpoint ids to watch this cycle.

    With no configured list, every endpoint GraphQL lists; with one, exactly those (names
    resolve to ids through the listing; ids are watched even when not listed, so a wrong id
    surfaces as `endpoint_not_found`). When GraphQL failed, the previous selection stands.
    """
    if listed is None:
        return list(previous)
    if not configured:
        return [e.id for e in listed]
    by_name: dict[str, list[str]] = {}
    ids = {e.id for e in listed}
    for e in listed:
        by_name.setdefault(e.name, []).append(e.id)
    chosen: list[str] = []
    for wanted in configured:
        matches = [wanted] if wanted in ids else by_name.get(wanted, [wanted])
        chosen.extend(m for m in matches if m not in chosen)
    return chosen


class Prober:
    """Turns RunPod's answers into observations; remembers the watched selection."""

    def __init__(
        self,
        client: RunPodClient,
        *,
        configured: Sequence[str] = (),
        track_requests: bool = True,
        shard: tuple[int, int] | None = None,
    ) -> None:
        self.client = client
        self.configured = list(configured)
        self.track_requests = track_requests
        self.shard = shard
        self.watched: list[str] = []

    async def probe(self, cycle: int, t: float) -> ProbeReport:
        """Probe RunPod once and return what was seen; never raises on RunPod's answers."""
        calls: list[ProbeCall] = []
        gql = await self.client.myself()
        outcome, status = outcome_of(gql)
        calls.append(ProbeCall("graphql", outcome, status, gql.elapsed_s,
                               retry_after_s=_retry_after(gql)))
        myself = gql.value if isinstance(gql, Ok) else None
        listed = myself.endpoints if myself is not None and myself.endpoints_listed else None
        self.watched = self._shard(select_endpoints(self.configured, listed, self.watched))
        configs = {e.id: e for e in listed} if listed is not None else {}
        samples = await asyncio.gather(
            *(self._probe_endpoint(eid, configs.get(eid), listed is not None, calls)
              for eid in self.watched)
        )
        obs = Observation(
            cycle=cycle,
            t=t,
            graphql_outcome=outcome,
            graphql_status=status,
            account=myself.account if myself is not None else None,
            listed_ids=frozenset(configs) if listed is not None else None,
            endpoints={s.endpoint_id: s for s in samples},
        )
        return ProbeReport(obs, calls, listed)

    def _shard(self, ids: list[str]) -> list[str]:
        if self.shard is None:
            return ids
        index, count = self.shard
        return [eid for eid in ids if owns(eid, index, count)]

    async def _probe_endpoint(
        self,
        endpoint_id: str,
        config: EndpointConfig | None,
        graphql_ok: bool,
        calls: list[ProbeCall],
    ) -> EndpointSample:
        health_call = self.client.health(endpoint_id)
        if self.track_requests:
            health, jobs_result = await asyncio.gather(
                health_call, self.client.requests(endpoint_id)
            )
        else:
            health, jobs_result = await health_call, None
        outcome, status = outcome_of(health)
        calls.append(ProbeCall("health", outcome, status, health.elapsed_s, endpoint_id,
                               _retry_after(health)))
        jobs: tuple[Job, ...] | None = None
        if jobs_result is not None:
            j_outcome, j_status = outcome_of(jobs_result)
            calls.append(ProbeCall("requests", j_outcome, j_status, jobs_result.elapsed_s,
                                   endpoint_id, _retry_after(jobs_result)))
            if isinstance(jobs_result, Ok):
                jobs = jobs_result.value
        value: Health | None = health.value if isinstance(health, Ok) else None
        return EndpointSample(
            endpoint_id=endpoint_id,
            health_outcome=outcome,
            http_status=status,
            health=value,
            jobs=jobs,
            listed=(config is not None) if graphql_ok else None,
            config=config,
        )


def _retry_after(result: Result[object]) -> float | None:
    return result.retry_after_s if isinstance(result, Failure) else None


__all__ = ["ProbeCall", "ProbeReport", "Prober", "Myself", "select_endpoints"]
