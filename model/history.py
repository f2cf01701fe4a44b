"""The rules' window of observations and the memory that outlives it.

A read-only view over `Observation`s (kept by the history buffer, persisted by the store);
the rules read it, nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import overload

from model.job_memory import EndpointJobs, jobs_updated
from model.observation import (
    Account,
    EndpointConfig,
    EndpointSample,
    Health,
    Observation,
    Releases,
    WorkerLogs,
    Workers,
)


@dataclass(frozen=True, slots=True)
class Memory:
    """Facts that outlive the rules' window (kept and persisted with the history)."""

    ever_ok: frozenset[str] = frozenset()  # endpoints seen answering /health with 200
    balance_seen_nonpositive: bool = False
    longest_cold_start_ms: Mapping[str, int] = field(default_factory=dict)
    names: Mapping[str, str] = field(default_factory=dict)  # last known endpoint names
    # when each endpoint's REST v2 `/workers` last answered: lets the rules skip the walk
    # back over a window that holds no worker record (GraphQL-only mode costs nothing)
    workers_seen_t: Mapping[str, float] = field(default_factory=dict)
    # recent execution times and cold starts per endpoint (model/job_memory.py)
    jobs: Mapping[str, EndpointJobs] = field(default_factory=dict)
    # each endpoint's newest known `/health` `failed` count, and a time after which it has
    # not risen (the sample of the last rise, or the first one this memory saw, as rises
    # before it are unknown): lets job_failures skip the walk over a window with no rise.
    # A shortcut, not a fact: not compared, not stored (an endpoint it lacks is walked)
    failed_last: Mapping[str, int] = field(default_factory=dict, compare=False)
    failed_rose_t: Mapping[str, float] = field(default_factory=dict, compare=False)

    def updated(self, obs: Observation) -> Memory:
        """The memory after one more observation."""
        ever_ok = set(self.ever_ok)
        cold = dict(self.longest_cold_start_ms)
        names = dict(self.names)
        seen: dict[str, float] | None = None
        last, rose = self.failed_last, self.failed_rose_t
        last_new: dict[str, int] | None = None
        rose_new: dict[str, float] | None = None
        for eid, s in obs.endpoints.items():
            if s.health is not None:
                if s.http_status == 200:
                    ever_ok.add(eid)
                failed = s.health.failed
                before = last.get(eid)
                if before != failed:  # copied on the first change only, as most stay put
                    if last_new is None:
                        last_new = dict(last)
                    last_new[eid] = failed
                    if before is None or failed > before:
                        if rose_new is None:
                            rose_new = dict(rose)
                        # never lowered: a clock that steps back keeps the bound
                        rose_new[eid] = max(obs.t, rose.get(eid, obs.t))
            if s.config is not None and s.config.name:
                names[eid] = s.config.name
            for job in s.jobs or ():
                if job.status == "COMPLETED" and job.delay_ms is not None:
                    cold[eid] = max(cold.get(eid, 0), job.delay_ms)
            if s.workers is not None:
                if seen is None:
                    seen = dict(self.workers_seen_t)
                seen[eid] = obs.t
        nonpositive = self.balance_seen_nonpositive or (
            obs.account is not None and obs.account.balance <= 0
        )
        return Memory(
            frozenset(ever_ok), nonpositive, cold, names,
            workers_seen_t=self.workers_seen_t if seen is None else seen,
            jobs=jobs_updated(self.jobs, obs),
            failed_last=last if last_new is None else last_new,
            failed_rose_t=rose if rose_new is None else rose_new,
        )

    def failed_quiet_since(self, endpoint_id: str, since: float) -> bool:
        """True when the endpoint's known `failed` count has not risen between any two
        consecutive known samples the newer of which is at or after `since`."""
        rose = self.failed_rose_t.get(endpoint_id)
        return rose is not None and rose < since


class KnownHealth(Sequence[tuple[float, Health]]):
    """One endpoint's (t, health) where `/health` answered with data, oldest first.

    A view of a history's observations, read lazily: reversed() walks back from the newest
    observation only as far as the caller reads, and `[-k]` and truth testing look at the
    newest k samples; len(), forward iteration and other indexing read them all (once).
    """

    __slots__ = ("_all", "_endpoint_id", "_newest", "_observations")

    def __init__(self, observations: Sequence[Observation], endpoint_id: str) -> None:
        self._observations = observations
        self._endpoint_id = endpoint_id
        self._all: list[tuple[float, Health]] | None = None
        # the newest sample when the latest observation has it (the endpoints the rules
        # look at): `[-1]` and truth testing, read by every rule, then cost no walk
        self._newest: tuple[float, Health] | None = None
        if observations:
            latest = observations[-1]
            s = latest.endpoints.get(endpoint_id)
            if s is not None and s.health is not None:
                self._newest = (latest.t, s.health)

    def __reversed__(self) -> Iterator[tuple[float, Health]]:
        if self._all is not None:
            yield from reversed(self._all)
            return
        eid = self._endpoint_id
        for o in reversed(self._observations):
            s = o.endpoints.get(eid)
            if s is not None and s.health is not None:
                yield o.t, s.health

    def _everything(self) -> list[tuple[float, Health]]:
        if self._all is None:
            eid = self._endpoint_id
            found = []
            for o in self._observations:
                s = o.endpoints.get(eid)
                if s is not None and s.health is not None:
                    found.append((o.t, s.health))
            self._all = found
        return self._all

    def __iter__(self) -> Iterator[tuple[float, Health]]:
        return iter(self._everything())

    def __len__(self) -> int:
        return len(self._everything())

    def __bool__(self) -> bool:
        return self._newest is not None or next(reversed(self), None) is not None

    @overload
    def __getitem__(self, index: int) -> tuple[float, Health]: ...
    @overload
    def __getitem__(self, index: slice) -> list[tuple[float, Health]]: ...

    def __getitem__(
        self, index: int | slice
    ) -> tuple[float, Health] | list[tuple[float, Health]]:
        if index == -1 and self._newest is not None:
            return self._newest
        if isinstance(index, int) and index < 0 and self._all is None:
            for k, item in enumerate(reversed(self), start=1):
                if k == -index:
                    return item
            raise IndexError("known health index out of range")
        return self._everything()[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, KnownHealth | list):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"KnownHealth({list(self)!r})"


