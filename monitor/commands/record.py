"""`record`: poll the account for N cycles and write what it saw as a scenario file that
`replay` plays back (docs/record.md).

The pipeline is the daemon's (`build_pipeline`, `client_for`); after each cycle the
`Recorder` turns the cycle's Observation (and its calls: a 429's Retry-After) into the
scenario's terms. What a cycle did not see (a failed or skipped probe, a v2 fact not asked)
is the last thing seen, so the replay answers what the account most likely said. Identical
consecutive cycles become one step. The file names no API key; env values of secret-looking
keys and token-shaped values anywhere are replaced by placeholders, log lines masked.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import json
import math
import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from model.observation import (
    OK,
    SKIPPED,
    V2_WORKER_STATUSES,
    EndpointConfig,
    EndpointSample,
    Health,
    Job,
    Observation,
    Releases,
    WorkerLogs,
    Workers,
    iso_utc,
)
from monitor.config import Settings
from monitor.pipeline.cycle import CycleResult, build_pipeline
from monitor.pipeline.probes import ProbeCall
from monitor.runpod.client import RUNPOD_LIMITS, RunPodClient, client_for
from rules.secrets import mask, placeholder, secret_key, secret_reference
from rules.thresholds import Thresholds

Json = dict[str, Any]
# what an env value of a secret-looking key becomes when it is not token-shaped
MASKED = "<masked>"
JOB_STATUSES = frozenset({"IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED",
                          "TIMED_OUT"})
AVAILABILITY = frozenset({"NONE", "LOW", "MEDIUM", "HIGH"})
RETIRED_STATUSES = frozenset({200, 404, 410})
# RunPod's data-plane limits are counted in real seconds; below this interval a recording
# can only be of the simulator (tests), which the limiter would starve of /requests
LIMITS_MIN_INTERVAL_S = 1.0
MIN_GUARDED_SECRET = 8


# --- masking ------------------------------------------------------------------------------

def scrub(value: Any) -> Any:
    """`value` (JSON-like) with token-shaped secrets in every string replaced by placeholders
    and the values of secret-looking keys by `MASKED`."""
    if isinstance(value, str):
        return placeholder(value)
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    if isinstance(value, Mapping):
        return {k: env_value(str(k), v) if isinstance(v, str) else scrub(v)
                for k, v in value.items()}
    return value


def env_value(key: str, value: str) -> str:
    """What the file keeps of env `key`=`value`: a secret-looking key's value is replaced
    (by a same-shaped stand-in when token-shaped, so the audit still sees a token; else by
    `MASKED`), except an empty value or a RunPod secret reference, which hold no secret."""
    if secret_key(key) and value.strip() and not secret_reference(value):
        shaped = placeholder(value)
        return shaped if shaped != value else MASKED
    return placeholder(value)


# --- one cycle in the scenario's terms ------------------------------------------------------

def fault_of(outcome: str, status: int, retry_after_s: float | None) -> Any:
    """A probe outcome as a scenario fault (`ok`, `401`, `{code: 429, retry_after}`, ...).

    A 4xx other than 401/403/404/429 is written `malformed`: both are unknown answers that
    do not drive the back-off. A 429 without Retry-After is written with `retry_after: 0`
    (a scenario's 429 always carries one)."""
    if outcome == OK:
        return "ok"
    if outcome in ("http_401", "http_403", "http_404"):
        return outcome[5:]
    if outcome == "http_429":
        return {"code": 429, "retry_after": max(0, math.ceil(retry_after_s or 0))}
    if outcome == "http_5xx":
        return str(status) if status in (500, 502, 503) else "500"
    if outcome == "timeout":
        return "timeout"
    if outcome == "connect":
        return "reset"
    if outcome == "graphql_error":
        return {"errors": "GraphQL error (recorded; the message is not kept)"}
    return "malformed"


def graphql_fault(fault: Any) -> Any:
    """`fault` as GraphQL takes it: it has no 404 (a 404 that is not a retirement is an
    unknown answer: `malformed`)."""
    return "malformed" if fault == "404" else fault


def health_json(h: Health) -> Json:
    return {
        "jobs": {"completed": h.completed, "failed": h.failed, "inProgress": h.in_progress,
                 "inQueue": h.in_queue, "retried": h.retried},
        "workers": {"idle": h.idle, "initializing": h.initializing, "ready": h.ready,
                    "running": h.running, "throttled": h.throttled, "unhealthy": h.unhealthy},
    }


def job_json(j: Job) -> Json | None:
    """One `/requests` item; None for a status the scenario format does not know."""
    if j.status not in JOB_STATUSES:
        return None
    out: Json = {"id": j.id, "status": j.status}
    for key, value in (("delayTime", j.delay_ms), ("executionTime", j.execution_ms),
                       ("workerId", j.worker_id)):
        if value is not None:
            out[key] = value
    if j.error is not None:
        out["error"] = mask(j.error)
    return out


def output_json(kind: str, size: int | None) -> Json:
    """How a COMPLETED job's `/status` output is scripted, from its kind and size (the
    content is never read): null, "", a filler string of its JSON size, or no key."""
    if kind == "null":
        return {"output": None}
    if kind == "empty":
        return {"output": ""}
    if kind == "value":
        return {"output": "x" * max(0, (size or 2) - 2)}
    if kind == "absent":
        return {"noOutput": True}
    return {}  # "lost": the error text says it


def item_json(c: EndpointConfig) -> Json:
    """The GraphQL `myself.endpoints` item of `c`, masked; None fields left out."""
    out: Json = {"id": c.id, "name": c.name, "gpuIds": c.gpu_ids,
                 "workersMin": c.workers_min, "workersMax": c.workers_max}
    for key, value in (("networkVolumeId", c.network_volume_id),
                       ("workersStandby", c.workers_standby), ("idleTimeout", c.idle_timeout),
                       ("scalerType", c.scaler_type), ("scalerValue", c.scaler_value),
                       ("locations", c.locations)):
        if value is not None:
            out[key] = value
    t = c.template
    if t is not None:
        tpl: Json = {"name": t.name, "imageName": placeholder(t.image_name),
                     "dockerArgs": placeholder(t.docker_args),
                     "env": [{"key": e.key, "value": env_value(e.key, e.value)}
                             for e in t.env]}
        if t.id:
            tpl = {"id": t.id, **tpl}
        if t.container_disk_gb is not None:
            tpl["containerDiskInGb"] = t.container_disk_gb
        out["template"] = tpl
    return out


def v2_endpoint_json(c: EndpointConfig) -> Json:
    """The v2-only fields of `c` as `v2.endpoint` overrides (v2 Endpoint names)."""
    out: Json = {}
    if c.timeout_ms is not None:
        out["timeout"] = c.timeout_ms
    if c.flashboot is not None:
        out["flashboot"] = c.flashboot
    if c.endpoint_type is not None:
        out["type"] = c.endpoint_type
    if c.network_volume_ids:
        out["networkVolumes"] = list(c.network_volume_ids)
    return out


def workers_json(w: Workers, t0: float) -> list[Json]:
    out = []
    for x in w.workers:
        if x.status not in V2_WORKER_STATUSES:
            continue
        item: Json = {"id": x.id, "status": x.status, "isStale": x.stale,
                      "gpuCount": x.gpu_count}
        if x.version is not None and x.version >= 1:
            item["version"] = x.version
        for key, value in (("gpuTypeId", x.gpu_type),
                           ("dataCenterId", x.datacenter), ("image", x.image)):
            if value is not None:
                item[key] = value
        if x.started_at is not None:
            item["started_s"] = round(x.started_at - t0, 3)
        out.append(item)
    return out


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def releases_json(r: Releases, t0: float) -> list[Json]:
    out = []
    for x in r.releases:
        if x.version < 1:
            continue
        item: Json = {"version": x.version,
                      "source": x.source if x.source in ("MANUAL", "GIT_BUILD") else "MANUAL",
                      "diff": [{"field": c.field, "old": scrub(_json_value(c.old)),
                                "new": scrub(_json_value(c.new))} for c in x.diff]}
        if x.build_id is not None:
            item["buildId"] = x.build_id
        if x.created_at is not None:
            item["created_s"] = round(x.created_at - t0, 3)
        out.append(item)
    return out


@dataclass
class _EndpointSeen:
    """What one cycle saw of one endpoint; None: not seen (the last seen value holds)."""

    rest: Any = None
    health: Json | None = None
    jobs: list[Json] | None = None
    workers: list[Json] | None = None
    version: int | None = None
    releases: list[Json] | None = None
    logs: dict[str, list[Json]] = field(default_factory=dict)
    billing: float | None = None


_ENDPOINT_FACTS = ("rest", "health", "jobs", "workers", "version", "releases", "billing")


@dataclass
class _Seen:
    """What one cycle saw, in the scenario's terms; None: unknown this cycle."""

    graphql: Any = None
    list_fault: Any = None  # the v2 endpoint listing's fault, when v2 lists the endpoints
    account: Json | None = None
    volumes: list[Json] | None = None
    pods: list[Json] | None = None
    listing: dict[str, Json] | None = None  # id -> GraphQL item
    v2_items: dict[str, Json] = field(default_factory=dict)  # id -> v2.endpoint overrides
    endpoints: dict[str, _EndpointSeen] = field(default_factory=dict)
    billing_mode: str | None = None
    availability: dict[str, Any] | None = None


@dataclass(frozen=True)
class Entry:
    """One incident of the recording run's timeline."""

    code: str
    endpoint_id: str | None
    raised_cycle: int
    resolved_cycle: int | None = None


class Recorder:
    """Collects cycles and writes them as one scenario (`scenario()`)."""

    def __init__(self, name: str, interval_s: float, monitor: Mapping[str, Any] | None = None,
                 *, description: str = "", secrets: Sequence[str] = ()) -> None:
        self.name = name
        self.interval_s = float(interval_s)
        self.monitor = dict(monitor or {})
        self.description = description
        # a short secret (a basic-auth password) would match ordinary text: those are
        # never written anyway, the guard is for the key and tokens
        self._secrets = [s for s in secrets if len(s) >= MIN_GUARDED_SECRET]
        self.seen: list[_Seen] = []
        self.incidents: list[Entry] = []
        self.t0: float | None = None
        self._log_lines: dict[tuple[str, str], set[tuple[Any, ...]]] = {}
        # what `/status` said of a finished job's output, by (endpoint, job): the sampler
        # reads a few a cycle, the scenario scripts it on every cycle that lists the job
        self._outputs: dict[tuple[str, str], Json] = {}

    @property
    def cycles(self) -> int:
        return len(self.seen)

    def add(self, result: CycleResult) -> None:
        """Take one cycle: its observation, its calls, and the incidents it changed."""
        obs = result.observation
        if self.t0 is None:
            self.t0 = obs.t
        k = len(self.seen) + 1
        self.seen.append(self._convert(obs, result.calls, result.listed, k))
        for tracked in obs.tracked_jobs:
            j = tracked.job
            if j.status == "COMPLETED" and j.output_kind is not None:
                self._outputs[(tracked.endpoint_id, j.id)] = output_json(j.output_kind,
                                                                         j.output_bytes)
        for inc in result.changes.raised:
            d = inc.diagnosis
            self.incidents.append(Entry(d.code, d.endpoint_id, k))
        for inc in result.changes.resolved:
            d = inc.diagnosis
            for i in range(len(self.incidents) - 1, -1, -1):
                x = self.incidents[i]
                if (x.code, x.endpoint_id) == (d.code, d.endpoint_id) and x.resolved_cycle is None:
                    self.incidents[i] = Entry(x.code, x.endpoint_id, x.raised_cycle, k)
                    break

    # -- one cycle ----------------------------------------------------------------------

    def _convert(self, obs: Observation, calls: Sequence[ProbeCall],
                 listed: Sequence[EndpointConfig] | None, k: int) -> _Seen:
        t0 = self.t0 if self.t0 is not None else obs.t
        seen = _Seen()
        gql = next((c for c in calls if c.probe == "graphql"), None)
        if obs.graphql_state == "retired" or (gql is not None and gql.outcome == "retired"):
            status = gql.status if gql is not None else 0
            seen.graphql = {"retired": status if status in RETIRED_STATUSES else 410}
        elif gql is not None:
            seen.graphql = graphql_fault(fault_of(gql.outcome, gql.status, gql.retry_after_s))
        if obs.control_plane == "rest" and obs.control_outcome != SKIPPED:
            retry = next((c.retry_after_s for c in calls if c.probe == "list-endpoints"),
                         None)
            seen.list_fault = fault_of(obs.control_outcome, obs.control_status, retry)
        if obs.account is not None:
            a = obs.account
            seen.account = {"clientBalance": a.balance, "currentSpendPerHr": a.spend_per_hr,
                            "spendLimit": a.spend_limit}
            seen.volumes = [scrub({"id": v.id, "name": v.name, "size": v.size_gb,
                                   **({"dataCenterId": v.datacenter} if v.datacenter else {})})
                            for v in a.network_volumes]
            seen.pods = [scrub({"id": p.id, "name": p.name, "desiredStatus": p.desired_status,
                                "costPerHr": p.cost_per_hr}) for p in a.pods]
            seen.billing_mode = a.billing_mode
        if listed is not None:
            seen.listing = {c.id: item_json(c) for c in listed}
            if obs.sources.get("endpoints") == "rest":
                seen.v2_items = {c.id: v2 for c in listed if (v2 := v2_endpoint_json(c))}
        calls_by = {(c.probe, c.endpoint_id): c for c in calls}
        for eid, sample in obs.endpoints.items():
            seen.endpoints[eid] = self._endpoint(sample, calls_by.get(("health", eid)),
                                                 obs, t0, k)
        if obs.gpu_stock is not None:
            seen.availability = {}
            for g in obs.gpu_stock:
                if g.availability not in AVAILABILITY:
                    continue
                dcs = {dc: a for dc, a in g.datacenters if a in AVAILABILITY}
                seen.availability[g.gpu_type] = (
                    {"availability": g.availability, "dataCenters": dcs} if dcs
                    else g.availability
                )
        return seen

    def _endpoint(self, s: EndpointSample, call: ProbeCall | None, obs: Observation,
                  t0: float, k: int) -> _EndpointSeen:
        out = _EndpointSeen()
        if s.health_outcome != SKIPPED:
            out.rest = fault_of(s.health_outcome, s.http_status,
                                call.retry_after_s if call is not None else None)
        if s.health is not None:
            out.health = health_json(s.health)
        if s.jobs is not None:
            out.jobs = [j for j in (job_json(x) for x in s.jobs) if j is not None]
        if s.workers is not None:
            out.workers = workers_json(s.workers, t0)
            out.version = _version(s.workers.endpoint_version)
        if s.releases is not None:
            out.releases = releases_json(s.releases, t0)
            out.version = _version(s.releases.endpoint_version) or out.version
        if s.logs is not None:
            out.logs = self._new_log_lines(s.endpoint_id, s.logs, t0, k)
        if obs.endpoint_spend is not None and s.endpoint_id in obs.endpoint_spend:
            out.billing = max(0.0, obs.endpoint_spend[s.endpoint_id])
        return out

    def _new_log_lines(self, eid: str, logs: Iterable[WorkerLogs], t0: float,
                       k: int) -> dict[str, list[Json]]:
        """The lines not written yet, per worker (a scenario's log only grows); a line is
        written no later than the cycle that saw it."""
        now = (k - 1) * self.interval_s
        out: dict[str, list[Json]] = {}
        for w in logs:
            known = self._log_lines.setdefault((eid, w.worker_id), set())
            for x in w.lines:
                key = (x.t, x.source, x.line)
                if key in known:
                    continue
                known.add(key)
                t = now if x.t is None else min(now, round(x.t - t0, 3))
                out.setdefault(w.worker_id, []).append({
                    "t": t, "source": x.source if x.source in ("container", "system")
                    else "container", "line": mask(x.line)})
        return out

    # -- the scenario ---------------------------------------------------------------------

    def _states(self) -> list[Json]:
        """Each cycle's full state: what was not seen is the last thing seen (before the
        first sighting: the first one)."""
        def first(pick: Callable[[_Seen], Any], default: Any) -> Any:
            return next((v for s in self.seen if (v := pick(s)) is not None), default)

        cur: Json = {
            "graphql": first(lambda s: s.graphql, "ok"),
            "list_fault": first(lambda s: s.list_fault, "ok"),
            "account": first(lambda s: s.account, {}),
            "networkVolumes": first(lambda s: s.volumes, []),
            "pods": first(lambda s: s.pods, []),
            "listing": first(lambda s: s.listing, None),
            "v2_items": first(lambda s: s.v2_items if s.listing is not None else None, {}),
            "billing_mode": first(lambda s: s.billing_mode, None),
            "availability": first(lambda s: s.availability, {}),
            "endpoints": {},
        }
        # each endpoint's facts before it was first seen: the first seen
        firsts: dict[str, Json] = {}
        for s in self.seen:
            for eid, e in s.endpoints.items():
                known = firsts.setdefault(eid, {})
                for key in _ENDPOINT_FACTS:
                    if key not in known and getattr(e, key) is not None:
                        known[key] = getattr(e, key)
        for eid, known in firsts.items():
            if "jobs" in known:
                known["jobs"] = [self._with_output(eid, j) for j in known["jobs"]]
        states = []
        for s in self.seen:
            cur = {**cur, "endpoints": dict(cur["endpoints"])}
            for key, value in (("graphql", s.graphql), ("list_fault", s.list_fault),
                               ("account", s.account), ("networkVolumes", s.volumes),
                               ("pods", s.pods), ("billing_mode", s.billing_mode)):
                if value is not None:
                    cur[key] = value
            if s.listing is not None:
                cur["listing"], cur["v2_items"] = s.listing, s.v2_items
            if s.availability is not None:
                cur["availability"] = {**cur["availability"], **s.availability}
            listing = cur["listing"] or {}
            for eid, e in s.endpoints.items():
                ep = cur["endpoints"].get(eid) or {
                    "rest": "ok", "health": {}, "jobs": [], "workers": None, "version": None,
                    "releases": None, "billing": None, **firsts.get(eid, {})}
                ep = {**ep, "logs": {}}
                for key in _ENDPOINT_FACTS:
                    if getattr(e, key) is not None:
                        ep[key] = getattr(e, key)
                if e.jobs is not None:
                    ep["jobs"] = [self._with_output(eid, j) for j in e.jobs]
                ep["logs"] = e.logs
                cur["endpoints"][eid] = ep
            for eid, ep in list(cur["endpoints"].items()):
                if eid not in s.endpoints and ep["logs"]:
                    cur["endpoints"][eid] = {**ep, "logs": {}}
            # an endpoint whose data plane answered while no listing was ever seen: listed
            # with its id alone (nothing read its configuration)
            if cur["listing"] is None:
                answered = {eid: {"id": eid} for eid, ep in cur["endpoints"].items()
                            if ep["rest"] != "404"}
                listing = answered
            states.append({**cur, "listed": dict(listing)})
        return states

    def _with_output(self, eid: str, job: Json) -> Json:
        output = self._outputs.get((eid, job["id"])) if job["status"] == "COMPLETED" else None
        return {**job, **output} if output else job

    def scenario(self) -> Json:
        """The recording as a scenario mapping (`load_scenario` loads its YAML dump)."""
        states = self._states()
        out: Json = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out["interval_s"] = self.interval_s
        if self.monitor:
            out["monitor"] = copy.deepcopy(self.monitor)
        if not states:
            return out
        s0 = states[0]
        out["account"] = _no_none(s0["account"])
        if s0["networkVolumes"]:
            out["networkVolumes"] = s0["networkVolumes"]
        if s0["pods"]:
            out["pods"] = s0["pods"]
        v2: Json = {}
        if self.t0 is not None:
            v2["epoch"] = iso_utc(self.t0)
        if s0["billing_mode"] in ("PREPAID", "POSTPAID"):
            v2["billing_mode"] = s0["billing_mode"]
        if s0["availability"]:
            v2["availability"] = s0["availability"]
        out["v2"] = v2  # the epoch at least: replay's clock starts there
        out["endpoints"] = [self._spec(eid, item, s0) for eid, item in s0["listed"].items()]
        first: Json = {"cycles": 1}
        if s0["graphql"] != "ok":
            first["graphql"] = s0["graphql"]
        if s0["list_fault"] != "ok":
            first["v2"] = {"faults": {"list-endpoints": s0["list_fault"]}}
        steps = [first]
        for prev, now in itertools.pairwise(states):
            change = self._diff(prev, now)
            if change:
                steps.append({"cycles": 1, **change})
            else:
                steps[-1]["cycles"] += 1
        out["steps"] = steps
        expect = self._expect()
        if expect:
            out["expect"] = expect
        return out

    def _spec(self, eid: str, item: Json, state: Json) -> Json:
        """An endpoint item as the scenario lists it: its GraphQL fields, then its data-plane
        state and v2 facts."""
        spec = copy.deepcopy(item)
        ep = state["endpoints"].get(eid)
        if ep is not None:
            spec["health"] = ep["health"]
            if ep["rest"] != "ok":
                spec["rest"] = ep["rest"]
            if ep["jobs"]:
                spec["jobs"] = ep["jobs"]
        v2 = self._endpoint_v2(None, ep, state["v2_items"].get(eid))
        if v2:
            spec["v2"] = v2
        return spec

    @staticmethod
    def _endpoint_v2(before: Json | None, ep: Json | None, item: Json | None,
                     item_before: Json | None = None) -> Json:
        out: Json = {}
        if item and item != item_before:
            out["endpoint"] = item
        if ep is None:
            return out
        for key in ("workers", "releases", "version", "billing"):
            value = ep[key]
            if value is not None and (before is None or before[key] != value):
                out[key] = value
        if ep["logs"]:
            out["logs"] = ep["logs"]
        return out

    def _diff(self, prev: Json, now: Json) -> Json:
        """The step that takes the world from `prev` to `now`; {} when nothing changed."""
        out: Json = {}
        account = {k: v for k, v in now["account"].items()
                   if prev["account"].get(k) != v and (v is not None or k in prev["account"])}
        if account:
            out["account"] = account
        if now["graphql"] != prev["graphql"]:
            out["graphql"] = now["graphql"]
        for key in ("networkVolumes", "pods"):
            if now[key] != prev[key]:
                out[key] = now[key]
        v2: Json = {}
        if now["billing_mode"] != prev["billing_mode"] and now["billing_mode"] in (
                "PREPAID", "POSTPAID"):
            v2["billing_mode"] = now["billing_mode"]
        avail = {k: v for k, v in now["availability"].items()
                 if prev["availability"].get(k) != v}
        if avail:
            v2["availability"] = avail
        if now["list_fault"] != prev["list_fault"]:
            v2["faults"] = {"list-endpoints": now["list_fault"]}
        if v2:
            out["v2"] = v2
        was, listed = prev["listed"], now["listed"]
        removed = [eid for eid in was if eid not in listed]
        added = [eid for eid in listed if eid not in was]
        if removed:
            out["remove_endpoints"] = removed
        if added:
            out["add_endpoints"] = [self._spec(eid, listed[eid], now) for eid in added]
        changes: Json = {}
        for eid, item in listed.items():
            if eid in added:
                continue
            change = self._endpoint_diff(eid, was[eid], item, prev, now)
            if change:
                changes[eid] = change
        if changes:
            out["endpoints"] = changes
        return out

    def _endpoint_diff(self, eid: str, item_before: Json, item: Json, prev: Json,
                       now: Json) -> Json:
        out: Json = {}
        config = {k: v for k, v in item.items() if item_before.get(k) != v}
        config.update({k: None for k in item_before if k not in item})
        if config:
            out["config"] = config
        ep, before = now["endpoints"].get(eid), prev["endpoints"].get(eid)
        if ep is not None:
            base = before or {"rest": "ok", "health": {}, "jobs": []}
            health = _delta(base["health"], ep["health"])
            if health:
                out["health"] = health  # health merges: the counts that changed
            if ep["rest"] != base["rest"]:
                out["rest"] = ep["rest"]
            if ep["jobs"] != base["jobs"]:
                out["jobs"] = ep["jobs"]
        v2 = self._endpoint_v2(before, ep, now["v2_items"].get(eid),
                               prev["v2_items"].get(eid))
        if v2:
            out["v2"] = v2
        return out

    def _expect(self) -> list[Json]:
        """`expect:` blocks: each incident active at the cycle it was raised in and inactive
        at the cycle it resolved in, as the recording run saw them."""
        at: dict[int, Json] = {}
        for inc in self.incidents:
            item: Json = {"code": inc.code}
            if inc.endpoint_id is not None:
                item["endpoint_id"] = inc.endpoint_id
            at.setdefault(inc.raised_cycle, {}).setdefault("active", []).append(item)
            if inc.resolved_cycle is not None:
                at.setdefault(inc.resolved_cycle, {}).setdefault("inactive", []).append(item)
        return [{"cycle": k, **at[k]} for k in sorted(at)]

    def dump(self) -> str:
        """The scenario as YAML text, with a header saying what it is."""
        data = self.scenario()
        text = yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=None,
                         width=100, allow_unicode=True)
        for secret in self._secrets:  # the last guard: a key echoed into a field
            text = text.replace(secret, MASKED)
        header = (
            f"# Recorded by `runpod-monitor record`: {self.cycles} cycles of "
            f"{self.interval_s:g} s.\n"
            "# No API key is in this file; env values of secret-looking keys and token-shaped\n"
            "# values are placeholders, log lines masked. Replay: runpod-monitor replay FILE\n"
        )
        return header + text


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """libyaml's emitter where installed (a long recording is megabytes); never anchors:
    a value written twice is written out twice."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _delta(before: Mapping[str, Any], now: Mapping[str, Any]) -> Json:
    """The keys of `now` whose values differ from `before`'s, nested mappings compared key
    by key (what a merging `health:` needs to say)."""
    out: Json = {}
    for key, value in now.items():
        was = before.get(key)
        if isinstance(value, Mapping) and isinstance(was, Mapping):
            inner = _delta(was, value)
            if inner:
                out[key] = inner
        elif was != value or key not in before:
            out[key] = value
    return out


def _version(v: int | None) -> int | None:
    return v if v is not None and v >= 1 else None


def _no_none(d: Mapping[str, Any]) -> Json:
    return {k: v for k, v in d.items() if v is not None}


# --- the run --------------------------------------------------------------------------------

def monitor_overrides(settings: Settings) -> Json:
    """The settings a replay needs to judge as the recording run did: the watched endpoints,
    thresholds that differ from the defaults, `track_requests`, the shard."""
    out: Json = {}
    if settings.endpoints:
        out["endpoints"] = list(settings.endpoints)
    defaults = Thresholds.model_validate({}).model_dump(mode="json")
    rules = {k: v for k, v in settings.rules.model_dump(mode="json").items()
             if defaults.get(k) != v}
    if rules:
        out["rules"] = rules
    runpod: Json = {}
    if not settings.runpod.track_requests:
        runpod["track_requests"] = False
    # the control plane (`runpod.control_plane`, where the v2 client has it) when not the
    # default: the replay asks the same APIs
    plane = getattr(settings.runpod, "control_plane", None)
    field_info = type(settings.runpod).model_fields.get("control_plane")
    if isinstance(plane, str) and field_info is not None and plane != field_info.default:
        runpod["control_plane"] = plane
    if runpod:
        out["runpod"] = runpod
    if settings.shard is not None:
        out["shard"] = settings.shard
    return out


class Clock(Protocol):
    """When cycles run: `start` gives the first cycle's time, `wait` holds until cycle k's."""

    def start(self) -> float: ...

    async def wait(self, cycle: int, t: float) -> None: ...


class WallClock:
    """The real clock: cycles on a fixed grid of `interval_s` from the first."""

    def start(self) -> float:
        return time.time()

    async def wait(self, cycle: int, t: float) -> None:
        delay = t - time.time()
        if delay > 0:
            await asyncio.sleep(delay)


@dataclass
class RecordResult:
    recorder: Recorder
    out: Path
    steps: int


Progress = Callable[[int, int, CycleResult], None]


def check_writable(out: Path) -> str | None:
    """Why `out` cannot be written (None when it can): tried before any probe is sent."""
    if out.is_dir():
        return f"{out} is a directory"
    parent = out.parent if str(out.parent) else Path(".")
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{out.name}.", delete=True):
            pass
    except OSError as exc:
        return f"cannot write in {parent}: {exc.strerror or exc}"
    return None


def write_atomic(out: Path, text: str) -> None:
    """Write `text` to `out` through a temporary file beside it (owner-only, 0600)."""
    parent = out.parent if str(out.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{out.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def default_name(t: float) -> str:
    return "recorded-" + time.strftime("%Y%m%d-%H%M%S", time.gmtime(t))


async def record(
    settings: Settings,
    cycles: int,
    interval_s: float,
    out: Path,
    *,
    clock: Clock | None = None,
    client: RunPodClient | None = None,
    progress: Progress | None = None,
    name: str | None = None,
) -> RecordResult:
    """Run `cycles` cycles of the normal pipeline `interval_s` apart and write them to `out`
    as a scenario; an interrupted run writes the cycles it finished. Nothing is sent to
    the alert sinks and nothing is stored."""
    if cycles < 1 or interval_s <= 0:
        raise ValueError("cycles must be >= 1 and interval_s > 0")
    clock = clock or WallClock()
    if client is None:
        limits = RUNPOD_LIMITS if interval_s >= LIMITS_MIN_INTERVAL_S else None
        client = client_for(settings, limits=limits)
    t0 = clock.start()
    recorder = Recorder(name or default_name(t0), interval_s, monitor_overrides(settings),
                        secrets=settings.secrets(),
                        description=f"Recorded from {cycles} cycles of {interval_s:g} s "
                                    f"starting {iso_utc(t0)}.")
    try:
        async with client:
            pipeline = build_pipeline(settings, client, sinks=[], interval_s=interval_s)
            for k in range(1, cycles + 1):
                t = t0 + (k - 1) * interval_s
                await clock.wait(k, t)
                result = await pipeline.cycle(k, t)
                recorder.add(result)
                if progress is not None:
                    progress(k, cycles, result)
    finally:
        if recorder.cycles:
            recorder.description = (f"Recorded from {recorder.cycles} cycles of "
                                    f"{interval_s:g} s starting {iso_utc(t0)}.")
            write_atomic(out, recorder.dump())
    steps = len(recorder.scenario().get("steps", []))
    return RecordResult(recorder, out, steps)


def run_until_signalled(coro: Any) -> Any:
    """`asyncio.run(coro)`, with SIGTERM cancelling it as Ctrl-C does (so the cycles
    recorded so far are written)."""
    async def main() -> Any:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        return await task

    return asyncio.run(main())
