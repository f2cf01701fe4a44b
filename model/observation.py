"""The observation vocabulary: what one probe cycle saw of the account and its endpoints.

Immutable and free of I/O, and imports nothing of ours: the client parses RunPod's answers
into these types, the probes assemble an `Observation`, the rules, the store and the sinks
read it. New control-plane facts (REST v2 workers, releases) get their types here, beside
`EndpointConfig` and `Health`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

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
# GraphQL answered that it is gone (404, 410, or a message saying it was retired): a
# known, lasting state of RunPod's API, not a transient failure (not in FAILURE_KINDS).
# The facts GraphQL fed are unknown while it holds, so it is in UNKNOWN_OUTCOMES; the
# prober turns it into `Observation.graphql_state`.
RETIRED = "retired"
# Outcomes that tell nothing about RunPod's state: the sample is unknown.
UNKNOWN_OUTCOMES = frozenset(
    {"timeout", "connect", "http_429", "http_4xx", "http_5xx", "malformed", "graphql_error",
     SKIPPED, RETIRED}
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
    def workers_billed(self) -> int:
        """Workers RunPod bills now: up and holding a GPU (running, idle, initializing, or
        failing health checks); throttled ones wait for a GPU (`ready` repeats `idle`)."""
        return self.running + self.idle + self.initializing + self.unhealthy

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
    # what `/status` said of the output of a finished job: "absent" (no key), "null",
    # "empty" ("", [], {}) or "value"; "lost" when its error is RunPod's "Failed to return
    # job results" (whatever the status); None when not read (`/requests` items, unfinished
    # jobs). Never the content itself.
    output_kind: str | None = None
    output_bytes: int | None = None  # the size of its JSON text, when output_kind is "value"


def queued_wait_ms(jobs: Iterable[Job]) -> int | None:
    """How long the oldest queued job has waited: 0 with none queued, None when jobs are
    queued but none tells its delay."""
    queued = False
    oldest: int | None = None
    for job in jobs:
        if job.status == "IN_QUEUE":
            queued = True
            if job.delay_ms is not None and (oldest is None or job.delay_ms > oldest):
                oldest = job.delay_ms
    return oldest if oldest is not None or queued else 0


def iso_utc(t: float) -> str:
    """Unix seconds (an observation's `t`) as ISO-8601 UTC with a Z."""
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


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
    """An endpoint's configuration, whichever API listed it (GraphQL `myself.endpoints` or
    REST v2 `GET /v2/serverless`).

    v2 items map onto the GraphQL names: `gpu.pools` + `gpu.excludedTypes` -> `gpu_ids`
    ("ADA_24,-NVIDIA L40"), `dataCenterIds` -> `locations` (comma-joined),
    `networkVolumes[0]` -> `network_volume_id` (all of them in `network_volume_ids`),
    `scaling` -> `scaler_type`/`scaler_value`, the inline container fields -> `template`
    (id "" : v2 reports no template id). The fields after `template` only v2 reports.
    """

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
    network_volume_ids: tuple[str, ...] = ()
    timeout_ms: int | None = None  # execution timeout; 0 means never set (spec 0.6)
    flashboot: str | None = None  # OFF | FLASHBOOT | PRIORITY_FLASHBOOT
    endpoint_type: str | None = None  # QUEUE | LOAD_BALANCER

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
    cost_per_hr: float = 0.0  # 0 for a stopped pod (v2 `cost`)
    # its disk in GB (GraphQL `volumeInGb`, v2 `mounts.persistent.size`), which bills while
    # the pod is stopped; None when not read
    disk_gb: float | None = None


@dataclass(frozen=True, slots=True)
class Account:
    """The `myself` scalars and the account's volumes and pods."""

    balance: float
    spend_per_hr: float
    spend_limit: float | None = None
    network_volumes: tuple[NetworkVolume, ...] = ()
    pods: tuple[Pod, ...] = ()
    # PREPAID | POSTPAID (v2 balance route); None when unknown (GraphQL does not say). A
    # POSTPAID account is invoiced: a low balance does not stop it.
    billing_mode: str | None = None

    @property
    def pods_running(self) -> int:
        return sum(1 for p in self.pods if p.desired_status == "RUNNING")


# -- REST v2 facts ------------------------------------------------------------------------

V2_WORKER_STATUSES = ("RUNNING", "IDLE", "INITIALIZING", "THROTTLED", "UNHEALTHY")


@dataclass(frozen=True, slots=True)
class Worker:
    """One worker as `GET /v2/serverless/{id}/workers` lists it; times in unix seconds."""

    id: str
    status: str  # one of V2_WORKER_STATUSES
    stale: bool = False  # `isStale`: runs an older release than the endpoint's
    version: int | None = None
    started_at: float | None = None  # `startedAt`: when it last started
    uptime_s: int | None = None  # None until placed and running
    gpu_type: str | None = None
    datacenter: str | None = None
    gpu_count: int = 1
    image: str | None = None


@dataclass(frozen=True, slots=True)
class Workers:
    """One `/workers` answer: the active workers (scaled-down ones are not listed)."""

    endpoint_version: int | None
    workers: tuple[Worker, ...] = ()


@dataclass(frozen=True, slots=True)
class ReleaseChange:
    """One line of a release's diff; `old`/`new` are the raw values as compact JSON text
    (env values among them: mask before showing)."""

    field: str
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Release:
    version: int
    created_at: float | None = None
    source: str = ""  # MANUAL | GIT_BUILD
    build_id: str | None = None
    worker_count: int | None = None
    diff: tuple[ReleaseChange, ...] = ()


@dataclass(frozen=True, slots=True)
class Releases:
    """One `/releases` answer: newest release first, and the rollout summary."""

    endpoint_version: int | None
    releases: tuple[Release, ...] = ()
    rollout_in_progress: bool | None = None
    percent_on_latest: float | None = None


@dataclass(frozen=True, slots=True)
class LogLine:
    t: float | None  # the event's `ts`, unix seconds
    source: str  # system | container
    line: str


@dataclass(frozen=True, slots=True)
class WorkerLogs:
    """A bounded snapshot of one worker's log stream (`truncated`: a bound cut it)."""

    worker_id: str
    lines: tuple[LogLine, ...] = ()
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class GpuStock:
    """One GPU type of the v2 catalog with its live availability (`include=AVAILABILITY`)."""

    gpu_type: str
    pool: str | None = None
    availability: str | None = None  # NONE | LOW | MEDIUM | HIGH, None when not said
    # (datacenter id, availability) pairs; empty when unavailable everywhere
    datacenters: tuple[tuple[str, str], ...] = ()
    price_serverless: float | None = None  # USD per GPU per hour (list price)


@dataclass(frozen=True, slots=True)
class EndpointSample:
    """What one cycle saw of one watched endpoint.

    `health` is None when the `/health` probe gave no usable data (see `health_outcome`);
    `jobs` is None when `/requests` was not asked or failed, and () without asking when
    `/health` showed no job in flight and no job counter moved since the last cycle.
    `config` is this cycle's control-plane item, None when the listing failed or does not
    list the endpoint (`listed`). `workers`, `releases` and `logs` are what REST v2 answered
    for the endpoint this cycle; None when not asked (the v2 budget spends its calls where
    they decide something) or when the call failed: the last known answer is further back
    in the history.
    """

    endpoint_id: str
    health_outcome: str
    http_status: int = 0
    health: Health | None = None
    jobs: tuple[Job, ...] | None = None
    listed: bool | None = None
    config: EndpointConfig | None = None
    workers: Workers | None = None
    releases: Releases | None = None
    logs: tuple[WorkerLogs, ...] | None = None

    @property
    def health_known(self) -> bool:
        """True when the data plane answered with data or a meaningful 404."""
        return self.health is not None or self.health_outcome == "http_404"


@dataclass(frozen=True, slots=True)
class TrackedJob:
    """A job the user's app registered (`POST /api/v1/jobs`), as `/status` answered this
    cycle; one RunPod no longer knows (purged or expired) reads as CANCELLED."""

    endpoint_id: str
    job: Job


@dataclass(frozen=True, slots=True)
class Observation:
    """Everything one probe cycle saw. Unknown is None, never zero."""

    cycle: int
    t: float
    # the outcome of this cycle's endpoint listing, from whichever API fed it
    # (`sources["endpoints"]`): "ok", a failure kind, or SKIPPED
    control_outcome: str
    control_status: int = 0
    account: Account | None = None
    # ids the control plane listed this cycle; None when the listing failed
    listed_ids: frozenset[str] | None = None
    endpoints: Mapping[str, EndpointSample] = field(default_factory=dict)
    # the tracked jobs `/status` answered for this cycle (a job whose endpoint is closed by
    # a back-off or Retry-After, or whose call failed, is not here: unknown this cycle)
    tracked_jobs: tuple[TrackedJob, ...] = ()
    # the API remedies quote: "rest" (REST v2), or "graphql" when the config says
    # `runpod.control_plane: graphql`
    control_plane: str = "graphql"
    # which API fed each control-plane fact this cycle: fact -> "rest" | "graphql";
    # facts: endpoints, balance, spend_per_hr, spend_limit, billing_mode, volumes, pods,
    # endpoint_spend, gpu_stock. A fact not read this cycle is absent.
    sources: Mapping[str, str] = field(default_factory=dict)
    # "retired" once GraphQL answered that it is gone (404/410 or a retirement message):
    # a known state, not an API error; None otherwise
    graphql_state: str | None = None
    # USD per hour per endpoint id from v2 billing (the last complete hour bucket); None
    # when not read this cycle
    endpoint_spend: Mapping[str, float] | None = None
    # the v2 GPU catalog with availability; None when not read this cycle
    gpu_stock: tuple[GpuStock, ...] | None = None

    @property
    def control_ok(self) -> bool:
        return self.control_outcome == OK
