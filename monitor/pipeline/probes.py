"""One cycle's probing: GraphQL once, then REST per watched endpoint, then `/status` of the
tracked jobs, into an Observation."""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import structlog

from model.observation import (
    OK,
    RETIRED,
    SKIPPED,
    TERMINAL_JOB_STATUSES,
    EndpointConfig,
    EndpointSample,
    Health,
    Job,
    Observation,
    TrackedJob,
)
from monitor.backoff import capped_backoff
from monitor.pipeline.control import NO_HINTS, Call, ControlPlane, EndpointV2, Hints
from monitor.pipeline.jobs import JobTracker
from monitor.pipeline.sharding import owns
from monitor.runpod.client import RunPodClient
from monitor.runpod.models import Failure, Myself, Ok, Result

log = structlog.get_logger("monitor.pipeline.probes")

# Back-off (docs/reliability.md): after k consecutive transient failures of a target (GraphQL,
# or one endpoint's /health), it is not probed again for min(interval * 2**(k-1), 5 min)
# times a jitter in [0.5, 1), rounded to the nearest cycle. Transient: no answer at all
# (timeout, connection error), a 5xx, or a 429 without Retry-After. A 429 with
# Retry-After blocks the target until then, exactly (no rounding).
BACKOFF_CAP_S = 300.0
BACKOFF_OUTCOMES = frozenset({"timeout", "connect", "http_5xx"})


class ProbeCall(NamedTuple):
    """One API call of a cycle, for the probe metrics and the cycle log line.

    A named tuple, not a frozen dataclass: one per request, 0.9 us to make against 2.3."""

    probe: str  # graphql, health, requests, status, v2_<kind> (monitor.pipeline.control)
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
    # control-plane calls held back this cycle (RunPod unreachable), also in `skipped`
    held_back: int = 0


def outcome_of(result: Result[object]) -> tuple[str, int]:
    """The outcome name and HTTP status of a client result."""
    if isinstance(result, Failure):
        return result.kind, result.status
    return OK, result.status


def backoff_jitter(key: str, failures: int, t: float) -> float:
    """A jitter factor in [0.5, 1), a pure function of its inputs.

    Deterministic so replay and the soak test repeat exactly; different per target and per
    cycle time, so monitors started at different times do not retry in step.
    """
    digest = hashlib.blake2b(f"{key}|{failures}|{t!r}".encode(), digest_size=8).digest()
    return 0.5 + 0.5 * int.from_bytes(digest, "big") / 2**64


def backoff_s(interval_s: float, failures: int) -> float:
    """The un-jittered pause after `failures` consecutive transient failures (0 for none)."""
    return capped_backoff(interval_s, BACKOFF_CAP_S, failures)


