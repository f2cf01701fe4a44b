"""Scenario files: loading, validation with field-named errors, and the merge helpers."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    ValidationError,
)
from pydantic_core import ErrorDetails

REST_FAULTS = ("ok", "401", "403", "404", "429", "500", "502", "503", "timeout", "reset",
               "malformed")
GRAPHQL_FAULTS = ("ok", "401", "403", "429", "500", "502", "503", "timeout", "reset",
                  "malformed")
# How a retired GraphQL answers: HTTP status (200 = a GraphQL-level error) and message.
RETIRED_STATUSES = (200, 404, 410)
DEFAULT_RETIRED_STATUS = 410
DEFAULT_RETIRED_MESSAGE = (
    "The GraphQL API has been retired. Use REST API v2: "
    "https://docs.runpod.io/api-reference-v2/overview"
)
JOB_STATUSES = ("IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
DEFAULT_RETRY_AFTER_S = 2
DEFAULT_JOB_MS = 1000


class ScenarioError(ValueError):
    """An invalid scenario; the message names the field, e.g. `steps[2].cycles: ...`."""


@dataclass(frozen=True)
class Fault:
    """An injected failure: `kind` is one of the fault names, or "errors" (GraphQL-level)."""

    kind: str = "ok"
    retry_after: int = DEFAULT_RETRY_AFTER_S
    message: str = ""
    status: int = 0  # "retired" only: the HTTP status it answers with

    @property
    def ok(self) -> bool:
        return self.kind == "ok"


OK = Fault()


def _fault_parser(allowed: tuple[str, ...], graphql: bool) -> PlainValidator:
    names = ", ".join(allowed)
    extra = (" or {errors: message}, or retired / {retired: 404|410|200, message}"
             if graphql else "")

    def parse(value: Any) -> Fault:
        if isinstance(value, Fault):
            return value
        if graphql and value == "retired":
            return _retired({"retired": DEFAULT_RETIRED_STATUS})
        if isinstance(value, Mapping):
            if graphql and set(value) == {"errors"}:
                if not isinstance(value["errors"], str):
                    raise ValueError("errors: must be a string (the error message)")
                return Fault("errors", message=value["errors"])
            if graphql and "retired" in value:
                return _retired(value)
            unknown = set(value) - {"code", "retry_after"}
            if unknown or "code" not in value:
                raise ValueError(f"must be one of {names}{extra}, or {{code, retry_after}}")
            after = value.get("retry_after", DEFAULT_RETRY_AFTER_S)
            if type(after) is not int or after < 0:
                raise ValueError(f"retry_after: must be an integer >= 0 (got {_show(after)})")
            return Fault(_fault_kind(value["code"], allowed, names, extra), after)
        return Fault(_fault_kind(value, allowed, names, extra))

    return PlainValidator(parse)


def _retired(value: Mapping[str, Any]) -> Fault:
    unknown = set(value) - {"retired", "message"}
    if unknown:
        raise ValueError(f"retired: unknown key {sorted(unknown)[0]!r} (allowed: retired, message)")
    status, message = value["retired"], value.get("message", DEFAULT_RETIRED_MESSAGE)
    if type(status) is not int or status not in RETIRED_STATUSES:
        raise ValueError(f"retired: must be one of 200, 404, 410 (got {_show(status)})")
    if not isinstance(message, str) or not message:
        raise ValueError("retired.message: must be a non-empty string")
    return Fault("retired", message=message, status=status)


def _fault_kind(value: Any, allowed: tuple[str, ...], names: str, extra: str) -> str:
    # YAML reads `rest: 404` as an int and `rest: ok` as a string; both name a fault.
    kind = str(value) if type(value) in (int, str) else None
    if kind not in allowed:
        raise ValueError(f"must be one of {names}{extra} (got {_show(value)})")
    return kind


RestFault = Annotated[Fault, _fault_parser(REST_FAULTS, graphql=False)]
GraphqlFault = Annotated[Fault, _fault_parser(GRAPHQL_FAULTS, graphql=True)]
Count = Annotated[int, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class JobCounts(_Strict):
    """`/health` jobs counts; omitted ones keep their value (or are 0)."""

    completed: Count | None = None
    failed: Count | None = None
    inProgress: Count | None = None
    inQueue: Count | None = None
    retried: Count | None = None


class WorkerCounts(_Strict):
    """`/health` workers counts."""

    idle: Count | None = None
    initializing: Count | None = None
    ready: Count | None = None
    running: Count | None = None
    throttled: Count | None = None
    unhealthy: Count | None = None


class HealthPatch(_Strict):
    """A `/health` body or the part of it a step changes."""

    jobs: JobCounts | None = None
    workers: WorkerCounts | None = None

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class JobSpec(_Strict):
    """One job of an endpoint's list, as `/requests` and `/status` show it."""

    id: str
    status: Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"]
    delayTime: Count | None = None
    executionTime: Count | None = None
    workerId: str | None = None
    error: str | None = None
    # `/status` of a COMPLETED job serves `output` as given (null, "", {} included); left
    # out, a placeholder `{"ok": true}`; `noOutput: true` serves no output key at all
    output: Any = None
    retries: Count | None = None
    noOutput: bool | None = None


