"""Worker lifecycle: workers that die at startup (crash_loop), crashed workers
(workers_unhealthy), and workers that sit idle beside a queue (idle_workers_queued).

"running" does not mean "processing": a worker shows as running while its startup code
(model download, dependency install) runs, before `runpod.serverless.start()` takes jobs.
A long first cold start therefore looks like a stalled queue with a running worker; only
restarts, or a wait well beyond any cold start this endpoint has shown (or the start-up
budget it declares in RUNPOD_INIT_TIMEOUT), make it a loop. Where REST v2 worker records
cover the stall, they name the restarts (rules/worker_records.py); without them the
running flips of /health are counted, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise

from model.history import History
from model.observation import (
    Account,
    EndpointConfig,
    Health,
    Job,
    Observation,
    queued_wait_ms,
)
from rules import worker_records
from rules.capacity import _capacity_remedy
from rules.diagnosis import Diagnosis, evidence
from rules.gpus import POOL_VRAM_GB, compatible_tiers
from rules.remedies import (
    REST,
    api,
    graphql_curl,
    release,
    rest_curl,
    save_endpoint,
    update_endpoint,
)
from rules.rule import Finding, Rule
from rules.signals import minutes, plural, run_seconds, stalled_run, trailing_run
from rules.spend import cost_so_far
from rules.thresholds import Thresholds


def diagnose(history: History, th: Thresholds) -> list[Diagnosis]:
    """crash_loop, workers_unhealthy and idle_workers_queued for every watched endpoint."""
    found: list[Diagnosis] = []
    for eid in history.endpoints_with_health():
        series = history.known_health(eid)
        for rule in RULES:
            finding = rule.check(history, th, eid, series)
            if finding is not None:
                found.append(rule.diagnosis(finding, eid, history.endpoint_name(eid)))
    return found


# --- crash_loop ----------------------------------------------------------------------


def head_wait_ms(jobs: Sequence[Job] | None) -> int | None:
    """How long the head of the queue has waited, when the jobs data shows it; None with none
    queued (unlike the gauge's 0: the health says jobs are queued, the listing missed them)."""
    if not jobs or not any(j.status == "IN_QUEUE" for j in jobs):
        return None
    return queued_wait_ms(jobs)


def count_restarts(run: Sequence[tuple[float, Health]]) -> int:
    """Workers that stopped running between consecutive samples of a stalled run."""
    return sum(max(0, a.running - b.running) for (_, a), (_, b) in pairwise(run))


def _crash_loop(
    history: History, th: Thresholds, eid: str, series: Sequence[tuple[float, Health]]
) -> Finding | None:
    run = stalled_run(series)
    if len(run) < 2:
        return None
    seconds = run_seconds(run)
    with_workers = sum(1 for _, h in run if h.workers_present > 0)
    if with_workers * 2 <= len(run):
        return None  # no workers most of the time: a capacity problem, not a crash loop
    jobs_at = {o.t: s.jobs for o, s in history.endpoint_samples(eid) if s.health is not None}
    heads = [w for t, _ in run if (w := head_wait_ms(jobs_at.get(t))) is not None]
    if len(heads) >= 2 and heads[-1] <= heads[0]:
        return None  # the head of the queue is not waiting longer: the queue moves
    start, end = run[0][0], run[-1][0]
    records = history.worker_records(eid)
    # Records seen during the run name the restarts and, being certain, raise sooner; the
    # running flips of /health still count as before (all there is without records:
    # GraphQL-only, or v2 did not reach the endpoint), so records never hide a loop.
    by_records = sum(1 for t, _ in records if start <= t <= end) >= 2
    seen = [r for r in worker_records.restarts(records) if start < r.t <= end] \
        if by_records else []
    flips = count_restarts(run)
    from_records = bool(seen) and len(seen) >= flips
    restarts = len(seen) if from_records else flips
    cold_ms = history.memory.longest_cold_start_ms.get(eid, 0)
    config = history.latest_config(eid)
    declared_s = worker_records.declared_init_timeout_s(config)
    hang_s = max(
        th.crash_loop_no_restart_s,
        th.crash_loop_cold_start_factor * cold_ms / 1000,
        declared_s or 0.0,
    )
    by_record_count = len(seen) >= th.crash_loop_restarts and seconds >= th.crash_loop_records_s
    looping = by_record_count or (flips >= th.crash_loop_restarts and seconds >= th.crash_loop_s)
    loop_s = th.crash_loop_records_s if by_record_count else th.crash_loop_s
    if not looping and seconds < hang_s:
        return None

    h = run[-1][1]
    name = history.endpoint_name(eid)
    stuck = (
        f"{name} has had {plural(h.in_queue, 'job')} queued and none started for "
        f"{minutes(seconds)} ({plural(len(run), 'cycle')})"
    )
    ghosts: list[worker_records.Ghost] = []
    lived = [r.lived_s for r in seen if r.lived_s is not None]
    period_s = (seen[-1].t - seen[0].t) / (len(seen) - 1) if from_records and len(seen) > 1 \
        else None
    if restarts and from_records:
        oldest = f", none seen alive past {minutes(max(lived))}" if lived else ""
        every = f" (one every {minutes(period_s)})" if period_s else ""
        summary = (
            f"{stuck}: the worker records show {plural(restarts, 'restart')} in "
            f"{minutes(seconds)}{every}{oldest}. The worker dies during startup, before "
            f"runpod.serverless.start(), and RunPod keeps restarting it."
        )
    elif restarts:
        summary = (
            f"{stuck} with workers present in {with_workers} of {len(run)} samples and "
            f"{plural(restarts, 'worker restart')} seen: the worker dies during startup, before "
            f"runpod.serverless.start(), and RunPod keeps restarting it."
        )
    else:
        limit = _hang_limit(th, hang_s, cold_ms, declared_s)
        health_at = {t: x for t, x in run}
        ghosts = [
            g for g in (
                *worker_records.initializing_ghosts(records),
                worker_records.absent_ghost(records, health_at),
            )
            if g is not None and g.seconds >= hang_s
        ]
        if ghosts:
            summary = f"{stuck}: {_ghost_text(ghosts, limit)}"
        else:
            summary = (
                f"{stuck} with {plural(h.workers_present, 'worker')} present and no worker "
                f"restart seen, past {limit}: the startup may be hanging (a model download or "
                f"a call that never returns before runpod.serverless.start())."
            )
    cost = cost_so_far(history, eid, start, end)
    if cost is not None:
        summary += cost.sentence()
    account = history.latest_account()
    if ghosts:
        remedy = _capacity_remedy(
            history, eid, config,
            "RunPod counts a worker that never gets a machine (a ghost): the GPU it waits "
            "for is not free where the endpoint may run. Give it somewhere to start:",
        )
    else:
        remedy = _crash_loop_remedy(history.latest, eid, name, config, account, restarts)
    return Finding(
        severity="critical",
        summary=summary,
        remedy=remedy,
        evidence=evidence(
            in_queue=h.in_queue,
            stalled_s=seconds,
            stalled_cycles=len(run),
            restarts=restarts,
            restarts_from="worker records" if from_records else "running flips",
            restart_period_s=period_s,
            longest_life_s=max(lived) if from_records and lived else None,
            restarted_workers=worker_records.ids(seen)[:5] if from_records else None,
            ghost_workers=[g.worker_id or "absent" for g in ghosts] or None,
            ghost_s=max(g.seconds for g in ghosts) if ghosts else None,
            running=h.running,
            workers_present=h.workers_present,
            samples_with_workers=with_workers,
            threshold_s=loop_s if looping else hang_s,
            longest_cold_start_ms=cold_ms or None,
            init_timeout_s=declared_s,
            head_wait_first_ms=heads[0] if heads else None,
            head_wait_last_ms=heads[-1] if heads else None,
            completed=h.completed,
            failed=h.failed,
            **(cost.evidence() if cost is not None else {}),
        ),
    )


def _hang_limit(th: Thresholds, hang_s: float, cold_ms: int, declared_s: float | None) -> str:
    """What the no-restart wait was measured against, for the summary."""
    if declared_s is not None and hang_s == declared_s and hang_s > th.crash_loop_no_restart_s:
        return (
            f"the {minutes(declared_s)} its {worker_records.INIT_TIMEOUT_ENV} declares a "
            "startup may take"
        )
    if cold_ms and hang_s > th.crash_loop_no_restart_s:
        return (
            f"{th.crash_loop_cold_start_factor:g}x its longest cold start of "
            f"{minutes(cold_ms / 1000)}"
        )
    return f"the {minutes(th.crash_loop_no_restart_s)} a startup may take"


def _ghost_text(ghosts: Sequence[worker_records.Ghost], limit: str) -> str:
    parts: list[str] = []
    for g in ghosts:
        if g.status == "INITIALIZING":
            parts.append(
                f"worker {g.worker_id} has been INITIALIZING for {minutes(g.seconds)}"
            )
        else:
            parts.append(
                f"/health has counted {plural(g.count, 'worker')} for {minutes(g.seconds)} "
                "that the worker records do not list"
            )
    return (
        "; ".join(parts) + f", past {limit}: a ghost worker that never got a machine, not a "
        "startup that hangs (the GPU it waits for is not free where the endpoint may run)."
    )


def _crash_loop_remedy(
    obs: Observation | None,
    eid: str,
    name: str,
    config: EndpointConfig | None,
    account: Account | None,
    restarts: int,
) -> str:
    what = "fails and RunPod restarts it" if restarts else "fails or hangs"
    room = _room(config, account)
    steps = [
        "The worker never reaches runpod.serverless.start(): its startup code (model "
        f"download, disk full, OOM, missing handler) {what}.",
        f"1. Read the worker logs (RunPod console > Serverless > {name} > Logs): they are "
        "the only place the startup error shows.",
        "2. Compare the model size with the room it downloads into"
        + (f" ({room})" if room else "")
        + ": a download that fills the disk kills the worker (exit 139) and starts over on "
        "restart. Keep models under /runpod-volume (not /workspace) when a volume is "
        "attached.",
        "3. Check that the handler file the image or dockerArgs starts exists (exit 2: "
        "handler not found, e.g. a private git clone masked by || true).",
    ]
    if api(obs) == REST:
        steps.append(
            "4. After fixing the image, "
            + release(obs, config or EndpointConfig(eid), image_name="<fixed image>")
        )
    elif config is not None:
        steps.append(
            "4. After fixing the image or template, roll a new release with saveEndpoint "
            f"(a template change alone does not reach the endpoint): "
            f"{graphql_curl(save_endpoint(config))}"
        )
    else:
        steps.append(
            "4. After fixing the image or template, roll a new release with saveEndpoint "
            "(a template change alone does not reach the endpoint)."
        )
    steps.append(
        "5. Then purge the jobs queued under the broken worker (they would likely fail): "
        + rest_curl(eid, "purge-queue")
    )
    return "\n".join(steps)


def _room(config: EndpointConfig | None, account: Account | None) -> str:
    """'network volume vol-1 50 GB, containerDiskInGb 20' as far as the data tells."""
    if config is None:
        return ""
    parts: list[str] = []
    if config.network_volume_id:
        size = None
        if account is not None:
            for v in account.network_volumes:
                if v.id == config.network_volume_id:
                    size = v.size_gb
        parts.append(
            f"network volume {config.network_volume_id}"
            + (f" of {size:g} GB" if size is not None else "")
        )
    if config.template is not None and config.template.container_disk_gb is not None:
        parts.append(f"containerDiskInGb {config.template.container_disk_gb}")
    return ", ".join(parts)


# --- workers_unhealthy ---------------------------------------------------------------


def larger_tiers(current: Sequence[str]) -> list[str]:
    """The GPU pools one size up from the largest current one, and the compatible ones above."""
    known = [POOL_VRAM_GB[t] for t in current if t in POOL_VRAM_GB]
    if not known:
        return []
    top = max(known)
    bigger = sorted({gb for gb in POOL_VRAM_GB.values() if gb > top})
    if not bigger:
        return []
    step = next(p for p, gb in POOL_VRAM_GB.items() if gb == bigger[0])
    return compatible_tiers([step])


def _workers_unhealthy(
    history: History, th: Thresholds, eid: str, series: Sequence[tuple[float, Health]]
) -> Finding | None:
    if not series or series[-1][1].unhealthy <= 0:
        return None
    run = trailing_run(series, lambda h: h.unhealthy > 0)
    h = series[-1][1]
    name = history.endpoint_name(eid)
    config = history.latest_config(eid)
    summary = (
        f"{name} has {plural(h.unhealthy, 'unhealthy worker')} (crashed) for "
        f"{plural(len(run), 'cycle')} ({minutes(run_seconds(run))}), beside "
        f"{plural(h.running, 'running worker')} and {plural(h.in_queue, 'queued job')}."
    )
    disk = (
        config.template.container_disk_gb
        if config is not None and config.template is not None
        else None
    )
    oom = "exit 137 (SIGKILL, out of memory: GPU VRAM or system RAM): use a larger GPU tier"
    bigger = larger_tiers(config.gpu_tiers) if config is not None else []
    steps = [
        "A worker crashed; RunPod retries it, and lowers workersMax on endpoints that keep "
        "producing unhealthy workers. Find its exit code in the worker logs (RunPod console "
        f"> Serverless > {name} > Workers / Logs), then:",
    ]
    obs = history.latest
    rest = api(obs) == REST
    if config is not None and bigger:
        steps += [
            f"- {oom}, e.g. {'GPU pools' if rest else 'gpuIds'} {','.join(bigger)}:",
            f"  {update_endpoint(obs, config, gpu_ids=','.join(bigger))}",
        ]
    elif rest:
        steps.append(f"- {oom} in the GPU pools, or a smaller model / batch.")
    else:
        steps.append(f"- {oom} in gpuIds (saveEndpoint), or a smaller model / batch.")
    now = f" (now {disk} GB)" if disk is not None else ""
    bigger_disk = f", e.g. to {max(disk * 2, 50)} GB" if disk is not None else ""
    steps += [
        "- exit 139 (SIGSEGV, usually the disk filled during a large write): raise "
        + (
            f"the endpoint's container disk{now}{bigger_disk} (PATCH {{\"disk\": N}}: a "
            "template edit alone does not reach a REST v2 endpoint)"
            if rest
            else f"containerDiskInGb{now} in the template{bigger_disk}"
        )
        + " (unpacked image layers need about 2.5x the compressed size plus a buffer), and "
        "put models on the network volume under /runpod-volume"
        + ("." if rest else "; then roll a new release with saveEndpoint."),
        "- exit 2 (file not found: the handler is missing): the path the image or dockerArgs "
        "starts does not exist, often a failed clone of a private repo masked by || true; "
        "bake the handler into the image.",
        "- exit 1: a Python exception at startup (missing module, bad import); the log shows "
        "the traceback.",
    ]
    return Finding(
        severity="critical",
        summary=summary,
        remedy="\n".join(steps),
        evidence=evidence(
            unhealthy=h.unhealthy,
            unhealthy_cycles=len(run),
            running=h.running,
            idle=h.idle,
            in_queue=h.in_queue,
            in_progress=h.in_progress,
            gpu_ids=config.gpu_ids if config is not None else None,
            container_disk_gb=disk,
            workers_max=config.workers_max if config is not None else None,
        ),
    )


# --- idle_workers_queued -------------------------------------------------------------


def _idle_workers_queued(
    history: History, th: Thresholds, eid: str, series: Sequence[tuple[float, Health]]
) -> Finding | None:
    run = trailing_run(series, lambda h: h.in_queue > 0 and h.idle > 0)
    if not run:
        return None
    seconds = run_seconds(run)
    if seconds < th.idle_workers_queued_s:
        return None
    h = run[-1][1]
    name = history.endpoint_name(eid)
    config = history.latest_config(eid)
    least_idle = min(s.idle for _, s in run)
    least_queued = min(s.in_queue for _, s in run)
    summary = (
        f"{name} has had {plural(h.in_queue, 'job')} queued beside "
        f"{plural(h.idle, 'idle worker')} ({h.in_progress} in progress) for "
        f"{minutes(seconds)} ({plural(len(run), 'cycle')}): jobs wait while workers sit idle."
    )
    volume = config is not None and bool(config.network_volume_id)
    sdk = (
        "1. Upgrade the runpod SDK in the worker image to 1.10.1 or later "
        "(pip install 'runpod>=1.10.1'): versions 1.7.11 to 1.10.0 funnel jobs to one worker "
        "on endpoints with a network volume"
        + (f" (this endpoint has one: {config.network_volume_id})." if volume and config else ".")
    )
    steps = [
        sdk,
        '2. Or raise the handler\'s concurrency: runpod.serverless.start({"handler": handler, '
        '"concurrency_modifier": lambda current: N}) with N the jobs one worker can run at '
        "once.",
        "3. Rebuild and push the image, then "
        + release(history.latest, config or EndpointConfig(eid), image_name="<rebuilt image>")
        if api(history.latest) == REST
        else "3. Rebuild and push the image, point the template at it, and roll a new release "
        "with saveEndpoint"
        + (f": {graphql_curl(save_endpoint(config))}" if config is not None else "."),
    ]
    return Finding(
        severity="warning",
        summary=summary,
        remedy="\n".join(steps),
        evidence=evidence(
            in_queue=h.in_queue,
            idle=h.idle,
            in_progress=h.in_progress,
            running=h.running,
            min_in_queue=least_queued,
            min_idle=least_idle,
            idle_queued_s=seconds,
            cycles=len(run),
            network_volume_id=config.network_volume_id if volume and config else None,
        ),
    )


# --- the records ---------------------------------------------------------------------

# (history, thresholds, endpoint id, its known health) -> diagnosis
EndpointCheck = Callable[
    [History, Thresholds, str, Sequence[tuple[float, Health]]], Finding | None
]

RULES: tuple[Rule[EndpointCheck], ...] = (
    Rule(
        code="crash_loop", scope="endpoint", severity="critical", source="health",
        family="lifecycle", check=_crash_loop,
        thresholds=(
            "crash_loop_s", "crash_loop_restarts", "crash_loop_records_s",
            "crash_loop_no_restart_s", "crash_loop_cold_start_factor",
        ),
        raised_when="stalled queue with workers present and the head-of-queue wait growing, "
        "for 5 min with ≥ 2 worker restarts (running flips of /health), or 2 min with ≥ 2 "
        "restarts counted from the REST v2 worker records (an id replaced, startedAt or "
        "uptime reset), or without a restart for 15 min / 2× the longest cold start / the "
        "declared `RUNPOD_INIT_TIMEOUT`, whichever is longest (a worker INITIALIZING, or "
        "counted by /health but not listed by the records, that long is named a ghost, "
        "with the capacity remedies)",
    ),
    Rule(
        code="workers_unhealthy", scope="endpoint", severity="critical", source="health",
        family="lifecycle", check=_workers_unhealthy,
        raised_when="`workers.unhealthy > 0`",
    ),
    Rule(
        code="idle_workers_queued", scope="endpoint", severity="warning", source="health",
        family="lifecycle", check=_idle_workers_queued, thresholds=("idle_workers_queued_s",),
        raised_when="jobs queued beside idle workers for 5 min",
    ),
)