@dataclass(slots=True)
class Gate:
    """When one target (GraphQL, or an endpoint's data plane) may be called again.

    Times are the cycle times `t` passed to `Prober.probe` (simulated in replay), never the
    wall clock, so replay stays deterministic.
    """

    failures: int = 0  # consecutive transient failures
    backoff_until: float = -math.inf  # from the exponential back-off (rounded to a cycle)
    retry_until: float = -math.inf  # from Retry-After (strict)

    def due(self, t: float, interval_s: float | None) -> bool:
        """May the target be called in the cycle at `t`?"""
        if t < self.retry_until:
            return False
        return interval_s is None or t >= self.backoff_until - interval_s / 2

    def record(
        self,
        key: str,
        t: float,
        interval_s: float | None,
        outcome: str,
        retry_after_s: float | None,
    ) -> None:
        """Take the outcome of a call made in the cycle at `t`."""
        if retry_after_s is not None:
            self.retry_until = max(self.retry_until, t + retry_after_s)
        if outcome in BACKOFF_OUTCOMES or (outcome == "http_429" and retry_after_s is None):
            self.failures += 1
            if interval_s is not None:  # unknown before the second cycle: no pause yet
                pause = backoff_s(interval_s, self.failures)
                self.backoff_until = t + pause * backoff_jitter(key, self.failures, t)
        elif retry_after_s is None:
            self.failures = 0
            self.backoff_until = -math.inf


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
        interval_s: float | None = None,
        jobs: JobTracker | None = None,
        control: ControlPlane | None = None,
    ) -> None:
        self.client = client
        # the REST v2 control plane (runpod.control_plane auto | rest); None: GraphQL
        self.control = control if control is not None and control.mode != "graphql" else None
        self.remedy_api = "graphql" if control is None else control.remedy_api
        # the jobs the user's app registered, polled through `/status` behind the same gates
        self.jobs = jobs if jobs is not None else JobTracker()
        self.configured = list(configured)
        self.track_requests = track_requests
        self.shard = shard
        self.watched: list[str] = []
        # the probe interval the back-off counts in; None: the gap between the last two
        # cycles' `t` (replay does not say its interval)
        self.interval_s = interval_s
        self.gates: dict[str | None, Gate] = {}  # None: GraphQL; else an endpoint id
        self.skipped: dict[str, int] = {}  # probes not sent because of a gate, by target
        self._last_t: float | None = None
        self._gap_s: float | None = None
        # the last cycle's samples and listing, whose unchanged parts the next one shares
        self._previous: dict[str, EndpointSample] = {}
        self._listed_ids: frozenset[str] | None = None
        self._configs_of: tuple[tuple[EndpointConfig, ...], dict[str, EndpointConfig]] | None = None
        self._graphql_retired = False

    def _interval(self, t: float) -> float | None:
        if self._last_t is not None and t > self._last_t:
            self._gap_s = t - self._last_t
        self._last_t = t
        return self._interval_now

    @property
    def _interval_now(self) -> float | None:
        return self.interval_s if self.interval_s is not None else self._gap_s

    def data_plane_due(self, endpoint_id: str, t: float) -> bool:
        """May the endpoint's data plane be called at `t`: no back-off, no Retry-After?"""
        gate = self.gates.get(endpoint_id)
        return gate is None or gate.due(t, self._interval_now)

    def hold(self, endpoint_id: str, t: float, retry_after_s: float) -> None:
        """Close the endpoint's data plane until `t + retry_after_s` (a Retry-After seen by
        another caller, such as the job poller)."""
        gate = self._gate(endpoint_id)
        gate.retry_until = max(gate.retry_until, t + retry_after_s)

    def _gate(self, key: str | None) -> Gate:
        gate = self.gates.get(key)
        if gate is None:
            gate = self.gates[key] = Gate()
        return gate

    def _skip(self, target: str, gate: Gate, t: float) -> None:
        self.skipped[target] = self.skipped.get(target, 0) + 1
        log.debug("probe skipped", target=target,
                  reason="retry_after" if t < gate.retry_until else "backoff",
                  failures=gate.failures, retry_at=_finite(gate.retry_until),
                  backoff_until=_finite(gate.backoff_until), t=t)

    async def probe(self, cycle: int, t: float, hints: Hints = NO_HINTS) -> ProbeReport:
        """Probe RunPod once and return what was seen; never raises on RunPod's answers.

        A target that is backing off or waiting out a Retry-After is not called: its outcome
        is `SKIPPED` (status 0), unknown to the rules and not a failure: nothing was sent.
        `hints`: what the pipeline's last cycle knew (active diagnoses, logs wanted), which
        the REST v2 plan spends its budget on.
        """
        if self.control is not None:
            return await self._probe_v2(self.control, cycle, t, hints)
        calls: list[ProbeCall] = []
        interval = self._interval(t)
        gate = self._gate(None)
        myself: Myself | None = None
        graphql_state = None
        if gate.due(t, interval):
            gql = await self.client.myself()
            outcome, status = outcome_of(gql)
            retry = _retry_after(gql)
            calls.append(ProbeCall("graphql", outcome, status, gql.elapsed_s,
                                   retry_after_s=retry))
            gate.record("graphql", t, interval, outcome, retry)
            myself = gql.value if isinstance(gql, Ok) else None
            graphql_state = self._retired(gql)
        else:
            outcome, status = SKIPPED, 0
            self._skip("graphql", gate, t)
            graphql_state = RETIRED if self._graphql_retired else None
        listed = myself.endpoints if myself is not None and myself.endpoints_listed else None
        self.watched = self._shard(select_endpoints(self.configured, listed, self.watched))
        configs = self._configs(listed)
        samples = await asyncio.gather(
            *(self._probe_endpoint(eid, configs.get(eid), listed is not None, calls, t,
                                   interval)
              for eid in self.watched)
        )
        tracked = await self._after_endpoints(t, samples)
        shared = [self._share(s) for s in samples]
        self._previous = {s.endpoint_id: s for s in shared}
        obs = Observation(
            cycle=cycle,
            t=t,
            control_outcome=outcome,
            control_status=status,
            account=myself.account if myself is not None else None,
            listed_ids=self._listed_now(configs if listed is not None else None),
            endpoints={s.endpoint_id: s for s in shared},
            tracked_jobs=tuple(tracked),
            control_plane="graphql",
            sources=_GRAPHQL_SOURCES if myself is not None else {},
            graphql_state=graphql_state,
        )
        return ProbeReport(obs, calls, listed)

    async def _probe_v2(
        self, control: ControlPlane, cycle: int, t: float, hints: Hints
    ) -> ProbeReport:
        """One cycle on REST v2: the data plane as ever, then the v2 calls the plan picks."""
        calls: list[ProbeCall] = []
        v2calls: list[Call] = []
        interval = self._interval(t)
        await control.list_first(t, interval, hints, v2calls)
        # auto's one-field GraphQL query goes behind GraphQL's gate, as `myself` does: a
        # GraphQL that fails backs off (or waits out its Retry-After) while v2 carries on
        gate = self._gate(None)
        if gate.due(t, interval):
            asked = len(v2calls)
            await control.graphql_spend(v2calls)
            for c in v2calls[asked:]:
                gate.record("graphql", t, interval, outcome_of(c.result)[0],
                            _retry_after(c.result))
        else:
            self._skip("graphql", gate, t)
            control.graphql_spend_unknown()
        kept = control.listing
        self.watched = self._shard(select_endpoints(self.configured, kept, self.watched))
        # the data plane's samples carry the listing kept so far: when the cycle ends with
        # the same one (most cycles), only the endpoints v2 told more of are made again
        kept_configs = self._configs(kept)
        samples = await asyncio.gather(
            *(self._probe_endpoint(eid, kept_configs.get(eid), kept is not None, calls, t,
                                   interval)
              for eid in self.watched)
        )
        got = await control.after_data_plane(t, interval, samples, self._previous, hints,
                                             v2calls)
        listing = control.listing_now(v2calls)
        calls.extend(_probe_call(c) for c in v2calls)
        endpoints = listing.endpoints
        configs = self._configs(endpoints)
        if endpoints is not kept:
            filled = [self._with_v2(s, got.get(s.endpoint_id), endpoints is not None,
                                    configs) for s in samples]
        elif got:
            filled = [self._with_v2(s, v2, True, configs)
                      if (v2 := got.get(s.endpoint_id)) is not None else s for s in samples]
        else:
            filled = samples
        tracked = await self._after_endpoints(t, filled)
        shared = [self._share(s) for s in filled]
        self._previous = {s.endpoint_id: s for s in shared}
        facts = control.account_facts(t, filled)
        sources = dict(facts.sources)
        if endpoints is not None:
            sources["endpoints"] = listing.source
        obs = Observation(
            cycle=cycle,
            t=t,
            control_outcome=listing.outcome,
            control_status=listing.status,
            account=facts.account,
            listed_ids=self._listed_now(configs if endpoints is not None else None),
            endpoints={s.endpoint_id: s for s in shared},
            tracked_jobs=tuple(tracked),
            control_plane=control.remedy_api,
            sources=sources,
            graphql_state=control.graphql_state,
            endpoint_spend=facts.endpoint_spend,
            gpu_stock=facts.gpu_stock,
        )
        for probe, n in control.held_back.items():  # counted as a gate's skips are
            self.skipped[probe] = self.skipped.get(probe, 0) + n
        return ProbeReport(obs, calls, endpoints, sum(control.held_back.values()))

    def _configs(
        self, listing: tuple[EndpointConfig, ...] | None
    ) -> Mapping[str, EndpointConfig]:
        """A listing by endpoint id (the last one's dict while the listing is the same)."""
        if listing is None:
            return {}
        if self._configs_of is None or self._configs_of[0] is not listing:
            self._configs_of = (listing, {e.id: e for e in listing})
        return self._configs_of[1]

    @staticmethod
    def _with_v2(
        s: EndpointSample, v2: EndpointV2 | None, listed: bool,
        configs: Mapping[str, EndpointConfig],
    ) -> EndpointSample:
        """A data-plane sample with this cycle's listing and v2 answers for its endpoint."""
        eid = s.endpoint_id
        v2 = v2 or _NO_V2
        # the constructor, not dataclasses.replace: 3 us against 6, per endpoint
        return EndpointSample(
            endpoint_id=eid, health_outcome=s.health_outcome, http_status=s.http_status,
            health=s.health, jobs=s.jobs, listed=(eid in configs) if listed else None,
            config=configs.get(eid), workers=v2.workers, releases=v2.releases, logs=v2.logs,
        )

    async def _after_endpoints(
        self, t: float, samples: Sequence[EndpointSample]
    ) -> list[TrackedJob]:
        """Forget the gates of endpoints no longer watched; poll the tracked jobs (and a few
        completions `/requests` listed, for one `/status` read each)."""
        watched = set(self.watched)
        for eid in [k for k in self.gates if k is not None and k not in watched]:
            del self.gates[eid]  # an endpoint no longer watched starts afresh
        for s in samples:
            self.jobs.sample_completed(s.endpoint_id, s.jobs or (), t)
        # after /health, so that a Retry-After it met this cycle holds /status back too
        return await self.jobs.poll(self.client, t, self) if len(self.jobs) else []

    def _listed_now(self, configs: Mapping[str, EndpointConfig] | None) -> frozenset[str] | None:
        """The listed ids, the last cycle's object when unchanged (the history shares it)."""
        if configs is None:
            return None
        listed_ids = frozenset(configs)
        if listed_ids == self._listed_ids:
            return self._listed_ids
        self._listed_ids = listed_ids
        return listed_ids

    def _retired(self, result: Result[object]) -> str | None:
        """GraphQL mode: "retired" while GraphQL answers that it is gone (logged once)."""
        retired = isinstance(result, Failure) and result.kind == RETIRED
        if retired and not self._graphql_retired:
            log.warning("graphql_retired", status=result.status, control_plane="graphql",
                        effect="control-plane facts unknown: set runpod.control_plane: auto")
        self._graphql_retired = retired
        return RETIRED if retired else None

    def _share(self, sample: EndpointSample) -> EndpointSample:
        """`sample`, with the parts equal to the last cycle's (or all of it) taken from there.

        The history keeps every observation of its window (hours of cycles): an endpoint
        whose state did not change then costs no new objects in it, only a dict entry.
        """
        prev = self._previous.get(sample.endpoint_id)
        if prev is None or prev is sample:
            return sample
        # `is` first: the client and the listing hand the last object when nothing changed
        health, jobs, config = sample.health, sample.jobs, sample.config
        if health is not prev.health and health == prev.health:
            health = prev.health
        if jobs is not prev.jobs:
            jobs = prev.jobs if jobs == prev.jobs else _share_jobs(jobs, prev.jobs)
        if config is not prev.config and config == prev.config:
            config = prev.config
        if sample.workers is not None or sample.releases is not None or sample.logs is not None:
            # this cycle's v2 answers: kept as they are (the next cycle asks again or not)
            return replace(sample, health=health, jobs=jobs, config=config)
        if _unchanged(prev, health, jobs, config, sample.health_outcome, sample.http_status,
                      sample.listed):
            return prev
        if health is sample.health and jobs is sample.jobs and config is sample.config:
            return sample
        return replace(sample, health=health, jobs=jobs, config=config)

    def _shard(self, ids: list[str]) -> list[str]:
        if self.shard is None:
            return ids
        index, count = self.shard
        return [eid for eid in ids if owns(eid, index, count)]

    async def _probe_endpoint(
        self,
        endpoint_id: str,
        config: EndpointConfig | None,
        control_ok: bool,
        calls: list[ProbeCall],
        t: float,
        interval: float | None,
    ) -> EndpointSample:
        listed = (config is not None) if control_ok else None
        gate = self._gate(endpoint_id)
        if not gate.due(t, interval):
            self._skip(endpoint_id, gate, t)
            return EndpointSample(
                endpoint_id=endpoint_id,
                health_outcome=SKIPPED,
                http_status=0,
                health=None,
                jobs=None,
                listed=listed,
                config=config,
            )
        health = await self.client.health(endpoint_id)
        jobs_result: Result[tuple[Job, ...]] | None = None
        jobs: tuple[Job, ...] | None = None
        if self.track_requests and isinstance(health, Ok):
            if _jobs_may_have_moved(health.value, self._previous.get(endpoint_id)):
                jobs_result = await self.client.requests(endpoint_id)
            else:
                jobs = ()  # /health: nothing in flight and nothing finished since last time
        outcome, status = outcome_of(health)
        calls.append(ProbeCall("health", outcome, status, health.elapsed_s, endpoint_id,
                               _retry_after(health)))
        gate.record(endpoint_id, t, interval, outcome, _retry_after(health))
        if jobs_result is not None:
            j_outcome, j_status = outcome_of(jobs_result)
            j_retry = _retry_after(jobs_result)
            calls.append(ProbeCall("requests", j_outcome, j_status, jobs_result.elapsed_s,
                                   endpoint_id, j_retry))
            if isinstance(jobs_result, Ok):
                jobs = jobs_result.value
            elif j_retry is not None:
                # Retry-After covers the endpoint's whole data plane; /requests failures
                # otherwise do not drive the back-off, which follows /health
                gate.retry_until = max(gate.retry_until, t + j_retry)
        value: Health | None = health.value if isinstance(health, Ok) else None
        # the client hands the last object for the same bytes: what `_share` would make of
        # an unchanged sample, without making it first
        prev = self._previous.get(endpoint_id)
        if prev is not None and _unchanged(prev, value, jobs, config, outcome, status, listed):
            return prev
        return EndpointSample(
            endpoint_id=endpoint_id,
            health_outcome=outcome,
            http_status=status,
            health=value,
            jobs=jobs,
            listed=listed,
            config=config,
        )