class AccountPatch(BaseModel):
    """GraphQL `myself` scalars; the money fields are checked, any other is served as is."""

    model_config = ConfigDict(extra="allow", strict=True)

    clientBalance: float | None = None
    currentSpendPerHr: float | None = None
    spendLimit: float | None = None
    minBalance: float | None = None
    underBalance: bool | None = None
    maxServerlessConcurrency: Count | None = None

    def as_dict(self) -> dict[str, Any]:
        return {**self.model_dump(exclude_unset=True), **(self.model_extra or {})}


# Keys of an endpoint item that drive the simulator and are never served over GraphQL.
SIM_ONLY_KEYS = frozenset({"job_ms", "health", "rest", "jobs", "v2"})

# --- REST v2 (docs/scenario-format-v2.md) ------------------------------------------------

# Route names a `faults:` mapping may key on ("*" = every v2 route).
V2Route = Literal[
    "list-endpoints", "get-endpoint", "update-endpoint", "workers", "releases", "logs", "billing",
    "billing-serverless", "billing-pods", "billing-network-volumes", "billing-endpoints",
    "network-volumes", "pods", "templates", "catalog-gpus", "catalog-datacenters",
    "balance", "account-limits", "account", "*",
]
V2_ROUTES: tuple[str, ...] = get_args(V2Route)
Availability = Literal["NONE", "LOW", "MEDIUM", "HIGH"]
WorkerStatus = Literal["RUNNING", "IDLE", "INITIALIZING", "THROTTLED", "UNHEALTHY"]
Version = Annotated[int, Field(ge=1)]
Seconds = Annotated[float, Field(ge=0)]
# The wall-clock time of simulated t=0 unless a scenario says: replay's clock starts here
# too (monitor.commands.replay.EPOCH), so v2 times (startedAt, createdAt, log ts) and the monitor's
# cycle times agree.
DEFAULT_EPOCH = "2026-01-01T00:00:00Z"


def _rfc3339(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be an RFC 3339 time string (got {_show(value)})")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"must be an RFC 3339 time, e.g. 2026-12-01T12:00:00Z (got {value!r})"
        ) from None
    if parsed.tzinfo is None:
        raise ValueError(f"must carry a time zone, e.g. a trailing Z (got {value!r})")
    return value


Timestamp = Annotated[str, PlainValidator(_rfc3339)]


class V2Quota(_Strict):
    """Requests allowed per window; a window left out (or null) is not limited."""

    minute: Count | None = 60
    hour: Count | None = 3000
    day: Count | None = 50000


class V2Paths(_Strict):
    """Paths the v2 spec leaves UNCONFIRMED (spec/runpod-rest-v2.md section 3)."""

    balance: Annotated[str, Field(pattern=r"^/v2/[A-Za-z0-9/_-]+$")] = "/v2/billing/balance"
    account_limits: Annotated[str, Field(pattern=r"^/v2/[A-Za-z0-9/_-]+$")] = (
        "/v2/account/limits"
    )
    account: Annotated[str, Field(pattern=r"^/v2/[A-Za-z0-9/_-]+$")] = "/v2/account"


class V2Pagination(_Strict):
    """How the paginated lists (/serverless, /pods, /templates) page: names UNCONFIRMED."""

    page_size: Annotated[int, Field(ge=1)] = 100
    max_page_size: Annotated[int, Field(ge=1)] = 500
    limit_param: Annotated[str, Field(min_length=1)] = "limit"
    cursor_param: Annotated[str, Field(min_length=1)] = "cursor"
    next_field: Annotated[str, Field(min_length=1)] = "nextCursor"


class V2GpuAvailability(_Strict):
    """One GPU type's (or pool's) stock, overall and per data center."""

    availability: Availability
    dataCenters: dict[str, Availability] | None = None


class V2Billing(_Strict):
    """An endpoint's spend in USD per hour, by part."""

    gpu: Annotated[float, Field(ge=0)] = 0.0
    cpu: Annotated[float, Field(ge=0)] = 0.0
    disk: Annotated[float, Field(ge=0)] = 0.0
    fee: Annotated[float, Field(ge=0)] = 0.0

    @property
    def total(self) -> float:
        return self.gpu + self.cpu + self.disk + self.fee


