"""The data the rules read (observations, history) and the diagnoses they produce.

Everything here is immutable and free of I/O: the probes build observations, the rules
turn a history of them into diagnoses, and the incident tracker diffs those over time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

from pydantic import BaseModel, ConfigDict, Field

Severity = Literal["critical", "warning", "info"]
Scope = Literal["endpoint", "account"]

SEVERITY_ORDER: Mapping[str, int] = {"info": 0, "warning": 1, "critical": 2}

OK = "ok"
# Classified probe failures; `OK` when the call returned usable data.
FAILURE_KINDS = (
    "timeout",
    "connect",
    "http_401",
    "http_403",
    "http_404",
    "http_429",
    "http_4xx",
    "http_5xx",
    "malformed",
    "graphql_error",
)
# A probe the back-off or a Retry-After held back: never sent, so neither an answer nor a
# failure (not in FAILURE_KINDS; the rules neither count it nor resolve anything from it).
SKIPPED = "skipped"
# Outcomes that tell nothing about RunPod's state: the sample is unknown.
UNKNOWN_OUTCOMES = frozenset(
    {"timeout", "connect", "http_429", "http_4xx", "http_5xx", "malformed", "graphql_error",
     SKIPPED}
)
AUTH_OUTCOMES = frozenset({"http_401", "http_403"})

WORKER_STATES = ("idle", "initializing", "ready", "running", "throttled", "unhealthy")
JOB_COUNT_STATES = ("completed", "failed", "in_progress", "in_queue", "retried")
TERMINAL_JOB_STATUSES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})


@dataclass(frozen=True, slots=True)
class Health:
    """One `/health` answer; keys RunPod left out count as 0."""

    completed: int = 0
    failed: int = 0
    in_progress: int = 0
    in_queue: int = 0
    retried: int = 0
    idle: int = 0
    initializing: int = 0
    ready: int = 0
    running: int = 0
    throttled: int = 0
    unhealthy: int = 0

    @property
    def workers_total(self) -> int:
        """Every worker in any state (ready duplicates idle in RunPod's answers)."""
        return (
            self.idle + self.initializing + self.ready + self.running
            + self.throttled + self.unhealthy
        )

    @property
    def workers_present(self) -> int:
        """Workers that exist and could start a handler: running, ready, idle, initializing."""
        return self.running + self.ready + self.idle + self.initializing


@dataclass(frozen=True, slots=True)
class Job:
    """A job as `/requests` or `/status` describes it; times in milliseconds."""

    id: str
    status: str
    delay_ms: int | None = None
    execution_ms: int | None = None
    worker_id: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class EnvVar:
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class Template:
    id: str
    name: str = ""
    image_name: str = ""
    docker_args: str = ""
    container_disk_gb: int | None = None
    env: tuple[EnvVar, ...] = ()


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    """An endpoint as GraphQL `myself.endpoints` lists it."""

    id: str
    name: str = ""
    gpu_ids: str = ""
    network_volume_id: str | None = None
    workers_min: int = 0
    workers_max: int = 0
    workers_standby: int | None = None
    idle_timeout: int | None = None
    scaler_type: str | None = None
    scaler_value: int | None = None
    locations: str | None = None
    template: Template | None = None

    @property
    def gpu_tiers(self) -> tuple[str, ...]:
        """The pool ids of `gpuIds`, without negations (`-<gpu type>`) or blanks."""
        parts = (p.strip() for p in self.gpu_ids.split(","))
        return tuple(p for p in parts if p and not p.startswith("-"))


@dataclass(frozen=True, slots=True)
class NetworkVolume:
    id: str
    name: str = ""
    size_gb: float = 0.0
    datacenter: str | None = None


@dataclass(frozen=True, slots=True)
class Pod:
    id: str
    name: str = ""
    desired_status: str = ""
    cost_per_hr: float = 0.0


@dataclass(frozen=True, slots=True)
class Account:
    """The `myself` scalars and the account's volumes and pods."""

    balance: float
    spend_per_hr: float
    spend_limit: float | None = None
    network_volumes: tuple[NetworkVolume, ...] = ()
    pods: tuple[Pod, ...] = ()

    @property
    def pods_running(self) -> int:
        return sum(1 for p in self.pods if p.desired_status == "RUNNING")


@dataclass(frozen=True, slots=True)
class EndpointSample:
    """What one cycle saw of one watched endpoint.

    `health` is None when the `/health` probe gave no usable data (see `health_outcome`);
    `jobs` is None when `/requests` was not asked or failed, and () without asking when
    `/health` showed no job in flight and no job counter moved since the last cycle.
    `config` is this cycle's GraphQL item, None when GraphQL failed or does not list the
    endpoint (`listed`).
    """

    endpoint_id: str
    health_outcome: str
    http_status: int = 0
    health: Health | None = None
    jobs: tuple[Job, ...] | None = None
    listed: bool | None = None
    config: EndpointConfig | None = None

    @property
    def health_known(self) -> bool:
        """True when the data plane answered with data or a meaningful 404."""
        return self.health is not None or self.health_outcome == "http_404"


@dataclass(frozen=True, slots=True)
class Observation:
    """Everything one probe cycle saw. Unknown is None, never zero."""

    cycle: int
    t: float
    graphql_outcome: str
    graphql_status: int = 0
    account: Account | None = None
    # ids GraphQL listed this cycle; None when GraphQL failed
    listed_ids: frozenset[str] | None = None
    endpoints: Mapping[str, EndpointSample] = field(default_factory=dict)

    @property
    def graphql_ok(self) -> bool:
        return self.graphql_outcome == OK


@dataclass(frozen=True, slots=True)
class Memory:
    """Facts that outlive the rules' window (kept and persisted with the history)."""

    ever_ok: frozenset[str] = frozenset()  # endpoints seen answering /health with 200
    balance_seen_nonpositive: bool = False
    longest_cold_start_ms: Mapping[str, int] = field(default_factory=dict)
    names: Mapping[str, str] = field(default_factory=dict)  # last known endpoint names

    def updated(self, obs: Observation) -> Memory:
        """The memory after one more observation."""
        ever_ok = set(self.ever_ok)
        cold = dict(self.longest_cold_start_ms)
        names = dict(self.names)
        for eid, s in obs.endpoints.items():
            if s.health is not None and s.http_status == 200:
                ever_ok.add(eid)
            if s.config is not None and s.config.name:
                names[eid] = s.config.name
            for job in s.jobs or ():
                if job.status == "COMPLETED" and job.delay_ms is not None:
                    cold[eid] = max(cold.get(eid, 0), job.delay_ms)
        nonpositive = self.balance_seen_nonpositive or (
            obs.account is not None and obs.account.balance <= 0
        )
        return Memory(frozenset(ever_ok), nonpositive, cold, names)


class KnownHealth(Sequence[tuple[float, Health]]):
    """One endpoint's (t, health) where `/health` answered with data, oldest first.

    A view of a history's observations, read lazily: reversed() walks back from the newest
    observation only as far as the caller reads, and `[-k]` and truth testing look at the
    newest k samples; len(), forward iteration and other indexing read them all (once).
    """

    __slots__ = ("_all", "_endpoint_id", "_observations")

    def __init__(self, observations: Sequence[Observation], endpoint_id: str) -> None:
        self._observations = observations
        self._endpoint_id = endpoint_id
        self._all: list[tuple[float, Health]] | None = None

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
        return next(reversed(self), None) is not None

    @overload
    def __getitem__(self, index: int) -> tuple[float, Health]: ...
    @overload
    def __getitem__(self, index: slice) -> list[tuple[float, Health]]: ...

    def __getitem__(
        self, index: int | slice
    ) -> tuple[float, Health] | list[tuple[float, Health]]:
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
    # time_ordered, computed once per snapshot
    _cache: list[bool] = field(default_factory=list, init=False, repr=False, compare=False)

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
        return KnownHealth(self.observations, endpoint_id)

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
        for o in reversed(self.observations):
            s = o.endpoints.get(endpoint_id)
            if s is not None and s.config is not None:
                return s.config
        return None

    def latest_account(self) -> Account | None:
        """The most recent account data in the window."""
        for o in reversed(self.observations):
            if o.account is not None:
                return o.account
        return None


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """A named problem with the numbers that raised it and what to do about it."""

    code: str
    scope: Scope
    severity: Severity
    summary: str
    remedy: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    endpoint_id: str | None = None
    endpoint_name: str | None = None

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.code, self.endpoint_id)


