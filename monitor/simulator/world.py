"""The simulated RunPod account as of a simulated moment: scripted state plus submitted jobs."""

from __future__ import annotations

import copy
import hashlib
import math
import uuid
from dataclasses import dataclass, field
from typing import Any

from monitor.simulator.scenario import (
    OK,
    EndpointSpec,
    Fault,
    JobSpec,
    Scenario,
    deep_merge,
)
from monitor.simulator.world_v2 import AccountV2, EndpointV2State

JOB_KEYS = ("completed", "failed", "inProgress", "inQueue", "retried")
WORKER_KEYS = ("idle", "initializing", "ready", "running", "throttled", "unhealthy")
TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
DEFAULT_ACCOUNT = {"id": "user_simulated", "email": "simulator@example.com"}


@dataclass(frozen=True)
class Moment:
    """Where the simulated clock stands: cycle (1-based) and seconds since the start."""

    cycle: int
    now_s: float

    @property
    def now_ms(self) -> int:
        return round(self.now_s * 1000)


class JobMissing(LookupError):
    """No such job on the endpoint (never listed, or purged)."""


@dataclass
class EndpointState:
    """One endpoint during one step."""

    item: dict[str, Any]
    health: dict[str, dict[str, int]]
    rest: Fault
    jobs: list[JobSpec]
    job_ms: int
    listed: bool = True
    v2: EndpointV2State = field(default_factory=EndpointV2State)

    def has_worker(self) -> bool:
        """A worker that could take a job: idle, ready or running above 0."""
        w = self.health["workers"]
        return self.listed and (w["idle"] + w["ready"] + w["running"]) > 0


@dataclass
class StepState:
    """The whole scripted account during one step (from its first cycle on)."""

    start_s: float
    account: dict[str, Any]
    graphql: Fault
    network_volumes: list[dict[str, Any]]
    pods: list[dict[str, Any]]
    gpu_types: dict[str, dict[str, Any]]
    endpoints: dict[str, EndpointState]
    v2: AccountV2 = field(default_factory=AccountV2)

    def listed(self, endpoint_id: str) -> EndpointState | None:
        ep = self.endpoints.get(endpoint_id)
        return ep if ep is not None and ep.listed else None


@dataclass
class JobTimes:
    """When a scripted job was first seen queued, out of the queue, running, finished (s)."""

    first_seen: float
    left_queue: float | None = None
    running: float | None = None
    finished: float | None = None


@dataclass
class Submitted:
    """A job sent over HTTP (/run, /runsync, /retry) at simulated time `at_s`."""

    id: str
    input: Any
    at_s: float


@dataclass
class _Dynamic:
    submitted: dict[str, list[Submitted]] = field(default_factory=dict)
    # (endpoint, job) -> [(time, "cancel" | "purge")]: applied when the clock has passed it
    events: dict[tuple[str, str], list[tuple[float, str]]] = field(default_factory=dict)


Path_ = tuple[str, ...]  # ("item", "workersMax"), ("health", "jobs", "inQueue")


@dataclass(frozen=True)
class Override:
    """A value a caller set (PATCH, cancel, purge) over the script's, for one endpoint.

    It holds from `at_s` (in step `since`) until the first later step whose scripted value
    at `path` differs from `base` (the scripted value when it was set): a script that moves
    the field itself wins from then on, as if someone else changed it again."""

    seq: int
    endpoint_id: str
    path: Path_
    value: Any
    at_s: float
    since: int
    until: int  # the first step index where the script takes the field back


# Worker states given up first when a PATCH lowers workersMax below the scripted count.
_SHED_ORDER = ("idle", "throttled", "initializing", "ready", "unhealthy", "running")


def _empty_health() -> dict[str, dict[str, int]]:
    return {"jobs": dict.fromkeys(JOB_KEYS, 0), "workers": dict.fromkeys(WORKER_KEYS, 0)}


def _new_endpoint(spec: EndpointSpec, start_s: float = 0.0) -> EndpointState:
    health = _empty_health()
    if spec.health is not None:
        health = deep_merge(health, spec.health.as_dict())
    ep = EndpointState(spec.item(), health, spec.rest, list(spec.jobs), spec.job_ms)
    if spec.v2 is not None:
        ep.v2.apply(spec.v2, start_s)
    return ep