class V2Account(_Strict):
    """Account-wide v2 facts a step may change."""

    quota: V2Quota | None = Field(default_factory=V2Quota)
    billing_mode: Literal["PREPAID", "POSTPAID"] | None = None
    faults: dict[V2Route, RestFault] | None = None
    availability: dict[str, Availability | V2GpuAvailability] | None = None
    account_limits: dict[str, Any] | None = None


class V2Settings(V2Account):
    """The scenario's `v2:` block: the account-wide facts plus how the API is shaped."""

    epoch: Timestamp = DEFAULT_EPOCH
    paths: V2Paths = Field(default_factory=V2Paths)
    pagination: V2Pagination = Field(default_factory=V2Pagination)
    logs_hold_s: Seconds = 30.0


class V2Diff(_Strict):
    """One changed field of a release."""

    field: Annotated[str, Field(min_length=1)]
    old: Any = None
    new: Any = None


class V2Release(_Strict):
    """One release of an endpoint (a versioned configuration snapshot)."""

    version: Version
    id: str | None = None
    source: Literal["MANUAL", "GIT_BUILD"] = "MANUAL"
    buildId: str | None = None
    created_s: float | None = None
    createdAt: Timestamp | None = None
    diff: list[V2Diff] = Field(default_factory=list)


class V2Worker(_Strict):
    """One active worker as `/v2/serverless/{id}/workers` lists it."""

    id: Annotated[str, Field(min_length=1)]
    status: WorkerStatus
    version: Version | None = None
    isStale: bool | None = None
    started_s: float | None = None
    startedAt: Timestamp | None = None
    gpuTypeId: str | None = None
    dataCenterId: str | None = None
    image: str | None = None
    gpuCount: Count = 1


class V2LogLine(_Strict):
    """One log line of a worker; `t` is the simulated second it was written."""

    line: str
    source: Literal["container", "system"] = "container"
    t: float | None = None


LogLine = V2LogLine | str


class EndpointV2(_Strict):
    """An endpoint's v2 facts (or a step's change to them)."""

    endpoint: dict[str, Any] | None = None
    version: Version | None = None
    workers: list[V2Worker] | None = None
    releases: list[V2Release] | None = None
    logs: dict[str, list[LogLine]] | None = None
    faults: dict[V2Route, RestFault] | None = None
    billing: Annotated[float, Field(ge=0)] | V2Billing | None = None


class EndpointSpec(BaseModel):
    """A GraphQL `myself.endpoints` item plus the simulator-only keys."""

    model_config = ConfigDict(extra="allow", strict=True)

    id: str
    job_ms: Count = DEFAULT_JOB_MS
    health: HealthPatch | None = None
    rest: RestFault = OK
    jobs: list[JobSpec] = Field(default_factory=list)
    v2: EndpointV2 | None = None

    def item(self) -> dict[str, Any]:
        """The GraphQL item: every RunPod field as written."""
        return {"id": self.id, **copy.deepcopy(self.model_extra or {})}


class EndpointChange(_Strict):
    """A step's change to one endpoint."""

    health: HealthPatch | None = None
    rest: RestFault | None = None
    config: dict[str, Any] | None = None
    jobs: list[JobSpec] | None = None
    v2: EndpointV2 | None = None


class Step(_Strict):
    """One stretch of the script, holding for `cycles` probe cycles."""

    cycles: Annotated[int, Field(ge=1)]
    account: AccountPatch | None = None
    graphql: GraphqlFault | None = None
    add_endpoints: list[EndpointSpec] = Field(default_factory=list)
    remove_endpoints: list[str] = Field(default_factory=list)
    endpoints: dict[str, EndpointChange] = Field(default_factory=dict)
    networkVolumes: list[dict[str, Any]] | None = None
    pods: list[dict[str, Any]] | None = None
    gpuTypes: list[dict[str, Any]] | None = None
    v2: V2Account | None = None


