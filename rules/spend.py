"""Spend: jobs that cost GPU time without results (job_overrun, empty_output,
cold_start_regression), and the estimated cost of a job.

Costs are estimates: the GPU's serverless list price per second (the v2 catalog's
`price.serverless` when it was read, else the pool's list price in `rules/gpus.py`) times
the seconds a worker is billed for. Neither knows negotiated discounts or active-worker
pricing; the hourly v2 billing (`Observation.endpoint_spend`) is what RunPod charged.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import islice

from model.history import History
from model.job_memory import ColdStart, percentile
from model.observation import EndpointConfig, GpuStock, Health, Job, Observation, Workers
from rules.diagnosis import Diagnosis, evidence
from rules.gpus import POOL_FLEX_USD_PER_S
from rules.remedies import rest_curl
from rules.rule import Finding, Rule
from rules.secrets import mask
from rules.signals import minutes, plural
from rules.thresholds import Thresholds

V2_URL = "https://api.runpod.io/v2"
# RunPod's default `idleTimeout` (seconds), for an endpoint whose config does not say
DEFAULT_IDLE_TIMEOUT_S = 5
# what `/status` said of a completed job's output that counts as no result
EMPTY_KINDS = frozenset({"absent", "null", "empty", "lost"})
MAX_QUOTED = 3
BASELINE_KEPT = 10  # the cold starts before the recent ones that make the baseline


# --- prices and job costs (also read by the metrics) -----------------------------------

@dataclass(frozen=True, slots=True)
class Price:
    """What one worker costs per second, and where the number came from."""

    usd_per_s: float
    source: str  # "catalog" (v2 `price.serverless`) or "list price" (rules/gpus.py)
    gpu: str  # the GPU type or pool priced


@dataclass(frozen=True, slots=True)
class JobCost:
    """An estimate of what one finished job was billed: seconds and USD."""

    billed_s: float
    usd: float


def worker_price(
    config: EndpointConfig | None,
    workers: Workers | None,
    stock: Sequence[GpuStock] | None,
    worker_id: str | None = None,
) -> Price | None:
    """The per-second price of the worker that ran a job (or of the endpoint's first pool);
    None when neither the GPU type nor a known pool is known."""
    gpu_type: str | None = None
    count = 1
    if workers is not None and worker_id is not None:
        for w in workers.workers:
            if w.id == worker_id:
                gpu_type, count = w.gpu_type, max(1, w.gpu_count)
                break
    tiers = config.gpu_tiers if config is not None else ()
    for item in stock or ():
        if gpu_type is not None and item.gpu_type == gpu_type and item.price_serverless:
            return Price(item.price_serverless / 3600 * count, "catalog", gpu_type)
    if gpu_type is None:
        for tier in tiers:
            for item in stock or ():
                if item.pool == tier and item.price_serverless:
                    return Price(item.price_serverless / 3600 * count, "catalog", tier)
    pool = next((i.pool for i in stock or () if i.gpu_type == gpu_type and i.pool), None)
    for tier in ([pool] if pool else []) + list(tiers):
        if tier in POOL_FLEX_USD_PER_S:
            return Price(POOL_FLEX_USD_PER_S[tier] * count, "list price", tier)
    return None


def job_cost(
    execution_ms: int, idle_timeout_s: float | None, price: Price, *, idles_after: bool
) -> JobCost:
    """A finished job's billed seconds and cost: its execution time, plus the idle timeout
    when the worker had nothing else to do after it (`idles_after`; a worker running jobs
    back to back bills its idle tail once, after the last)."""
    tail = (DEFAULT_IDLE_TIMEOUT_S if idle_timeout_s is None else idle_timeout_s)
    billed = execution_ms / 1000 + (tail if idles_after else 0.0)
    return JobCost(billed, billed * price.usd_per_s)


def latest_workers(history: History, eid: str) -> Workers | None:
    """The newest v2 `/workers` answer in the window for the endpoint."""
    for o in reversed(history.observations):
        s = o.endpoints.get(eid)
        if s is not None and s.workers is not None:
            return s.workers
    return None


def latest_stock(history: History) -> tuple[GpuStock, ...] | None:
    """The newest v2 GPU catalog in the window."""
    for o in reversed(history.observations):
        if o.gpu_stock is not None:
            return o.gpu_stock
    return None


def latest_spend(history: History, eid: str) -> float | None:
    """The endpoint's billed USD per hour (v2 billing, last complete hour), newest known."""
    for o in reversed(history.observations):
        if o.endpoint_spend is not None and eid in o.endpoint_spend:
            return o.endpoint_spend[eid]
    return None


@dataclass(frozen=True, slots=True)
class CostSoFar:
    """What an incident has cost since it began: an estimate, and how it was made."""

    usd: float
    basis: str  # "v2 billing's 0.69 USD/h over 16 min", "billed workers over 2 min at ..."

    def sentence(self) -> str:
        """The summary's sentence, '' while it rounds to nothing."""
        if self.usd < 0.005:
            return ""
        return (f" It has cost about {self.usd:.2f} USD of GPU time since it began "
                f"(an estimate from {self.basis}).")

    def evidence(self) -> dict[str, object]:
        """The evidence keys (`cost_so_far_usd` is what the actions' spend guard reads)."""
        return {"cost_so_far_usd": round(self.usd, 4), "cost_basis": f"{self.basis} (an estimate)"}


def cost_so_far(history: History, eid: str, since: float, now: float) -> CostSoFar | None:
    """What the endpoint spent from `since` to `now`: v2 billing's USD per hour for it times
    the time, else its billed workers in each sample times the GPU's price (the catalog's, or
    the pool's list price); None when neither is known."""
    seconds = max(0.0, now - since)
    rate = latest_spend(history, eid)
    if rate is not None and rate >= 0:
        return CostSoFar(rate * seconds / 3600,
                         f"v2 billing's {rate:.2f} USD/h over {minutes(seconds)}")
    price = _price(history, eid, None)
    if price is None:
        return None
    usd = 0.0
    before: tuple[float, Health] | None = None
    for t, h in history.known_health(eid):
        if t < since:
            continue
        if t > now:
            break
        if before is not None:  # each sample's workers billed until the next sample
            usd += before[1].workers_billed * price.usd_per_s * (t - before[0])
        before = (t, h)
    return CostSoFar(usd, f"billed workers over {minutes(seconds)} at "
                          f"{price.usd_per_s * 3600:.2f} USD/h each, the {price.gpu} "
                          f"{'catalog price' if price.source == 'catalog' else price.source}")


def _price(history: History, eid: str, worker_id: str | None) -> Price | None:
    return worker_price(history.latest_config(eid), latest_workers(history, eid),
                        latest_stock(history), worker_id)


def _usd(value: float) -> str:
    return f"${value:.2f}" if value >= 1 else f"${value:.4f}"


def _patch_curl(eid: str, body: dict[str, object]) -> str:
    """A curl command that PATCHes the endpoint's REST v2 settings."""
    return (
        f"curl -s -X PATCH {V2_URL}/serverless/{eid} -H 'Content-Type: application/json' "
        f"-H \"Authorization: Bearer $RUNPOD_API_KEY\" -d '{json.dumps(body)}'"
    )


def _money_evidence(ev: dict[str, object], history: History, eid: str,
                    price: Price | None) -> None:
    if price is not None:
        ev["price_usd_per_s"] = round(price.usd_per_s, 6)
        ev["price_source"] = f"{price.source} ({price.gpu}), an estimate"
    billed = latest_spend(history, eid)
    if billed is not None:
        ev["billed_usd_per_hour"] = round(billed, 4)


# --- job_overrun -----------------------------------------------------------------------

def _jobs_at(
    o: Observation, eid: str, tracked_too: bool = True
) -> tuple[tuple[Job, ...] | None, dict[str, Job]]:
    """The endpoint's `/requests` list in `o` (None: not known) and its tracked jobs (none
    read unless `tracked_too`)."""
    s = o.endpoints.get(eid)
    listed = s.jobs if s is not None else None
    if not tracked_too or not o.tracked_jobs:
        return listed, {}
    tracked = {tj.job.id: tj.job for tj in o.tracked_jobs if tj.endpoint_id == eid}
    return listed, tracked


def running_since(history: History, eid: str) -> dict[str, tuple[float, Job]]:
    """Each job the newest observation shows IN_PROGRESS: since when it has been seen so in
    an unbroken run of samples, and its newest record.

    A job read through `/requests` is followed there (a sample that did not list jobs
    neither counts nor breaks the run; a list without it, or with it in another state,
    ends the run); a tracked job through `/status`. The time is a lower bound: the job
    started at most one cycle before it was first seen running."""
    latest = history.latest
    if latest is None:
        return {}
    listed, tracked = _jobs_at(latest, eid)
    running = {j.id: (latest.t, j, True) for j in tracked.values() if j.status == "IN_PROGRESS"}
    for j in listed or ():
        if j.status == "IN_PROGRESS" and j.id not in running:
            running[j.id] = (latest.t, j, False)
    if not running:
        return {}
    found = {jid: (t, j) for jid, (t, j, _) in running.items()}
    via_status = {jid for jid, (_, _, via) in running.items() if via}
    pending = set(running)
    for o in islice(reversed(history.observations), 1, None):
        if not pending:
            break
        listed, tracked = _jobs_at(o, eid, tracked_too=not via_status.isdisjoint(pending))
        by_id = {j.id: j for j in listed} if listed else ({} if listed is not None else None)
        for jid in list(pending):
            job = tracked.get(jid) if jid in via_status else (
                by_id.get(jid) if by_id is not None else None)
            if job is not None and job.status == "IN_PROGRESS":
                found[jid] = (o.t, found[jid][1])
            elif job is not None or (jid not in via_status and by_id is not None):
                pending.discard(jid)
    return found


def _overrun_limit(
    history: History, th: Thresholds, eid: str
) -> tuple[float, str, float | None, float | None] | None:
    """(limit s, basis, p95 s, timeout s): the shorter of the endpoint's execution timeout
    (plus grace) and `factor` x the p95 of its recent execution times (with a floor)."""
    config = history.latest_config(eid)
    timeout_s = config.timeout_ms / 1000 if config is not None and config.timeout_ms else None
    mem = history.memory.jobs.get(eid)
    times = [ms for _, ms in mem.executions] if mem is not None else []
    p95_ms = percentile(times, 0.95) if len(times) >= th.job_overrun_min_jobs else None
    p95_s = p95_ms / 1000 if p95_ms is not None else None
    limits: list[tuple[float, str]] = []
    if timeout_s is not None:
        limits.append((timeout_s + th.job_overrun_grace_s, "timeout"))
    if p95_s is not None:
        limits.append((max(th.job_overrun_floor_s, th.job_overrun_factor * p95_s), "history"))
    if not limits:
        return None
    limit, basis = min(limits)
    return limit, basis, p95_s, timeout_s


def _job_overrun(history: History, th: Thresholds, eid: str, now: float) -> Finding | None:
    bound = _overrun_limit(history, th, eid)
    if bound is None:
        return None  # no timeout and too few finished jobs: nothing to compare with
    running = running_since(history, eid)
    if not running:
        return None
    limit_s, basis, p95_s, timeout_s = bound
    over = sorted(
        ((now - t, job) for t, job in running.values() if now - t > limit_s),
        key=lambda pair: (-pair[0], pair[1].id),
    )
    if not over:
        return None
    name = history.endpoint_name(eid)
    elapsed, job = over[0]
    price = _price(history, eid, job.worker_id)
    cost = elapsed * price.usd_per_s if price is not None else None
    if basis == "timeout":
        why = f"past its execution timeout of {minutes(timeout_s or 0)}"
    else:
        why = (f"over {th.job_overrun_factor:g}x the p95 of its recent jobs "
               f"({minutes(p95_s or 0)})")
    others = f" ({plural(len(over) - 1, 'other job')} too)" if len(over) > 1 else ""
    spent = f", about {_usd(cost)} of GPU time so far" if cost is not None else ""
    summary = (f"{name}: job {job.id} has been IN_PROGRESS for {minutes(elapsed)}, {why}"
               f"{others}{spent}.")
    suggest_ms = int(max(limit_s, th.job_overrun_floor_s) * 1000)
    steps = [
        f"Job {job.id} has run for at least {minutes(elapsed)} (first seen IN_PROGRESS then; "
        f"limit {minutes(limit_s)}, from the endpoint's "
        f"{'timeout' if basis == 'timeout' else 'recent execution times'}).",
        f"Cancel it (this restarts its worker): {rest_curl(eid, f'cancel/{job.id}')}",
    ]
    if basis == "timeout":
        steps.append(
            "RunPod should have stopped it at the endpoint's timeout: a handler stuck in "
            "native code or a worker that lost its job can outlive it. Read the worker's "
            "logs; if it recurs, set a per-job `policy.executionTimeout` in /run as well."
        )
    else:
        steps.append(
            "Bound every job with the endpoint's execution timeout (ms), e.g. "
            f"{_patch_curl(eid, {'timeout': suggest_ms})} , or per job with "
            "`policy.executionTimeout` in the /run body."
        )
    ev = evidence(
        job_id=job.id,
        running_s=round(elapsed, 1),
        limit_s=round(limit_s, 1),
        basis=basis,
        p95_s=round(p95_s, 3) if p95_s is not None else None,
        timeout_s=timeout_s,
        delay_s=job.delay_ms / 1000 if job.delay_ms is not None else None,
        worker_id=job.worker_id,
        overrunning_jobs=len(over),
        gpu_cost_usd=round(cost, 4) if cost is not None else None,
    )
    _money_evidence(ev, history, eid, price)
    for i, (secs, other) in enumerate(over[1:MAX_QUOTED], start=2):
        ev[f"job_{i}"] = other.id
        ev[f"job_{i}_running_s"] = round(secs, 1)
    return Finding(severity="warning", summary=summary, remedy="\n".join(steps), evidence=ev)


# --- empty_output ----------------------------------------------------------------------

def expects_empty(th: Thresholds, eid: str, name: str) -> bool:
    """Whether the config says this endpoint's handler returns nothing by design."""
    return eid in th.empty_output_expected or name in th.empty_output_expected


def completions_read(history: History, since: float) -> dict[str, list[Job]]:
    """Per endpoint, the finished jobs whose output `/status` described since `since`, each
    once (its newest answer), newest first: one pass over the window for all endpoints."""
    seen: dict[str, dict[str, Job]] = {}
    for o in reversed(history.observations):
        if o.t < since:
            if history.time_ordered:
                break
            continue
        for tj in o.tracked_jobs:
            if tj.job.output_kind is not None:
                seen.setdefault(tj.endpoint_id, {}).setdefault(tj.job.id, tj.job)
    return {eid: list(jobs.values()) for eid, jobs in seen.items()}


def _empty_output(history: History, th: Thresholds, eid: str, now: float) -> Finding | None:
    read = completions_read(history, now - th.empty_output_window_s).get(eid, [])
    return _empty_output_of(history, th, eid, read)


def _empty_output_of(
    history: History, th: Thresholds, eid: str, read: Sequence[Job]
) -> Finding | None:
    name = history.endpoint_name(eid)
    if expects_empty(th, eid, name):
        return None
    empty = [j for j in read if j.output_kind in EMPTY_KINDS]
    if len(empty) < th.empty_output_min:
        return None
    share = len(empty) / len(read)
    if share < th.empty_output_ratio:
        return None
    kinds: dict[str, int] = {}
    for j in empty:
        kinds[j.output_kind or ""] = kinds.get(j.output_kind or "", 0) + 1
    price = _price(history, eid, empty[0].worker_id)
    config = history.latest_config(eid)
    idle = config.idle_timeout if config is not None else None
    wasted = None
    if price is not None:
        wasted = sum(job_cost(j.execution_ms, idle, price, idles_after=False).usd
                     for j in empty if j.execution_ms is not None)
    lost = kinds.get("lost", 0)
    told = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    spent = f"; about {_usd(wasted)} of GPU time for nothing" if wasted else ""
    summary = (f"{name}: {len(empty)} of the {plural(len(read), 'completed job')} read in the "
               f"last {minutes(th.empty_output_window_s)} returned no output ({told}){spent}.")
    steps = [f"{share:.0%} of the completions read through /status carried no result:"]
    steps += [f"- {j.id}: output {j.output_kind}" for j in empty[:MAX_QUOTED]]
    if lost:
        steps.append(
            "'Failed to return job results' means the worker finished but could not post "
            "the result (runpod-python#309): an output too large for the result store, or "
            "the worker losing its connection. Read the worker logs around those jobs, keep "
            "outputs small (upload large files to a bucket and return the URL), and update "
            "the runpod SDK in the image."
        )
    if len(empty) > lost:
        steps.append(
            "A null or empty output usually means the handler returned nothing: a missing "
            "`return`, a generator handler without `return_aggregate_stream`, or an "
            "exception swallowed into an empty result. Check one job: "
            f"{rest_curl(eid, f'status/{empty[0].id}', 'GET')}"
        )
    steps.append(
        "If this handler returns nothing by design, add the endpoint to "
        "`rules.empty_output_expected` in config.yaml."
    )
    ev = evidence(
        empty_jobs=len(empty),
        completed_read=len(read),
        empty_share=round(share, 3),
        window_s=th.empty_output_window_s,
        wasted_usd=round(wasted, 4) if wasted is not None else None,
    )
    for kind, n in sorted(kinds.items()):
        ev[f"output_{kind}"] = n
    for i, j in enumerate(empty[:MAX_QUOTED], start=1):
        ev[f"job_{i}"] = j.id
        ev[f"job_{i}_output"] = j.output_kind
    with_value = next((j for j in read if j.output_kind == "value"), None)
    if with_value is not None and with_value.output_bytes is not None:
        ev["a_good_output_bytes"] = with_value.output_bytes
    _money_evidence(ev, history, eid, price)
    return Finding(severity="warning", summary=summary, remedy="\n".join(steps), evidence=ev)


# --- cold_start_regression -------------------------------------------------------------

def _change(before: ColdStart, after: ColdStart) -> str | None:
    """The release or image change between two cold starts, said for a person."""
    parts = []
    if before.version is not None and after.version is not None and before.version != after.version:
        parts.append(f"release v{before.version} -> v{after.version}")
    if before.image and after.image and before.image != after.image:
        # an image reference can carry a registry token: masked like a template's
        parts.append(f"image {mask(before.image)} -> {mask(after.image)}")
    return ", ".join(parts) or None


def _regression(
    series: Sequence[ColdStart], th: Thresholds
) -> tuple[Sequence[ColdStart], Sequence[ColdStart], float, float] | None:
    """(baseline, recent, baseline s, slowest-of-recent's fastest s) when the newest
    `cold_start_recent` all exceed the baseline by the factor and the margin."""
    k = th.cold_start_recent
    if len(series) < th.cold_start_baseline_min + k:
        return None
    recent = series[-k:]
    base = series[:-k][-BASELINE_KEPT:]
    baseline_s = statistics.median(c.delay_ms for c in base) / 1000
    fastest_s = min(c.delay_ms for c in recent) / 1000
    if fastest_s <= th.cold_start_factor * baseline_s:
        return None
    if fastest_s - baseline_s < th.cold_start_margin_s:
        return None
    return base, recent, baseline_s, fastest_s


def _cold_start_regression(
    history: History, th: Thresholds, eid: str, now: float
) -> Finding | None:
    mem = history.memory.jobs.get(eid)
    if mem is None:
        return None
    measure = "first-job delay after a scale-up from zero"
    found = _regression(mem.cold_starts, th)
    if found is None:
        measure = "worker start-to-ready (REST v2 worker records)"
        found = _regression(mem.ready_starts, th)
    if found is None:
        return None
    base, recent, baseline_s, slowest_ok = found
    k = len(recent)
    name = history.endpoint_name(eid)
    # the first slow one, against the baseline's last normal one
    began = recent[0]
    change = _change(base[-1], began)
    recent_s = statistics.mean(c.delay_ms for c in recent) / 1000
    extra_s = recent_s - baseline_s
    price = _price(history, eid, None)
    extra_usd = extra_s * price.usd_per_s if price is not None else None
    began_text = f", beginning with {change}" if change else ""
    cost = f"; about {_usd(extra_usd)} more per cold start" if extra_usd else ""
    summary = (f"{name}: its last {plural(k, 'cold start')} took {minutes(recent_s)} on "
               f"average against a baseline of {minutes(baseline_s)}{began_text}{cost}.")
    steps = [
        f"Cold starts ({measure}) went from {minutes(baseline_s)} (median of "
        f"{plural(len(base), 'earlier one')}) to "
        f"{', '.join(minutes(c.delay_ms / 1000) for c in recent)}."
    ]
    if change:
        steps.append(
            f"It began with {change}: compare the two (a larger image, weights downloaded "
            "at start instead of baked in or read from the network volume, a slower "
            "import), and roll back if the new one is at fault."
        )
    else:
        steps.append(
            "No release or image change was seen with it: check the GPU pools and data "
            "centers the workers land in, FlashBoot, and the download of models at start."
        )
    steps.append(
        "Keep a warm worker while investigating: "
        f"{_patch_curl(eid, {'workers': {'min': 1, 'max': _max_workers(history, eid)}})}"
    )
    ev = evidence(
        measure=measure,
        baseline_s=round(baseline_s, 3),
        recent_s=round(recent_s, 3),
        recent_min_s=round(slowest_ok, 3),
        baseline_cold_starts=len(base),
        began_at=began.t,
        began_with=change,
        release=began.version,
        previous_release=base[-1].version,
        extra_usd_per_cold_start=round(extra_usd, 4) if extra_usd is not None else None,
    )
    _money_evidence(ev, history, eid, price)
    return Finding(severity="warning", summary=summary, remedy="\n".join(steps), evidence=ev)


def _max_workers(history: History, eid: str) -> int:
    config = history.latest_config(eid)
    return max(1, config.workers_max) if config is not None else 1


# --- the records -----------------------------------------------------------------------

# (history, thresholds, endpoint id, the latest observation's time) -> diagnosis
EndpointCheck = Callable[[History, Thresholds, str, float], Finding | None]


def _tracked_running(latest: Observation) -> frozenset[str]:
    """The endpoints with a tracked job IN_PROGRESS in the latest observation."""
    return frozenset(tj.endpoint_id for tj in latest.tracked_jobs
                     if tj.job.status == "IN_PROGRESS")


def _may_overrun(latest: Observation, eid: str, tracked_running: frozenset[str]) -> bool:
    s = latest.endpoints.get(eid)
    if s is not None and s.health is not None and s.health.in_progress > 0:
        return True
    return eid in tracked_running


def diagnose(history: History, th: Thresholds) -> list[Diagnosis]:
    """job_overrun, empty_output and cold_start_regression for every watched endpoint."""
    if not history.observations:
        return []
    latest = history.observations[-1]
    now = latest.t
    read = completions_read(history, now - th.empty_output_window_s)
    tracked_running = _tracked_running(latest)
    need = th.cold_start_baseline_min + th.cold_start_recent
    found: list[Diagnosis] = []
    for eid in history.endpoints_with_health():
        # cheap tests first: most endpoints have no job running, read or cold-started
        may_overrun = _may_overrun(latest, eid, tracked_running)
        was_read = eid in read
        cold_starts = (
            (mem := history.memory.jobs.get(eid)) is not None
            and max(len(mem.cold_starts), len(mem.ready_starts)) >= need
        )
        if not (may_overrun or was_read or cold_starts):
            continue
        relevant = {
            "job_overrun": may_overrun,
            "empty_output": was_read,
            "cold_start_regression": cold_starts,
        }
        for rule in RULES:
            if not relevant[rule.code]:
                continue
            if rule.code == "empty_output":  # the window's reads, gathered once above
                finding = _empty_output_of(history, th, eid, read[eid])
            else:
                finding = rule.check(history, th, eid, now)
            if finding is not None:
                found.append(rule.diagnosis(finding, eid, history.endpoint_name(eid)))
    return found


RULES: tuple[Rule[EndpointCheck], ...] = (
    Rule(
        code="job_overrun", scope="endpoint", severity="warning", source="health",
        family="spend", check=_job_overrun,
        thresholds=("job_overrun_factor", "job_overrun_floor_s", "job_overrun_min_jobs",
                    "job_overrun_grace_s"),
        raised_when="a job seen IN_PROGRESS (via /requests or a tracked /status) for longer "
        "than the endpoint's execution timeout + 60 s, or than 3x the p95 of its last 50 "
        "execution times (at least 5 of them) and at least 10 min; quotes the job, its GPU "
        "cost so far and the cancel call",
    ),
    Rule(
        code="empty_output", scope="endpoint", severity="warning", source="health",
        family="spend", check=_empty_output,
        thresholds=("empty_output_window_s", "empty_output_min", "empty_output_ratio",
                    "empty_output_expected"),
        raised_when="within 30 min at least 3 and half of the completed jobs read through "
        "/status (tracked, or sampled from /requests) had a missing, null or empty output, "
        "or RunPod's 'Failed to return job results'; not for endpoints listed as returning "
        "nothing by design",
    ),
    Rule(
        code="cold_start_regression", scope="endpoint", severity="warning", source="health",
        family="spend", check=_cold_start_regression,
        thresholds=("cold_start_factor", "cold_start_margin_s", "cold_start_baseline_min",
                    "cold_start_recent"),
        raised_when="the last 2 cold starts (first job's delay after a scale-up from zero, "
        "or a worker's start-to-ready in REST v2 worker records) each took over 2x and 30 s "
        "more than the median of the earlier ones (at least 3, remembered across "
        "restarts); names the release or image change it began with",
    ),
)