def _unchanged(
    prev: EndpointSample, health: Health | None, jobs: tuple[Job, ...] | None,
    config: EndpointConfig | None, outcome: str, status: int, listed: bool | None,
) -> bool:
    """Whether a data-plane sample made of these parts is `prev` (the same objects, and no
    v2 answer in `prev`: last cycle's worker records are not this cycle's)."""
    return (
        health is prev.health
        and jobs is prev.jobs
        and config is prev.config
        and outcome == prev.health_outcome
        and status == prev.http_status
        and listed == prev.listed
        and prev.workers is None and prev.releases is None and prev.logs is None
    )


def _jobs_may_have_moved(health: Health, previous: EndpointSample | None) -> bool:
    """Whether `/requests` can tell more than "no job": a job is queued or running, a job
    counter moved since the last cycle, or that cycle's list held an unfinished job.

    Most endpoints of a large account sit idle at zero workers: for them /health alone
    says there is no job to list, and the second request per endpoint is not sent.
    """
    if health.in_queue or health.in_progress:
        return True
    if previous is None or previous.health is None or previous.jobs is None:
        return True
    before = previous.health
    if (health.completed, health.failed, health.retried) != (
        before.completed, before.failed, before.retried
    ):
        return True
    return any(j.status not in TERMINAL_JOB_STATUSES for j in previous.jobs)