class Scenario(BaseModel):
    """A validated scenario file (spec/scenario-format.md)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    description: str = ""
    interval_s: Annotated[float, Field(gt=0)] = 30.0
    monitor: dict[str, Any] = Field(default_factory=dict)
    account: AccountPatch = Field(default_factory=AccountPatch)
    networkVolumes: list[dict[str, Any]] = Field(default_factory=list)
    pods: list[dict[str, Any]] = Field(default_factory=list)
    gpuTypes: list[dict[str, Any]] = Field(default_factory=list)
    v2: V2Settings = Field(default_factory=V2Settings)
    endpoints: list[EndpointSpec] = Field(default_factory=list)
    steps: list[Step] = Field(default_factory=list)
    expect: list[dict[str, Any]] = Field(default_factory=list)

    _source: str = PrivateAttr(default="<scenario>")

    @property
    def source(self) -> str:
        return self._source

    @property
    def total_cycles(self) -> int:
        return max(1, sum(step.cycles for step in self.steps))

    def step_index(self, cycle: int) -> int:
        """The step covering `cycle` (the last step holds past the end); -1 when no steps."""
        end = 0
        for i, step in enumerate(self.steps):
            end += step.cycles
            if cycle <= end:
                return i
        return len(self.steps) - 1

    def first_cycles(self) -> list[int]:
        """The first cycle of each step."""
        firsts, k = [], 1
        for step in self.steps:
            firsts.append(k)
            k += step.cycles
        return firsts

    def with_interval(self, interval_s: float) -> Scenario:
        """A copy with another interval (the `simulate --interval` override)."""
        if interval_s <= 0:
            raise ScenarioError(f"interval_s: must be > 0 (got {_show(interval_s)})")
        out = self.model_copy(update={"interval_s": float(interval_s)})
        out._source = self._source
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str = "<scenario>") -> Scenario:
        """Validate `data`; raises ScenarioError naming the first bad field."""
        if not isinstance(data, Mapping):
            raise ScenarioError(f"{source}: a scenario must be a mapping (got {_show(data)})")
        try:
            scenario = cls.model_validate(dict(data))
        except ValidationError as exc:
            raise ScenarioError(_describe(exc.errors(include_url=False)[0])) from None
        _check_references(scenario)
        scenario._source = source
        return scenario


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; raises ScenarioError."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"cannot read scenario file {p}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{p}: not valid YAML: {exc}") from None
    except RecursionError:
        raise ScenarioError(f"{p}: not valid YAML: nested too deeply") from None
    try:
        return Scenario.from_dict(data, source=str(p))
    except RecursionError:  # an anchor that contains itself (`a: &x [*x]`)
        raise ScenarioError(f"{p}: a YAML anchor refers to itself") from None


def deep_merge(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """`patch` merged into a copy of `base`; nested mappings merge, anything else replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _check_references(sc: Scenario) -> None:
    """Ids that steps name must exist; listed ids must be unique."""
    listed: set[str] = set()
    known: set[str] = set()
    for i, ep in enumerate(sc.endpoints):
        if ep.id in listed:
            raise ScenarioError(f"endpoints[{i}].id: duplicate endpoint id {ep.id!r}")
        listed.add(ep.id)
    known |= listed
    for s, step in enumerate(sc.steps):
        for j, rid in enumerate(step.remove_endpoints):
            if rid not in known:
                raise ScenarioError(
                    f"steps[{s}].remove_endpoints[{j}]: unknown endpoint id {rid!r}"
                )
            listed.discard(rid)
        for j, ep in enumerate(step.add_endpoints):
            if ep.id in listed:
                raise ScenarioError(
                    f"steps[{s}].add_endpoints[{j}].id: endpoint {ep.id!r} is already listed"
                )
            listed.add(ep.id)
            known.add(ep.id)
        for eid in step.endpoints:
            if eid not in known:
                raise ScenarioError(
                    f"steps[{s}].endpoints.{eid}: unknown endpoint id"
                    " (not in endpoints or an add_endpoints so far)"
                )


_TYPE_WORDS = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number",
    "string_type": "a string", "bool_type": "true or false", "bool_parsing": "true or false",
    "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
    "list_type": "a list",
}


def _describe(err: ErrorDetails) -> str:
    """One pydantic error as `path: what is wrong (got value)`."""
    path = _path(err["loc"])
    kind, ctx, got = err["type"], err.get("ctx", {}), _show(err.get("input"))
    if kind == "missing":
        text = "required"
    elif kind == "extra_forbidden":
        text = "unknown field"
    elif kind == "greater_than_equal":
        text = f"must be >= {ctx['ge']} (got {got})"
    elif kind == "greater_than":
        text = f"must be > {ctx['gt']} (got {got})"
    elif kind in _TYPE_WORDS:
        text = f"must be {_TYPE_WORDS[kind]} (got {got})"
    elif kind == "literal_error":
        text = f"must be one of {ctx['expected']} (got {got})"
    elif kind == "string_pattern_mismatch" and path == "name":
        text = f"must be a slug (letters, digits, '.', '-', '_') (got {got})"
    elif kind == "value_error":
        text = str(ctx.get("error", err["msg"]))
    else:
        text = f"{err['msg']} (got {got})"
    return f"{path}: {text}" if path else text


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _show(value: Any) -> str:
    """A value as a person reads it in an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return str(value)
