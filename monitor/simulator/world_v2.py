"""The account as REST v2 shows it: scripted v2 facts, else views derived from the script.

Shapes follow spec/runpod-rest-v2.md (v2-spec `Endpoint`, `ListEndpointWorkersResponse`,
`ListEndpointReleasesResponse`, billing records, `GpuType`); docs/scenario-format-v2.md says
how each view is derived when a scenario has no v2 keys.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from monitor.simulator.gpus import DATA_CENTERS, SERVERLESS_POOLS, gpu_catalog
from monitor.simulator.scenario import (
    EndpointV2,
    Fault,
    V2Account,
    V2Billing,
    V2GpuAvailability,
    V2Quota,
    V2Release,
    V2Settings,
    V2Worker,
    deep_merge,
)

if TYPE_CHECKING:
    from monitor.simulator.world import EndpointState, Moment, StepState, World

ACTIVE = ("running", "idle", "initializing", "throttled", "unhealthy")
STATUS_OF = {"running": "RUNNING", "idle": "IDLE", "initializing": "INITIALIZING",
             "throttled": "THROTTLED", "unhealthy": "UNHEALTHY"}
# Container-affecting template fields: a change to one makes a release (v2-spec updateEndpoint).
CONTAINER_FIELDS = ("imageName", "dockerArgs", "containerDiskInGb", "env")
DEFAULT_WORKERS_MAX = 3
DEFAULT_TIMEOUT_MS = 600_000
CREATED_BEFORE_S = 30 * 86400  # endpoints without createdAt were made 30 days before t=0
VOLUME_USD_PER_GB_HOUR = 0.07 / 730  # network volume list price (billing.mdx)
POD_DISK_USD_PER_GB_HOUR = 0.20 / 730  # a stopped pod's volume disk
MAX_BILLING_BUCKETS = 2000
BUCKETS = ("hour", "day", "week", "month", "year")


@dataclass
class LogEntry:
    """One worker log line at simulated second `t`."""

    t: float
    source: str
    line: str


@dataclass
class AccountV2:
    """The account-wide v2 facts of one step."""

    quota: V2Quota | None = field(default_factory=V2Quota)
    billing_mode: str = "PREPAID"
    faults: dict[str, Fault] = field(default_factory=dict)
    availability: dict[str, V2GpuAvailability] = field(default_factory=dict)
    account_limits: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def initial(cls, settings: V2Settings) -> AccountV2:
        out = cls()
        out.apply(settings)
        return out

    def apply(self, change: V2Account) -> None:
        """Merge a `v2:` block: faults, availability and limits merge; the rest replaces."""
        if "quota" in change.model_fields_set:
            self.quota = change.quota
        if change.billing_mode is not None:
            self.billing_mode = change.billing_mode
        for route, fault in (change.faults or {}).items():
            self.faults[route] = fault
        for key, value in (change.availability or {}).items():
            self.availability[key] = (
                value if isinstance(value, V2GpuAvailability)
                else V2GpuAvailability(availability=value)
            )
        if change.account_limits is not None:
            self.account_limits = deep_merge(self.account_limits, change.account_limits)


@dataclass
class EndpointV2State:
    """One endpoint's scripted v2 facts during one step (None = derive it)."""

    endpoint: dict[str, Any] = field(default_factory=dict)
    version: int | None = None
    workers: list[V2Worker] | None = None
    releases: list[tuple[V2Release, float]] | None = None  # (release, created_s)
    logs: dict[str, list[LogEntry]] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict)
    billing: V2Billing | None = None

    def apply(self, change: EndpointV2, start_s: float) -> None:
        """Merge an endpoint's `v2:` block written at simulated second `start_s`."""
        if change.endpoint is not None:
            self.endpoint = deep_merge(self.endpoint, change.endpoint)
        if change.version is not None:
            self.version = change.version
        if change.workers is not None:
            self.workers = list(change.workers)
        if change.releases is not None:
            self.releases = [
                (r, r.created_s if r.created_s is not None else start_s) for r in change.releases
            ]
        for worker, lines in (change.logs or {}).items():  # a log only grows
            self.logs.setdefault(worker, []).extend([
                LogEntry(t=start_s, source="container", line=x) if isinstance(x, str)
                else LogEntry(t=x.t if x.t is not None else start_s, source=x.source,
                              line=x.line)
                for x in lines
            ])
        for route, fault in (change.faults or {}).items():
            self.faults[route] = fault
        if change.billing is not None:
            b = change.billing
            self.billing = b if isinstance(b, V2Billing) else V2Billing(gpu=float(b))