def _share_jobs(
    jobs: tuple[Job, ...] | None, previous: tuple[Job, ...] | None
) -> tuple[Job, ...] | None:
    """`jobs`, each one that equals the last cycle's job of the same id taken from there."""
    if not jobs or not previous:
        return jobs
    before = {j.id: j for j in previous}
    return tuple(p if (p := before.get(j.id)) is not None and p == j else j for j in jobs)


# In GraphQL mode `myself` fed every control-plane fact
_GRAPHQL_SOURCES: Mapping[str, str] = {
    k: "graphql" for k in ("endpoints", "balance", "spend_per_hr", "spend_limit", "volumes",
                           "pods")
}


_NO_V2 = EndpointV2()


def _probe_call(c: Call) -> ProbeCall:
    outcome, status = outcome_of(c.result)
    return ProbeCall(c.probe, outcome, status, c.result.elapsed_s, c.endpoint_id,
                     _retry_after(c.result))


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _retry_after(result: Result[object]) -> float | None:
    return result.retry_after_s if isinstance(result, Failure) else None


__all__ = [
    "BACKOFF_CAP_S",
    "BACKOFF_OUTCOMES",
    "Gate",
    "Myself",
    "ProbeCall",
    "ProbeReport",
    "Prober",
    "backoff_jitter",
    "backoff_s",
    "select_endpoints",
]