@dataclass(frozen=True, slots=True)
class History:
    """The observations in the rules' window, oldest first, and the long-lived memory."""

    observations: Sequence[Observation]
    memory: Memory = field(default_factory=Memory)
    # worker-log snapshots the active incidents keep, by endpoint (oldest first): they
    # outlive the window and a restart (the store's `incident_logs`)
    kept_logs: Mapping[str, tuple[WorkerLogs, ...]] = field(default_factory=dict)
    # time_ordered, computed once per snapshot
    _cache: list[bool] = field(default_factory=list, init=False, repr=False, compare=False)
    # known_health and latest_config per endpoint, found once per snapshot for all the
    # families that read them (three or more per endpoint and cycle)
    _known: dict[str, KnownHealth] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _configs: dict[str, EndpointConfig | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def latest(self) -> Observation | None:
        return self.observations[-1] if self.observations else None

    def endpoint_samples(self, endpoint_id: str) -> list[tuple[Observation, EndpointSample]]:
        """(observation, sample) pairs for one endpoint, oldest first, unknown ones included."""
        return [
            (o, o.endpoints[endpoint_id]) for o in self.observations if endpoint_id in o.endpoints
        ]

    def known_health(self, endpoint_id: str) -> KnownHealth:
        """(t, health) for the samples where `/health` answered with data, oldest first.

        A lazy view: the rules mostly read the newest end (a trailing run), and reversed()
        walks back only as far as they read, so a healthy endpoint costs O(1) whatever the
        history's length.
        """
        known = self._known.get(endpoint_id)
        if known is None:
            known = self._known[endpoint_id] = KnownHealth(self.observations, endpoint_id)
        return known

    @property
    def time_ordered(self) -> bool:
        """True when the observations' times never decrease (as the buffer keeps them)."""
        if not self._cache:
            obs = self.observations
            self._cache.append(all(obs[i - 1].t <= obs[i].t for i in range(1, len(obs))))
        return self._cache[0]

    def endpoints_with_health(self) -> list[str]:
        """The watched endpoints whose latest `/health` answered with data. The health rules
        look only at these: for the others the data is unknown now, and the tracker holds."""
        latest = self.latest
        if latest is None:
            return []
        return [eid for eid, s in latest.endpoints.items() if s.health is not None]

    def endpoint_name(self, endpoint_id: str) -> str:
        """The endpoint's latest known name, or its id."""
        for o in reversed(self.observations):
            s = o.endpoints.get(endpoint_id)
            if s is not None and s.config is not None and s.config.name:
                return s.config.name
        return self.memory.names.get(endpoint_id, endpoint_id)

    def latest_config(self, endpoint_id: str) -> EndpointConfig | None:
        """The endpoint's most recent GraphQL configuration in the window."""
        if endpoint_id in self._configs:
            return self._configs[endpoint_id]
        found = None
        for o in reversed(self.observations):
            s = o.endpoints.get(endpoint_id)
            if s is not None and s.config is not None:
                found = s.config
                break
        self._configs[endpoint_id] = found
        return found

    def latest_account(self) -> Account | None:
        """The most recent account data in the window."""
        for o in reversed(self.observations):
            if o.account is not None:
                return o.account
        return None

    def has_worker_records(self, endpoint_id: str) -> bool:
        """True when a REST v2 `/workers` answer for the endpoint is in the window (read
        from the memory, without walking the observations)."""
        t = self.memory.workers_seen_t.get(endpoint_id)
        return t is not None and bool(self.observations) and t >= self.observations[0].t

    def worker_records(self, endpoint_id: str) -> list[tuple[float, Workers]]:
        """(t, workers) for the samples where REST v2 answered `/workers`, oldest first. A
        sample that did not ask (workers None) is no record; an empty answer is one (no
        active worker)."""
        if not self.has_worker_records(endpoint_id):
            return []
        return [
            (o.t, s.workers)
            for o in self.observations
            if (s := o.endpoints.get(endpoint_id)) is not None and s.workers is not None
        ]

    def latest_workers(self, endpoint_id: str) -> tuple[float, Workers] | None:
        """The newest `/workers` answer for the endpoint in the window, and when it came."""
        if not self.has_worker_records(endpoint_id):
            return None
        for o in reversed(self.observations):
            s = o.endpoints.get(endpoint_id)
            if s is not None and s.workers is not None:
                return o.t, s.workers
        return None

    def latest_releases(self, endpoint_id: str) -> tuple[float, Releases] | None:
        """The newest `/releases` answer for the endpoint in the window, and when it came."""
        for o in reversed(self.observations):
            s = o.endpoints.get(endpoint_id)
            if s is not None and s.releases is not None:
                return o.t, s.releases
        return None