def _build_states(sc: Scenario) -> tuple[list[StepState], dict[tuple[str, str], JobTimes]]:
    """Replay the script once: the state of every step, and when each scripted job moved."""
    base = StepState(
        start_s=0.0,
        account={**DEFAULT_ACCOUNT, **sc.account.as_dict()},
        graphql=OK,
        network_volumes=copy.deepcopy(sc.networkVolumes),
        pods=copy.deepcopy(sc.pods),
        gpu_types={g["id"]: copy.deepcopy(g) for g in sc.gpuTypes if "id" in g},
        endpoints={ep.id: _new_endpoint(ep) for ep in sc.endpoints},
        v2=AccountV2.initial(sc.v2),
    )
    times: dict[tuple[str, str], JobTimes] = {}
    if not sc.steps:
        _note_jobs(base, times)
        return [base], times
    states: list[StepState] = []
    prev = base
    for step, first in zip(sc.steps, sc.first_cycles(), strict=True):
        st = copy.deepcopy(prev)
        st.start_s = (first - 1) * sc.interval_s
        if step.account is not None:
            st.account = deep_merge(st.account, step.account.as_dict())
        if step.graphql is not None:
            st.graphql = step.graphql
        if step.v2 is not None:
            st.v2.apply(step.v2)
        if step.networkVolumes is not None:
            st.network_volumes = copy.deepcopy(step.networkVolumes)
        if step.pods is not None:
            st.pods = copy.deepcopy(step.pods)
        for g in step.gpuTypes or []:
            if "id" in g:
                st.gpu_types[g["id"]] = deep_merge(st.gpu_types.get(g["id"], {}), g)
        for rid in step.remove_endpoints:
            st.endpoints[rid].listed = False
        for spec in step.add_endpoints:
            st.endpoints[spec.id] = _new_endpoint(spec, st.start_s)
        for eid, change in step.endpoints.items():
            ep = st.endpoints[eid]
            if change.health is not None:
                ep.health = deep_merge(ep.health, change.health.as_dict())
            if change.rest is not None:
                ep.rest = change.rest
            if change.config is not None:
                config = dict(change.config)
                if "job_ms" in config:
                    ep.job_ms = int(config.pop("job_ms"))
                ep.item = deep_merge(ep.item, config)
            if change.jobs is not None:
                ep.jobs = list(change.jobs)
            if change.v2 is not None:
                ep.v2.apply(change.v2, st.start_s)
        _note_jobs(st, times)
        states.append(st)
        prev = st
    return states, times


def _note_jobs(st: StepState, times: dict[tuple[str, str], JobTimes]) -> None:
    for eid, ep in st.endpoints.items():
        if not ep.listed:
            continue
        for job in ep.jobs:
            t = times.setdefault((eid, job.id), JobTimes(first_seen=st.start_s))
            if job.status != "IN_QUEUE" and t.left_queue is None:
                t.left_queue = st.start_s
            if job.status == "IN_PROGRESS" and t.running is None:
                t.running = st.start_s
            if job.status in TERMINAL and t.finished is None:
                t.finished = st.start_s


def _get_path(ep: EndpointState, path: Path_) -> Any:
    node: Any = getattr(ep, path[0])
    for part in path[1:]:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _overlay(st: StepState, overrides: list[Override]) -> StepState:
    """A copy of `st` with `overrides` applied (in the order they were set)."""
    out = copy.copy(st)
    out.endpoints = dict(st.endpoints)
    for o in overrides:
        ep = out.endpoints.get(o.endpoint_id)
        if ep is None:
            continue
        if ep is st.endpoints.get(o.endpoint_id):
            ep = out.endpoints[o.endpoint_id] = copy.deepcopy(ep)
        node: Any = getattr(ep, o.path[0])
        for part in o.path[1:-1]:
            node = node.setdefault(part, {})
        node[o.path[-1]] = copy.deepcopy(o.value)
        if o.path == ("item", "workersMax"):
            _cap_workers(ep.health["workers"], int(o.value))
    return out