class Thresholds(BaseModel):
    """Every rule threshold; `config.yaml` `rules:` sets them (same keys)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # capacity
    throttled_cycles: int = Field(2, ge=1, description="no_gpu_capacity: consecutive cycles")
    not_scheduling_s: float = Field(300, gt=0, description="not_scheduling: seconds")
    queue_backlog_jobs: int = Field(10, ge=1, description="queue_backlog: inQueue at least")
    queue_backlog_s: float = Field(300, gt=0, description="queue_backlog: seconds")
    # worker lifecycle
    crash_loop_s: float = Field(300, gt=0, description="crash_loop with restarts: seconds")
    crash_loop_restarts: int = Field(2, ge=1, description="crash_loop: restarts seen")
    crash_loop_no_restart_s: float = Field(900, gt=0, description="crash_loop, none seen")
    crash_loop_cold_start_factor: float = Field(2.0, gt=0, description="x longest cold start")
    idle_workers_queued_s: float = Field(300, gt=0, description="idle_workers_queued: s")
    # jobs
    job_failures_window_s: float = Field(600, gt=0, description="job_failures: window")
    job_failures_min: int = Field(3, ge=1, description="job_failures: failed rise at least")
    job_failures_ratio: float = Field(0.5, gt=0, le=1, description="job_failures: share")
    # endpoint state
    not_found_cycles: int = Field(2, ge=1, description="REST 404: consecutive cycles")
    # account
    auth_cycles: int = Field(2, ge=1, description="auth_invalid: consecutive cycles")
    api_error_cycles: int = Field(3, ge=1, description="runpod_api_errors: cycles")
    low_balance_runway_h: float = Field(24, gt=0, description="low_balance: runway hours")
    low_balance_critical_runway_h: float = Field(2, ge=0, description="critical under")
    low_balance_usd: float = Field(5, ge=0, description="low_balance: balance under")
    idle_spend_s: float = Field(1800, gt=0, description="idle_spend: seconds")
    volume_usd_per_gb_month: float = Field(0.07, ge=0, description="network volume price")
    # template audit
    container_disk_min_gb: int = Field(20, ge=0, description="container_disk_small")
    container_disk_no_volume_min_gb: int = Field(50, ge=0, description="without a volume")

    @property
    def longest_window_s(self) -> float:
        """The longest time any rule looks back, to size the history."""
        return max(
            self.not_scheduling_s,
            self.queue_backlog_s,
            self.crash_loop_no_restart_s,
            self.idle_workers_queued_s,
            self.job_failures_window_s,
            self.idle_spend_s,
        )


def evidence(**numbers: Any) -> dict[str, Any]:
    """An evidence mapping without the values that are None."""
    return {k: v for k, v in numbers.items() if v is not None}