@dataclass
class _Release:
    version: int
    created_s: float
    image: str | None
    body: dict[str, Any]


@dataclass
class _Worker:
    body: dict[str, Any]
    started_s: float | None


def _split(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [p.strip() for p in str(value or "").split(",") if p.strip()]


def _env_map(env: Any) -> dict[str, str]:
    if isinstance(env, Mapping):
        return {str(k): str(v) for k, v in env.items()}
    out: dict[str, str] = {}
    for e in env or []:
        if isinstance(e, Mapping) and "key" in e:
            out[str(e["key"])] = "" if e.get("value") is None else str(e["value"])
    return out


def _hid(*parts: object) -> str:
    text = "/".join(str(p) for p in parts)
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:14]


def _round(x: float) -> float:
    return round(x, 6)


class V2World:
    """REST v2 views of a World at a Moment; derived views are computed from its states."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.settings = world.scenario.v2
        self.epoch = datetime.fromisoformat(self.settings.epoch.replace("Z", "+00:00"))
        self._releases: dict[str, list[_Release]] = {}
        # Step states are built once and never change: their rates are computed once.
        self._rate_cache: dict[int, dict[str, V2Billing]] = {}
        self._totals: dict[str, list[int]] = {}  # endpoint -> active workers per state

    # -- time ------------------------------------------------------------------------

    def wall(self, t: float) -> datetime:
        """The wall-clock time of simulated second `t`."""
        return self.epoch + timedelta(seconds=t)

    def iso(self, t: float) -> str:
        return self.wall(t).strftime("%Y-%m-%dT%H:%M:%SZ")

    def sim_s(self, when: datetime) -> float:
        return (when - self.epoch).total_seconds()

    def _when(self, stamp: str | None, default: float) -> float:
        """Simulated seconds of an RFC 3339 `stamp`, else `default`."""
        if stamp is None:
            return default
        return self.sim_s(datetime.fromisoformat(stamp.replace("Z", "+00:00")))

    def _index(self, m: Moment) -> int:
        return max(0, self.world.scenario.step_index(m.cycle))

    # -- endpoints -------------------------------------------------------------------

    def listed(self, m: Moment) -> list[tuple[str, EndpointState]]:
        return [(eid, ep) for eid, ep in self.world.state(m).endpoints.items() if ep.listed]

    def endpoint(self, endpoint_id: str, m: Moment, base_url: str) -> dict[str, Any] | None:
        """`GET /v2/serverless/{id}`: the GraphQL item in v2 names, then the v2 overrides."""
        ep = self.world.state(m).listed(endpoint_id)
        if ep is None:
            return None
        return self.render_endpoint(endpoint_id, ep, base_url)

    def render_endpoint(
        self, endpoint_id: str, ep: EndpointState, base_url: str
    ) -> dict[str, Any]:
        """One endpoint's v2 body from its state."""
        item = ep.item
        tpl = item.get("template") if isinstance(item.get("template"), Mapping) else {}
        assert isinstance(tpl, Mapping)
        gpu_ids = _split(item.get("gpuIds"))
        gpu: dict[str, Any] = {
            "pools": [g for g in gpu_ids if not g.startswith("-")],
            "count": item.get("gpuCount", 1),
            "allowedCudaVersions": _split(item.get("allowedCudaVersions")),
            "minCudaVersion": None,
        }
        excluded = [g[1:] for g in gpu_ids if g.startswith("-")]
        if excluded:
            gpu["excludedTypes"] = excluded
        scaler = str(item.get("scalerType") or "QUEUE_DELAY")
        scaler_value = item.get("scalerValue", 4)
        workers: dict[str, Any] = {
            "min": item.get("workersMin", 0),
            "max": item.get("workersMax", DEFAULT_WORKERS_MAX),
        }
        if scaler == "REQUEST_COUNT":
            scaling: dict[str, Any] = {"type": "REQUEST_COUNT", "requestCount": scaler_value}
        else:
            scaling = {"type": "QUEUE_DELAY", "queueDelay": scaler_value}
            workers["idleTimeout"] = item.get("idleTimeout", 5)
        volume = item.get("networkVolumeId")
        run = f"{base_url}/v2/{endpoint_id}"
        flash = str(item.get("flashBootType") or "OFF").upper()
        body: dict[str, Any] = {
            "id": endpoint_id,
            "name": item.get("name", endpoint_id),
            "type": "LOAD_BALANCER" if item.get("type") == "LOAD_BALANCER" else "QUEUE",
            "requestUrls": {
                "run": f"{run}/run", "runSync": f"{run}/runsync",
                "status": f"{run}/status/{{job_id}}", "stream": f"{run}/stream/{{job_id}}",
                "cancel": f"{run}/cancel/{{job_id}}", "retry": f"{run}/retry/{{job_id}}",
                "purgeQueue": f"{run}/purge-queue", "health": f"{run}/health",
            },
            "image": tpl.get("imageName"),
            "args": tpl.get("dockerArgs") or "",
            "disk": tpl.get("containerDiskInGb", 20),
            "ports": _split(tpl.get("ports")),
            "env": {**_env_map(tpl.get("env")), **_env_map(item.get("env"))},
            "registry": tpl.get("containerRegistryAuthId"),
            "gpu": gpu,
            "workers": workers,
            "scaling": scaling,
            "dataCenterIds": _split(item.get("locations")),
            "networkVolumes": [str(volume)] if volume else [],
            "timeout": item.get("executionTimeoutMs", DEFAULT_TIMEOUT_MS),
            "flashboot": flash if flash in ("FLASHBOOT", "PRIORITY_FLASHBOOT") else "OFF",
            "createdAt": item.get("createdAt") or self.iso(-CREATED_BEFORE_S),
        }
        return deep_merge(body, ep.v2.endpoint)

    # -- releases --------------------------------------------------------------------

    def _derived_releases(self, endpoint_id: str) -> list[_Release]:
        """Version 1 at creation, then one release per step that changed a container field."""
        cached = self._releases.get(endpoint_id)
        if cached is not None:
            return cached
        out: list[_Release] = []
        prev: dict[str, Any] | None = None
        for st in self.world.states:
            ep = st.endpoints.get(endpoint_id)
            if ep is None or not ep.listed:
                continue
            tpl = ep.item.get("template") if isinstance(ep.item.get("template"), Mapping) else {}
            assert isinstance(tpl, Mapping)
            now = {k: copy.deepcopy(tpl.get(k)) for k in CONTAINER_FIELDS}
            image = now["imageName"]
            if prev is None:
                created = -CREATED_BEFORE_S
                body = self._release_body(endpoint_id, 1, created, [])
                out.append(_Release(1, created, image, body))
            elif now != prev:
                diff = [{"field": f"template.{k}", "old": prev[k], "new": now[k]}
                        for k in CONTAINER_FIELDS if now[k] != prev[k]]
                v = len(out) + 1
                out.append(_Release(v, st.start_s, image,
                                    self._release_body(endpoint_id, v, st.start_s, diff)))
            prev = now
        self._releases[endpoint_id] = out
        return out

    def _release_body(
        self, endpoint_id: str, version: int, created_s: float, diff: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return {"id": _hid(endpoint_id, "release", version)[:8], "version": version,
                "source": "MANUAL", "buildId": None, "createdByUserId": None,
                "createdAt": self.iso(created_s), "diff": diff}

    def _releases_now(self, endpoint_id: str, ep: EndpointState, m: Moment) -> list[_Release]:
        if ep.v2.releases is not None:
            return [
                _Release(r.version, self._when(r.createdAt, created), None, {
                    "id": r.id or _hid(endpoint_id, "release", r.version)[:8],
                    "version": r.version, "source": r.source, "buildId": r.buildId,
                    "createdByUserId": None, "createdAt": r.createdAt or self.iso(created),
                    "diff": [d.model_dump() for d in r.diff],
                })
                for r, created in ep.v2.releases
            ]
        return [r for r in self._derived_releases(endpoint_id) if r.created_s <= m.now_s]

    def endpoint_version(self, endpoint_id: str, ep: EndpointState, m: Moment) -> int:
        if ep.v2.version is not None:
            return ep.v2.version
        releases = self._releases_now(endpoint_id, ep, m)
        return max((r.version for r in releases), default=1)

    def releases(self, endpoint_id: str, m: Moment) -> dict[str, Any] | None:
        """`GET /v2/serverless/{id}/releases`: newest first, with the rollout summary."""
        ep = self.world.state(m).listed(endpoint_id)
        if ep is None:
            return None
        version = self.endpoint_version(endpoint_id, ep, m)
        workers = [w.body for w in self._workers(endpoint_id, ep, m)]
        on_latest = sum(1 for w in workers if w["version"] == version)
        out = []
        for r in sorted(self._releases_now(endpoint_id, ep, m), key=lambda r: -r.version):
            body = dict(r.body)
            body["workerCount"] = sum(1 for w in workers if w["version"] == r.version)
            out.append(body)
        total = len(workers)
        return {
            "endpointVersion": version,
            "rollout": {
                "inProgress": any(w["version"] != version for w in workers),
                "workersOnLatest": on_latest,
                "workersTotal": total,
                "percentOnLatest": round(100 * on_latest / total) if total else 100,
            },
            "releases": out,
        }

    # -- workers ---------------------------------------------------------------------

    def workers(self, endpoint_id: str, m: Moment) -> dict[str, Any] | None:
        """`GET /v2/serverless/{id}/workers`: scripted workers, else synthesized from /health."""
        ep = self.world.state(m).listed(endpoint_id)
        if ep is None:
            return None
        bodies = [w.body for w in self._workers(endpoint_id, ep, m)]
        summary = {k: 0 for k in ACTIVE}
        for w in bodies:
            summary[w["status"].lower()] += 1
        return {
            "endpointVersion": self.endpoint_version(endpoint_id, ep, m),
            "summary": {**summary, "total": len(bodies)},
            "workers": bodies,
        }

    def worker_ids(self, endpoint_id: str, m: Moment) -> set[str]:
        ep = self.world.state(m).listed(endpoint_id)
        if ep is None:
            return set()
        return {w.body["id"] for w in self._workers(endpoint_id, ep, m)}

    def _placement(self, ep: EndpointState, st: StepState) -> tuple[str, str]:
        pools = [g for g in _split(ep.item.get("gpuIds")) if not g.startswith("-")]
        gpu = next((SERVERLESS_POOLS[p][0] for p in pools if p in SERVERLESS_POOLS),
                   "NVIDIA GeForce RTX 4090")
        dcs = _split(ep.item.get("locations"))
        volume = ep.item.get("networkVolumeId")
        for v in st.network_volumes if volume else []:
            if v.get("id") == volume and v.get("dataCenterId"):
                dcs = [str(v["dataCenterId"])]
        return gpu, (dcs[0] if dcs else DATA_CENTERS[0]["id"])

    def _version_at(self, endpoint_id: str, ep: EndpointState, t: float | None,
                    m: Moment) -> int:
        releases = self._releases_now(endpoint_id, ep, m)
        if t is None or not releases:
            return self.endpoint_version(endpoint_id, ep, m)
        older = [r.version for r in releases if r.created_s <= t]
        return max(older) if older else min(r.version for r in releases)

    def _image_of(self, endpoint_id: str, ep: EndpointState, version: int, m: Moment) -> Any:
        for r in self._releases_now(endpoint_id, ep, m):
            if r.version == version and r.image is not None:
                return r.image
        tpl = ep.item.get("template")
        return tpl.get("imageName") if isinstance(tpl, Mapping) else None

    def _workers(self, endpoint_id: str, ep: EndpointState, m: Moment) -> list[_Worker]:
        current = self.endpoint_version(endpoint_id, ep, m)
        gpu, dc = self._placement(ep, self.world.state(m))
        out: list[_Worker] = []
        if ep.v2.workers is not None:
            for w in ep.v2.workers:
                placed = w.status != "THROTTLED"
                started = w.started_s
                if w.startedAt is not None:
                    started = self._when(w.startedAt, 0.0)
                elif started is None and placed:
                    started = self.world.state(m).start_s
                version = w.version if w.version is not None else current
                out.append(self._worker_body(
                    w.id, w.status, version, current, started, m,
                    gpu=w.gpuTypeId if w.gpuTypeId is not None else (gpu if placed else None),
                    dc=w.dataCenterId if w.dataCenterId is not None else (dc if placed else None),
                    image=w.image or self._image_of(endpoint_id, ep, version, m),
                    gpu_count=w.gpuCount, stale=w.isStale, started_at=w.startedAt,
                ))
            return out
        statuses = [STATUS_OF[k] for k in ACTIVE for _ in range(ep.health["workers"].get(k, 0))]
        for slot, status in enumerate(statuses):
            first = self._slot_start(endpoint_id, slot, m)
            began = self.world.states[first].start_s if first > 0 else 0.0
            version = self._version_at(endpoint_id, ep, began, m)
            placed = status != "THROTTLED"
            out.append(self._worker_body(
                _hid(endpoint_id, slot, first), status, version, current,
                began if placed else None, m,
                gpu=gpu if placed else None, dc=dc if placed else None,
                image=self._image_of(endpoint_id, ep, version, m), gpu_count=int(
                    ep.item.get("gpuCount", 1) or 1),
                stale=None, started_at=None,
            ))
        return out

    def _slot_start(self, endpoint_id: str, slot: int, m: Moment) -> int:
        """The first state of the unbroken run, ending now, with more than `slot` workers."""
        totals = self._totals.get(endpoint_id)
        if totals is None:
            totals = self._totals[endpoint_id] = [
                sum(ep.health["workers"].get(k, 0) for k in ACTIVE)
                if ep is not None and ep.listed else 0
                for ep in (st.endpoints.get(endpoint_id) for st in self.world.states)
            ]
        first = self._index(m)
        while first > 0 and totals[first - 1] > slot:
            first -= 1
        return first

    def _worker_body(
        self, worker_id: str, status: str, version: int, current: int, started: float | None,
        m: Moment, *, gpu: str | None, dc: str | None, image: Any, gpu_count: int,
        stale: bool | None, started_at: str | None,
    ) -> _Worker:
        up = status in ("RUNNING", "IDLE", "UNHEALTHY") and started is not None
        return _Worker({
            "id": worker_id,
            "status": status,
            "isStale": stale if stale is not None else version != current,
            "version": version,
            "image": image,
            "gpuCount": gpu_count,
            "gpuTypeId": gpu,
            "dataCenterId": dc,
            "startedAt": started_at or (self.iso(started) if started is not None else None),
            "uptimeSeconds": max(0, int(m.now_s - started)) if up and started is not None
            else None,
        }, started)

    # -- logs ------------------------------------------------------------------------

    def logs(self, endpoint_id: str, worker_id: str, m: Moment) -> list[LogEntry] | None:
        """Every line of a worker the clock has reached, oldest first; None: no such worker."""
        ep = self.world.state(m).listed(endpoint_id)
        if ep is None:
            return None
        workers = {w.body["id"]: w for w in self._workers(endpoint_id, ep, m)}
        scripted = ep.v2.logs.get(worker_id)
        if worker_id not in workers and scripted is None:
            return None
        lines: list[LogEntry] = []
        w = workers.get(worker_id)
        if scripted is None and w is not None and w.started_s is not None:
            lines.append(LogEntry(t=w.started_s, source="system", line="start container"))
        lines += scripted or []
        if w is not None:
            lines += ep.v2.logs.get("*", [])
        return sorted((x for x in lines if x.t <= m.now_s), key=lambda x: x.t)

    # -- billing ---------------------------------------------------------------------

    def _rates(self, st: StepState) -> dict[str, V2Billing]:
        """USD/h per listed endpoint: scripted, else the account's serverless spend split."""
        cached = self._rate_cache.get(id(st))
        if cached is None:
            cached = self._rate_cache[id(st)] = self._compute_rates(st)
        return cached

    def _compute_rates(self, st: StepState) -> dict[str, V2Billing]:
        listed = {eid: ep for eid, ep in st.endpoints.items() if ep.listed}
        out = {eid: ep.v2.billing for eid, ep in listed.items() if ep.v2.billing is not None}
        rest = [eid for eid in listed if eid not in out]
        spend = float(st.account.get("currentSpendPerHr") or 0.0)
        share = max(0.0, spend - self._pod_rate(st) - self._storage_rate(st)
                    - sum(b.total for b in out.values()))
        counts = {eid: sum(listed[eid].health["workers"].get(k, 0) for k in ACTIVE)
                  for eid in rest}
        total = sum(counts.values())
        for eid in rest:
            out[eid] = V2Billing(gpu=share * counts[eid] / total if total else 0.0)
        return out

    @staticmethod
    def _pod_rate(st: StepState) -> float:
        return sum(float(p.get("costPerHr") or 0.0) for p in st.pods
                   if p.get("desiredStatus") == "RUNNING")

    @staticmethod
    def _storage_rate(st: StepState) -> float:
        return sum(float(v.get("size") or 0) for v in st.network_volumes) * VOLUME_USD_PER_GB_HOUR

    def _spans(self, a: float, b: float, m: Moment) -> Iterable[tuple[StepState, float]]:
        """(state, seconds) pairs covering simulated [a, b) up to now; before t=0 the first
        state held, after the end the last holds."""
        b = min(b, m.now_s)
        states = self.world.states
        for i, st in enumerate(states):
            lo = -float("inf") if i == 0 else st.start_s
            hi = states[i + 1].start_s if i + 1 < len(states) else float("inf")
            s = max(a, lo)
            e = min(b, hi)
            if e > s:
                yield st, e - s

    def buckets(self, size: str, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        out: list[tuple[datetime, datetime]] = []
        t = snap_down(start, size)
        while t < end:
            n = step(t, size)
            out.append((t, n))
            t = n
            if len(out) > MAX_BILLING_BUCKETS:
                raise ValueError(f"the window spans more than {MAX_BILLING_BUCKETS} buckets")
        return out

    def billing_serverless(
        self, windows: list[tuple[datetime, datetime]], m: Moment, serverless_id: str | None
    ) -> list[dict[str, Any]]:
        records = []
        for a, b in windows:
            parts: dict[str, list[float]] = {}
            for st, secs in self._spans(self.sim_s(a), self.sim_s(b), m):
                for eid, rate in self._rates(st).items():
                    acc = parts.setdefault(eid, [0.0, 0.0, 0.0, 0.0])
                    for i, v in enumerate((rate.gpu, rate.cpu, rate.disk, rate.fee)):
                        acc[i] += v * secs / 3600
            for eid, (g, c, d, f) in parts.items():
                if serverless_id is not None and eid != serverless_id:
                    continue
                records.append({
                    "startTime": _z(a), "endTime": _z(b), "serverlessId": eid,
                    "totalAmount": _round(g + c + d + f), "gpuAmount": _round(g),
                    "cpuAmount": _round(c), "diskAmount": _round(d), "feeAmount": _round(f),
                })
        return records

    def billing_account(
        self, windows: list[tuple[datetime, datetime]], m: Moment
    ) -> list[dict[str, Any]]:
        records = []
        for a, b in windows:
            acc = dict.fromkeys(ACCOUNT_AMOUNTS, 0.0)
            for st, secs in self._spans(self.sim_s(a), self.sim_s(b), m):
                h = secs / 3600
                for rate in self._rates(st).values():
                    acc["serverlessGpuAmount"] += rate.gpu * h
                    acc["serverlessCpuAmount"] += rate.cpu * h
                    acc["serverlessDiskAmount"] += rate.disk * h
                    acc["serverlessFeeAmount"] += rate.fee * h
                acc["podGpuAmount"] += self._pod_rate(st) * h
                acc["podDiskAmount"] += sum(
                    float(p.get("volumeInGb") or 0) * POD_DISK_USD_PER_GB_HOUR
                    for p in st.pods if p.get("desiredStatus") == "EXITED") * h
                acc["storageStandardAmount"] += self._storage_rate(st) * h
            acc["totalAmount"] = sum(v for k, v in acc.items() if k != "totalAmount")
            records.append({"startTime": _z(a), "endTime": _z(b),
                            **{k: _round(v) for k, v in acc.items()}})
        return records

    def billing_pods(
        self, windows: list[tuple[datetime, datetime]], m: Moment, pod_id: str | None
    ) -> list[dict[str, Any]]:
        records = []
        for a, b in windows:
            parts: dict[str, list[float]] = {}
            for st, secs in self._spans(self.sim_s(a), self.sim_s(b), m):
                for p in st.pods:
                    acc = parts.setdefault(str(p.get("id")), [0.0, 0.0])
                    if p.get("desiredStatus") == "RUNNING":
                        acc[0] += float(p.get("costPerHr") or 0.0) * secs / 3600
                    elif p.get("desiredStatus") == "EXITED":
                        acc[1] += (float(p.get("volumeInGb") or 0) * POD_DISK_USD_PER_GB_HOUR
                                   * secs / 3600)
            for pid, (g, d) in parts.items():
                if pod_id is None or pid == pod_id:
                    records.append({"startTime": _z(a), "endTime": _z(b), "podId": pid,
                                    "totalAmount": _round(g + d), "gpuAmount": _round(g),
                                    "cpuAmount": 0.0, "diskAmount": _round(d)})
        return records

    def billing_volumes(
        self, windows: list[tuple[datetime, datetime]], m: Moment, volume_id: str | None
    ) -> list[dict[str, Any]]:
        records = []
        for a, b in windows:
            parts: dict[str, list[float]] = {}
            for st, secs in self._spans(self.sim_s(a), self.sim_s(b), m):
                for v in st.network_volumes:
                    acc = parts.setdefault(str(v.get("id")), [0.0, 0.0])
                    amount = float(v.get("size") or 0) * VOLUME_USD_PER_GB_HOUR * secs / 3600
                    acc[1 if v.get("type") == "HIGH_PERFORMANCE" else 0] += amount
            for vid, (std, hp) in parts.items():
                if volume_id is None or vid == volume_id:
                    records.append({"startTime": _z(a), "endTime": _z(b), "networkVolumeId": vid,
                                    "totalAmount": _round(std + hp),
                                    "standardAmount": _round(std),
                                    "highPerformanceAmount": _round(hp)})
        return records

    # -- the slow facts --------------------------------------------------------------

    def network_volumes(self, m: Moment) -> list[dict[str, Any]]:
        out = []
        for v in self.world.state(m).network_volumes:
            body = {"id": v.get("id"), "name": v.get("name"), "size": v.get("size"),
                    "dataCenter": v.get("dataCenterId"), "type": v.get("type") or "STANDARD"}
            extra = v.get("v2")
            out.append(deep_merge(body, extra) if isinstance(extra, Mapping) else body)
        return out

    def pods(self, m: Moment) -> list[dict[str, Any]]:
        out = []
        for p in self.world.state(m).pods:
            status = str(p.get("desiredStatus") or "RUNNING")
            running = status == "RUNNING"
            machine = p.get("machine") if isinstance(p.get("machine"), Mapping) else {}
            assert isinstance(machine, Mapping)
            gpu_type = p.get("gpuTypeId") or machine.get("gpuTypeId") or "NVIDIA GeForce RTX 4090"
            mounts: dict[str, Any] = {}
            if p.get("volumeInGb"):
                mounts["persistent"] = {"size": p.get("volumeInGb"),
                                        "path": p.get("volumeMountPath") or "/workspace"}
            if p.get("networkVolumeId"):
                mounts["network"] = [{"volumeId": p["networkVolumeId"],
                                      "path": p.get("volumeMountPath") or "/workspace"}]
            body = {
                "id": p.get("id"), "name": p.get("name"), "status": status,
                "cost": float(p.get("costPerHr") or 0.0) if running else 0.0,
                "gpu": {"id": gpu_type, "count": p.get("gpuCount", 1)},
                "image": p.get("imageName"), "mounts": mounts,
                "dataCenterId": p.get("dataCenterId") or DATA_CENTERS[0]["id"],
                "template": p.get("templateId"),
                "createdAt": p.get("createdAt") or self.iso(-CREATED_BEFORE_S),
                "startedAt": self.iso(0) if running else None,
                "runtime": {"uptime": int(m.now_s) + int(p.get("uptimeSeconds") or 0),
                            "gpus": [], "ports": []} if running else None,
                "cloud": "SECURE",
            }
            out.append(deep_merge(body, p["v2"]) if isinstance(p.get("v2"), Mapping) else body)
        return out

    def templates(self, m: Moment) -> list[dict[str, Any]]:
        seen: dict[str, dict[str, Any]] = {}
        for _, ep in self.listed(m):
            tpl = ep.item.get("template")
            if not isinstance(tpl, Mapping) or not tpl.get("id") or tpl["id"] in seen:
                continue
            seen[str(tpl["id"])] = {
                "id": tpl["id"], "name": tpl.get("name"), "image": tpl.get("imageName"),
                "args": tpl.get("dockerArgs") or "", "disk": tpl.get("containerDiskInGb", 20),
                "mounts": [], "ports": _split(tpl.get("ports")), "env": _env_map(tpl.get("env")),
                "registry": tpl.get("containerRegistryAuthId"), "serverless": True,
                "public": False, "category": "NVIDIA", "startSsh": False,
                "startJupyter": False, "allowedCudaVersions": [],
            }
        return list(seen.values())

    def _availability(self, gpu: Mapping[str, Any], pool: str | None,
                      st: StepState) -> V2GpuAvailability:
        scripted = st.v2.availability
        for key in (gpu.get("id"), pool):
            if key is not None and key in scripted:
                return scripted[key]
        lowest = gpu.get("lowestPrice") if isinstance(gpu.get("lowestPrice"), Mapping) else {}
        assert isinstance(lowest, Mapping)
        stock = str(lowest.get("stockStatus") or "None").upper()
        return V2GpuAvailability(availability=stock if stock in AVAIL else "NONE")  # type: ignore[arg-type]

    def gpus(self, m: Moment, *, availability: bool) -> list[dict[str, Any]]:
        """`GET /v2/catalog/gpus`: the built-in catalog in v2 shape (+ stock when asked)."""
        st = self.world.state(m)
        pool_of = {g: p for p, gs in SERVERLESS_POOLS.items() for g in gs}
        out = []
        for g in gpu_catalog(st.gpu_types):
            if g.get("id") == "unknown":
                continue
            pool = pool_of.get(str(g.get("id")))
            price: dict[str, Any] = {"secure": g.get("securePrice"),
                                     "community": g.get("communityPrice")}
            if pool is not None and g.get("securePrice") is not None:
                price["serverless"] = round(float(g["securePrice"]) * 1.4, 2)
            body: dict[str, Any] = {
                "id": g.get("id"), "name": g.get("displayName"), "pool": pool,
                "manufacturer": g.get("manufacturer", "Nvidia"), "memory": g.get("memoryInGb"),
                "secure": bool(g.get("secureCloud")), "community": bool(g.get("communityCloud")),
                "price": price,
                "maxCount": {"secure": g.get("maxGpuCountSecureCloud", 0),
                             "community": g.get("maxGpuCountCommunityCloud", 0)},
            }
            if availability:
                a = self._availability(g, pool, st)
                body["availability"] = a.availability
                dcs = self._dc_availability(a)
                if any(v != "NONE" for v in dcs.values()):
                    body["dataCenters"] = [{"id": dc["id"], "name": dc["name"],
                                            "availability": dcs[dc["id"]]}
                                           for dc in DATA_CENTERS if dc["id"] in dcs]
                body["cudaVersions"] = [{"version": "12.8",
                                         "available": a.availability != "NONE"}]
            out.append(body)
        return out

    @staticmethod
    def _dc_availability(a: V2GpuAvailability) -> dict[str, str]:
        if a.dataCenters is not None:
            return dict(a.dataCenters)
        return {dc["id"]: a.availability for dc in DATA_CENTERS}

    def datacenters(self, m: Moment, *, gpu_availability: bool) -> list[dict[str, Any]]:
        gpus = self.gpus(m, availability=True) if gpu_availability else []
        st = self.world.state(m)
        pool_of = {g: p for p, gs in SERVERLESS_POOLS.items() for g in gs}
        out = []
        for dc in DATA_CENTERS:
            body: dict[str, Any] = {
                "id": dc["id"], "name": dc["name"], "region": dc["location"],
                "globalNetwork": False, "networkVolumeTypes": ["STANDARD"], "compliance": [],
            }
            if gpu_availability:
                rows = []
                for g in gpus:
                    a = self._availability(g, pool_of.get(str(g["id"])), st)
                    rows.append({"id": g["id"], "name": g["name"],
                                 "availability": self._dc_availability(a).get(dc["id"], "NONE")})
                body["gpuAvailability"] = rows
            out.append(body)
        return out

    def balance(self, m: Moment) -> dict[str, Any]:
        st = self.world.state(m)
        return {"balanceAmount": float(st.account.get("clientBalance") or 0.0),
                "billingMode": st.v2.billing_mode}

    def account_limits(self, m: Moment) -> dict[str, Any]:
        """Inner field names are UNCONFIRMED (spec section 2.1); a scenario can override."""
        st = self.world.state(m)
        acct = st.account
        workers_max = sum(int(ep.item.get("workersMax", DEFAULT_WORKERS_MAX) or 0)
                          for _, ep in self.listed(m))
        body = {
            "spendRate": {"limit": acct.get("spendLimit"),
                          "current": acct.get("currentSpendPerHr")},
            "serverlessWorkers": {"limit": acct.get("maxServerlessConcurrency"),
                                  "current": workers_max},
        }
        return deep_merge(body, st.v2.account_limits)

    def account(self, m: Moment) -> dict[str, Any]:
        acct = self.world.state(m).account
        return {"id": acct.get("id"), "email": acct.get("email")}


AVAIL = ("NONE", "LOW", "MEDIUM", "HIGH")
ACCOUNT_AMOUNTS = (
    "totalAmount", "podGpuAmount", "podCpuAmount", "podDiskAmount", "serverlessGpuAmount",
    "serverlessCpuAmount", "serverlessDiskAmount", "serverlessFeeAmount",
    "storageStandardAmount", "storageHighPerformanceAmount", "endpointAmount",
    "clusterGpuAmount", "clusterDiskAmount", "clusterNetworkingAmount",
)


def _z(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def snap_down(t: datetime, size: str) -> datetime:
    """The start of the `size` bucket holding `t` (weeks start on Monday)."""
    t = t.astimezone(UTC)
    if size == "hour":
        return t.replace(minute=0, second=0, microsecond=0)
    day = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if size == "day":
        return day
    if size == "week":
        return day - timedelta(days=day.weekday())
    if size == "month":
        return day.replace(day=1)
    return day.replace(month=1, day=1)


def step(t: datetime, size: str, n: int = 1) -> datetime:
    """`t` moved by `n` buckets of `size` (`t` on a bucket start)."""
    if size == "hour":
        return t + timedelta(hours=n)
    if size == "day":
        return t + timedelta(days=n)
    if size == "week":
        return t + timedelta(weeks=n)
    months = t.month - 1 + n * (12 if size == "year" else 1)
    return t.replace(year=t.year + months // 12, month=months % 12 + 1)


def snap_up(t: datetime, size: str) -> datetime:
    down = snap_down(t, size)
    return down if down == t else step(down, size)