def _cap_workers(workers: dict[str, int], cap: int) -> None:
    """Shed scripted workers above a lowered workersMax, idle ones first."""
    excess = sum(workers.values()) - max(0, cap)
    for state in _SHED_ORDER:
        if excess <= 0:
            return
        cut = min(excess, workers.get(state, 0))
        workers[state] = workers.get(state, 0) - cut
        excess -= cut


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def worker_id(endpoint_id: str) -> str:
    """A stable, RunPod-looking worker id for jobs the simulator runs."""
    return hashlib.sha1(endpoint_id.encode(), usedforsecurity=False).hexdigest()[:14]


class World:
    """Scripted states (computed once) plus what HTTP callers did, both keyed by time."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.states, self._times = _build_states(scenario)
        self._dyn = _Dynamic()
        self._overrides: dict[tuple[str, Path_], Override] = {}
        self._seq = 0
        # (step index, applicable override seqs) -> the overlaid state; never dropped, so
        # views that cache by a state's identity stay right
        self._overlays: dict[tuple[int, tuple[int, ...]], StepState] = {}

    # -- the scripted part ----------------------------------------------------------------

    def state(self, m: Moment) -> StepState:
        """The state during cycle `m.cycle` (the last step holds past the end): the script's,
        with the overrides callers set (`override`) laid over it while they hold."""
        index = max(0, self.scenario.step_index(m.cycle))
        st = self.states[index]
        if not self._overrides:
            return st
        live = sorted(
            (o for o in self._overrides.values()
             if o.since <= index < o.until and o.at_s <= m.now_s),
            key=lambda o: o.seq,
        )
        if not live:
            return st
        key = (index, tuple(o.seq for o in live))
        out = self._overlays.get(key)
        if out is None:
            out = self._overlays[key] = _overlay(st, live)
        return out

    def scripted(self, endpoint_id: str, path: Path_, index: int) -> Any:
        """The script's value at `path` of `endpoint_id` in step `index` (None if absent)."""
        ep = self.states[index].endpoints.get(endpoint_id)
        return None if ep is None else _get_path(ep, path)

    def override(self, endpoint_id: str, path: Path_, value: Any, m: Moment) -> None:
        """Set `path` of an endpoint's state to `value` from `m` on (see `Override`)."""
        index = max(0, self.scenario.step_index(m.cycle))
        base = self.scripted(endpoint_id, path, index)
        until = next((j for j in range(index + 1, len(self.states))
                      if self.scripted(endpoint_id, path, j) != base), len(self.states))
        self._seq += 1
        self._overrides[(endpoint_id, path)] = Override(
            self._seq, endpoint_id, path, copy.deepcopy(value), m.now_s, index, until)

    def myself(self, m: Moment) -> dict[str, Any]:
        """GraphQL `myself` as plain data; endpoint items carry their resolved extras."""
        st = self.state(m)
        volumes = {v.get("id"): v for v in st.network_volumes}
        endpoints = []
        for ep in st.endpoints.values():
            if not ep.listed:
                continue
            item = copy.deepcopy(ep.item)
            vol_id = item.get("networkVolumeId")
            if "networkVolume" not in item and vol_id in volumes:
                item["networkVolume"] = copy.deepcopy(volumes[vol_id])
            template = item.get("template")
            if "templateId" not in item and isinstance(template, dict) and "id" in template:
                item["templateId"] = template["id"]
            item.setdefault("pods", [])
            endpoints.append(item)
        return {
            **copy.deepcopy(st.account),
            "endpoints": endpoints,
            "networkVolumes": copy.deepcopy(st.network_volumes),
            "pods": copy.deepcopy(st.pods),
        }

    def gpu_overrides(self, m: Moment) -> dict[str, dict[str, Any]]:
        return self.state(m).gpu_types

    # -- the data plane ------------------------------------------------------------------

    def health(self, endpoint_id: str, m: Moment) -> dict[str, dict[str, int]]:
        """The `/health` body: the script's counts plus the jobs submitted over HTTP."""
        ep = self.state(m).endpoints[endpoint_id]
        body = copy.deepcopy(ep.health)
        key = {"IN_QUEUE": "inQueue", "IN_PROGRESS": "inProgress", "COMPLETED": "completed"}
        for sub in self._visible_submitted(endpoint_id, m):
            status = self._render_submitted(endpoint_id, sub, m)["status"]
            if status in key:
                body["jobs"][key[status]] += 1
        return body

    def jobs(self, endpoint_id: str, m: Moment) -> list[dict[str, Any]]:
        """Every job `/requests` lists: scripted ones, then submitted ones."""
        out: list[dict[str, Any]] = []
        shadowed = {s.id for s in self._visible_submitted(endpoint_id, m)}
        for job in self.state(m).endpoints[endpoint_id].jobs:
            if job.id not in shadowed and self._event(endpoint_id, job.id, m) != "purge":
                out.append(self._render_scripted(endpoint_id, job, m))
        out.extend(
            self._render_submitted(endpoint_id, s, m)
            for s in self._visible_submitted(endpoint_id, m)
        )
        return out

    def job(self, endpoint_id: str, job_id: str, m: Moment) -> dict[str, Any]:
        """One job as `/status` answers it; raises JobMissing."""
        for job in self.jobs(endpoint_id, m):
            if job["id"] == job_id:
                return self._with_output(endpoint_id, job, m)
        raise JobMissing(job_id)

    def _with_output(self, endpoint_id: str, job: dict[str, Any], m: Moment) -> dict[str, Any]:
        """A scripted COMPLETED job's `/status` output (JobSpec's `output` / `noOutput`)."""
        if job["status"] != "COMPLETED":
            return job
        spec = next((j for j in self.state(m).endpoints[endpoint_id].jobs
                     if j.id == job["id"]), None)
        if spec is None:
            return job  # a submitted job: its input echoed
        if spec.noOutput:
            job.pop("output", None)
        elif "output" in spec.model_fields_set:
            job["output"] = copy.deepcopy(spec.output)
        else:
            job["output"] = {"ok": True}
        return job

    def submit(self, endpoint_id: str, job_input: Any, m: Moment, *, sync: bool) -> str:
        """Queue a job at the current moment; returns its id."""
        prefix = "sync-" if sync else ""
        job_id = f"{prefix}{uuid.uuid4()}-u1"
        self._dyn.submitted.setdefault(endpoint_id, []).append(
            Submitted(job_id, copy.deepcopy(job_input), m.now_s)
        )
        return job_id

    def cancel(self, endpoint_id: str, job_id: str, m: Moment) -> dict[str, Any]:
        """Cancel a job that has not finished; a finished one keeps its status."""
        job = self.job(endpoint_id, job_id, m)
        if job["status"] in TERMINAL:
            return {"id": job_id, "status": job["status"]}
        scripted = {j.id for j in self.state(m).endpoints[endpoint_id].jobs}
        shadowed = {s.id for s in self._visible_submitted(endpoint_id, m)}
        if job_id in scripted and job_id not in shadowed:
            # /health's counts are scripted apart from the job list: the cancelled job
            # leaves its count too
            key = {"IN_QUEUE": "inQueue", "IN_PROGRESS": "inProgress"}.get(job["status"])
            if key is not None:
                now = self.state(m).endpoints[endpoint_id].health["jobs"][key]
                self.override(endpoint_id, ("health", "jobs", key), max(0, now - 1), m)
        self._dyn.events.setdefault((endpoint_id, job_id), []).append((m.now_s, "cancel"))
        return {"id": job_id, "status": "CANCELLED"}

    def retry(self, endpoint_id: str, job_id: str, m: Moment) -> dict[str, Any] | None:
        """Re-queue a FAILED or TIMED_OUT job under the same id; None when not retryable."""
        job = self.job(endpoint_id, job_id, m)
        if job["status"] not in ("FAILED", "TIMED_OUT"):
            return None
        subs = self._dyn.submitted.setdefault(endpoint_id, [])
        old = next((s for s in subs if s.id == job_id), None)
        subs.append(Submitted(job_id, old.input if old else None, m.now_s))
        return {"id": job_id, "status": "IN_QUEUE"}

    def purge(self, endpoint_id: str, m: Moment) -> int:
        """Remove every queued job; returns how many."""
        queued = [j["id"] for j in self.jobs(endpoint_id, m) if j["status"] == "IN_QUEUE"]
        submitted = {s.id for s in self._visible_submitted(endpoint_id, m)}
        for job_id in queued:
            self._dyn.events.setdefault((endpoint_id, job_id), []).append((m.now_s, "purge"))
        # /health's scripted queue count may stand for more jobs than /requests lists
        scripted = self.state(m).endpoints[endpoint_id].health["jobs"]["inQueue"]
        if scripted:
            self.override(endpoint_id, ("health", "jobs", "inQueue"), 0, m)
        from_submitted = sum(1 for j in queued if j in submitted)
        return from_submitted + max(scripted, len(queued) - from_submitted)

    # -- rendering -----------------------------------------------------------------------

    def _event(self, endpoint_id: str, job_id: str, m: Moment) -> str | None:
        past = [e for e in self._dyn.events.get((endpoint_id, job_id), []) if e[0] <= m.now_s]
        return min(past)[1] if past else None

    def _visible_submitted(self, endpoint_id: str, m: Moment) -> list[Submitted]:
        """Submitted jobs the clock has reached, not purged; a retry replaces its original."""
        latest: dict[str, Submitted] = {}
        for sub in self._dyn.submitted.get(endpoint_id, []):
            if sub.at_s <= m.now_s:
                latest[sub.id] = sub
        return [
            s for s in latest.values() if self._event_after(endpoint_id, s, m) != "purge"
        ]

    def _event_after(self, endpoint_id: str, sub: Submitted, m: Moment) -> str | None:
        past = [
            e for e in self._dyn.events.get((endpoint_id, sub.id), [])
            if sub.at_s <= e[0] <= m.now_s
        ]
        return min(past)[1] if past else None

    def _render_scripted(self, endpoint_id: str, job: JobSpec, m: Moment) -> dict[str, Any]:
        out: dict[str, Any] = job.model_dump(exclude_none=True, exclude={"noOutput"})
        t = self._times.get((endpoint_id, job.id))
        if self._event(endpoint_id, job.id, m) == "cancel":
            out["status"] = "CANCELLED"
            return out
        if t is None or job.delayTime is not None:
            return out
        if job.status == "IN_QUEUE":
            out["delayTime"] = max(0, m.now_ms - _ms(t.first_seen))
            return out
        if t.left_queue is not None and t.left_queue > t.first_seen:
            out["delayTime"] = _ms(t.left_queue - t.first_seen)
        if (
            job.status in TERMINAL
            and job.executionTime is None
            and t.running is not None
            and t.finished is not None
            and t.finished > t.running
        ):
            out["executionTime"] = _ms(t.finished - t.running)
        return out

    def _render_submitted(self, endpoint_id: str, sub: Submitted, m: Moment) -> dict[str, Any]:
        start = self._start_time(endpoint_id, sub.at_s)
        event = self._event_after(endpoint_id, sub, m)
        out: dict[str, Any] = {"id": sub.id}
        if start is None or start > m.now_s:
            out["status"] = "CANCELLED" if event == "cancel" else "IN_QUEUE"
            if event is None:
                out["delayTime"] = max(0, m.now_ms - _ms(sub.at_s))
            return out
        job_ms = self._job_ms(endpoint_id, start)
        done = start + job_ms / 1000.0
        out["delayTime"] = _ms(start - sub.at_s)
        out["workerId"] = worker_id(endpoint_id)
        if event == "cancel":
            out["status"] = "CANCELLED"
        elif m.now_s < done:
            out["status"] = "IN_PROGRESS"
        else:
            out.update(status="COMPLETED", executionTime=job_ms, output=copy.deepcopy(sub.input))
        return out

    def _start_time(self, endpoint_id: str, at_s: float) -> float | None:
        """When a job queued at `at_s` is first taken by a worker, by the script."""
        for i, st in enumerate(self.states):
            end = self.states[i + 1].start_s if i + 1 < len(self.states) else math.inf
            if end <= at_s:
                continue
            ep = st.endpoints.get(endpoint_id)
            if ep is not None and ep.has_worker():
                return max(at_s, st.start_s)
        return None

    def _job_ms(self, endpoint_id: str, at_s: float) -> int:
        job_ms = 0
        for st in self.states:
            if st.start_s > at_s:
                break
            ep = st.endpoints.get(endpoint_id)
            if ep is not None:
                job_ms = ep.job_ms
        return job_ms
