"""The pure half of guarded fixes: which proposals the incidents call for, and whether a
fresh read of RunPod still allows one. No I/O: the engine reads and writes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from model.observation import Observation
from monitor.actions.model import Call, Kind, Proposal, proposal_id
from monitor.config import ActionsSettings
from monitor.state.incidents import Incident

# Where spend_guard reads an incident's cost so far (USD), first found wins: a rule that
# measures it puts one of these in its evidence (docs/actions.md, "Cost").
COST_KEYS = ("cost_usd", "cost_so_far_usd", "spend_usd", "gpu_cost_usd", "wasted_usd")
# job_overrun's evidence: `job_id`, then the other overrunning jobs as job_2, job_3, ...
MAX_JOBS_CANCELLED = 5
GUARDED_CODES = frozenset({"crash_loop", "job_failures"})


@dataclass(frozen=True, slots=True)
class Fresh:
    """What the engine read again just before acting; None: not read, or the read failed
    (`error` then says why)."""

    job_status: str | None = None
    in_queue: int | None = None
    workers: tuple[int, int] | None = None  # (min, max)
    error: str | None = None


def enabled(settings: ActionsSettings, kind: Kind) -> bool:
    return bool(getattr(settings, kind).enabled)


def auto(settings: ActionsSettings, kind: Kind) -> bool:
    switch = getattr(settings, kind)
    return bool(switch.enabled and switch.auto)


def incident_cost(inc: Incident, obs: Observation, usd_per_worker_hr: float | None,
                  t: float) -> tuple[float, str] | None:
    """(USD so far, how it was found) for an incident, or None when unknown: the evidence's
    cost (unless it is a list-price estimate and `usd_per_worker_hr` is set), else v2
    billing's USD/h for the endpoint x the incident's duration, else billed workers
    (`Health.workers_billed`, as the rules' cost_so_far counts them) x `usd_per_worker_hr`
    x duration. Unknown never trips the guard."""
    ev = inc.diagnosis.evidence
    basis = ev.get("cost_basis")
    # the operator's own price beats the rules' list-price estimate (discounts are not in
    # list prices); a figure from v2 billing is what RunPod charged, and stands
    list_priced = isinstance(basis, str) and not basis.startswith("v2 billing")
    for key in () if list_priced and usd_per_worker_hr is not None else COST_KEYS:
        value = ev.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            return float(value), f"evidence {key}"
    eid = inc.diagnosis.endpoint_id
    hours = max(0.0, t - inc.since) / 3600
    if eid is None:
        return None
    rate = (obs.endpoint_spend or {}).get(eid)
    if rate is not None and rate >= 0:
        return rate * hours, f"v2 billing {rate:.4g} USD/h x {hours:.2f} h"
    sample = obs.endpoints.get(eid)
    health = None if sample is None else sample.health
    if health is None or usd_per_worker_hr is None:
        return None
    workers = health.workers_billed
    cost = workers * usd_per_worker_hr * hours
    return cost, f"{workers} workers x {usd_per_worker_hr:g} USD/h x {hours:.2f} h"


def propose(settings: ActionsSettings, active: Sequence[Incident],
            resolved: Sequence[Incident], obs: Observation, t: float) -> list[Proposal]:
    """The proposals the incidents call for now (the engine keeps each id once)."""
    out: list[Proposal] = []
    if enabled(settings, "cancel_overrun"):
        for inc in active:
            out += _cancels(inc, t)
    if enabled(settings, "purge_after_crash_loop"):
        for inc in resolved:
            p = _purge(inc, obs, settings.purge_after_crash_loop.min_queued, t)
            if p is not None:
                out.append(p)
    if enabled(settings, "spend_guard"):
        guard = settings.spend_guard
        for inc in active:
            p = _spend_guard(inc, obs, guard.max_usd, guard.usd_per_worker_hr, t)
            if p is not None:
                out.append(p)
    return out


def _cancels(inc: Incident, t: float) -> list[Proposal]:
    d = inc.diagnosis
    if d.code != "job_overrun" or d.endpoint_id is None:
        return []
    ev = d.evidence
    ids = [ev.get("job_id"), *(ev.get(f"job_{i}") for i in range(2, MAX_JOBS_CANCELLED + 1))]
    return [_cancel(inc, j, t) for j in dict.fromkeys(ids) if isinstance(j, str) and j]


def _cancel(inc: Incident, job_id: str, t: float) -> Proposal:
    d = inc.diagnosis
    eid = d.endpoint_id or ""
    return Proposal(
        id=proposal_id("cancel_overrun", eid, job_id), kind="cancel_overrun",
        endpoint_id=eid, job_id=job_id, incident=(d.code, inc.since),
        summary=f"cancel the overrunning job {job_id} on {d.endpoint_name or eid}",
        precondition={"job_status": "IN_PROGRESS"},
        call=Call("POST", "rest", f"/{eid}/cancel/{quote(job_id, safe='')}"),
        created_t=t,
    )


def _purge(inc: Incident, obs: Observation, min_queued: int, t: float) -> Proposal | None:
    d = inc.diagnosis
    if d.code != "crash_loop" or d.endpoint_id is None:
        return None
    sample = obs.endpoints.get(d.endpoint_id)
    health = None if sample is None else sample.health
    if health is None or health.in_queue < min_queued:
        return None
    eid = d.endpoint_id
    return Proposal(
        id=proposal_id("purge_after_crash_loop", eid, inc.since),
        kind="purge_after_crash_loop", endpoint_id=eid, incident=(d.code, inc.since),
        summary=(f"purge the {health.in_queue} jobs queued on {d.endpoint_name or eid} "
                 "under the crash loop (they will likely fail)"),
        precondition={"min_in_queue": min_queued, "in_queue_seen": health.in_queue},
        call=Call("POST", "rest", f"/{eid}/purge-queue"), created_t=t,
    )


def _spend_guard(inc: Incident, obs: Observation, max_usd: float,
                 usd_per_worker_hr: float | None, t: float) -> Proposal | None:
    d = inc.diagnosis
    if d.code not in GUARDED_CODES or d.endpoint_id is None:
        return None
    sample = obs.endpoints.get(d.endpoint_id)
    config = None if sample is None else sample.config
    if config is None or config.workers_max <= 0:
        return None  # already stopped, or the cap is unknown
    cost = incident_cost(inc, obs, usd_per_worker_hr, t)
    if cost is None or cost[0] < max_usd:
        return None
    eid = d.endpoint_id
    return Proposal(
        id=proposal_id("spend_guard", eid, d.code, inc.since), kind="spend_guard",
        endpoint_id=eid, incident=(d.code, inc.since),
        summary=(f"stop {d.endpoint_name or eid}: workersMax {config.workers_max} -> 0 "
                 f"({d.code} has cost {cost[0]:.2f} USD, over {max_usd:g})"),
        precondition={"workers_max": config.workers_max, "workers_min": config.workers_min},
        call=Call("PATCH", "v2", f"/serverless/{eid}", {"workers": {"min": 0, "max": 0}}),
        created_t=t, extra={"cost_usd": round(cost[0], 4), "cost_from": cost[1]},
    )


def refusal(p: Proposal, fresh: Fresh) -> str | None:
    """Why `p` must not run given what was just read, or None when it still applies."""
    if fresh.error is not None:
        return f"could not read the state again: {fresh.error}"
    if p.kind == "cancel_overrun":
        if fresh.job_status != "IN_PROGRESS":
            return f"the job is {fresh.job_status or 'gone'} now, no longer IN_PROGRESS"
    elif p.kind == "purge_after_crash_loop":
        need = int(p.precondition.get("min_in_queue", 1))
        if fresh.in_queue is None or fresh.in_queue < need:
            return f"the queue holds {fresh.in_queue} jobs now (fewer than {need})"
    elif p.kind == "spend_guard":
        want = p.precondition.get("workers_max")
        if fresh.workers is None:
            return "workersMax could not be read again"
        if fresh.workers[1] != want:
            return f"workersMax is {fresh.workers[1]} now, not the {want} this was based on"
    return None


def still_called_for(p: Proposal, active: Sequence[Incident]) -> bool:
    """False once the incident a cancel or spend guard answers has ended (a purge answers
    a resolved one, so it stands until it expires)."""
    if p.kind == "purge_after_crash_loop":
        return True
    return any(i.key == (p.incident[0], p.endpoint_id) and i.since == p.incident[1]
               for i in active)
