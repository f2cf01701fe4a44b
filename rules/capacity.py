"""Capacity: no GPU to be had (no_gpu_capacity, not_scheduling) or too few allowed (queue_backlog).

A network volume pins an endpoint's workers to the volume's datacenter; when its GPU tiers
have no free GPU there, RunPod either shows a `throttled` worker (it tried and failed) or
shows nothing at all while jobs sit in the queue. Both are fixed by widening `gpuIds`,
dropping the volume pin, or moving the volume.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from model.history import History
from model.observation import Account, EndpointConfig, Health
from rules.diagnosis import Diagnosis, evidence
from rules.gpus import compatible_tiers
from rules.remedies import graphql_curl, save_endpoint
from rules.rule import Finding, Rule
from rules.signals import minutes, plural, run_seconds, stalled_run, trailing_run
from rules.thresholds import Thresholds

GPU_TYPES_QUERY = "{ gpuTypes { id displayName memoryInGb secureCloud communityCloud } }"


def diagnose(history: History, th: Thresholds) -> list[Diagnosis]:
    """no_gpu_capacity, not_scheduling and queue_backlog for every watched endpoint."""
    found: list[Diagnosis] = []
    for eid in history.endpoints_with_health():
        series = history.known_health(eid)
        config = history.latest_config(eid)
        for rule in RULES:
            finding = rule.check(history, th, eid, series, config)
            if finding is not None:
                found.append(rule.diagnosis(finding, eid, history.endpoint_name(eid)))
    return found


# --- no_gpu_capacity -----------------------------------------------------------------


def _no_gpu_capacity(
    history: History,
    th: Thresholds,
    eid: str,
    series: Sequence[tuple[float, Health]],
    config: EndpointConfig | None,
) -> Finding | None:
    run = trailing_run(series, lambda h: h.throttled > 0)
    if len(run) < th.throttled_cycles:
        return None
    h = run[-1][1]
    stalled = len(stalled_run(series)) >= 2
    name = history.endpoint_name(eid)
    seconds = run_seconds(run)
    where = _where(config, history.latest_account())
    tiers = _tiers_text(config)
    if stalled:
        summary = (
            f"{name} has had {plural(h.throttled, 'throttled worker')} for "
            f"{plural(len(run), 'cycle')} ({minutes(seconds)}) while "
            f"{plural(h.in_queue, 'job')} wait and none run: {where} has no {tiers} capacity."
        )
    else:
        summary = (
            f"{name} has had {plural(h.throttled, 'throttled worker')} for "
            f"{plural(len(run), 'cycle')} ({minutes(seconds)}) beside "
            f"{plural(h.running, 'running worker')} and {plural(h.in_queue, 'queued job')}: "
            f"{where} has no spare {tiers} capacity, routine churn unless it persists."
        )
    opening = (
        "RunPod tried to start a worker but found no free GPU of the endpoint's tiers in "
        "the datacenter it may use. Widen where it can run:"
    )
    return Finding(
        severity="critical" if stalled else "warning",
        summary=summary,
        remedy=_capacity_remedy(config, history.latest_account(), opening),
        evidence=evidence(
            throttled=h.throttled,
            throttled_cycles=len(run),
            throttled_s=seconds,
            in_queue=h.in_queue,
            in_progress=h.in_progress,
            running=h.running,
            **_config_evidence(config, history.latest_account()),
        ),
    )


# --- not_scheduling ------------------------------------------------------------------


def _not_scheduling(
    history: History,
    th: Thresholds,
    eid: str,
    series: Sequence[tuple[float, Health]],
    config: EndpointConfig | None,
) -> Finding | None:
    if config is None or config.workers_max <= 0:
        return None  # unknown config, or workers_max_zero's business
    run = trailing_run(
        series, lambda h: h.in_queue > 0 and h.in_progress == 0 and h.workers_total == 0
    )
    seconds = run_seconds(run)
    if not run or seconds < th.not_scheduling_s:
        return None
    h = run[-1][1]
    name = history.endpoint_name(eid)
    acct = history.latest_account()
    summary = (
        f"{name} has had {plural(h.in_queue, 'job')} queued and no worker in any state for "
        f"{minutes(seconds)} ({plural(len(run), 'cycle')}) although workersMax is "
        f"{config.workers_max}: RunPod is silently not scheduling it, most likely because "
        f"{_where(config, acct)} has no {_tiers_text(config)} GPU free."
    )
    opening = (
        "Silent non-scheduling: RunPod shows no worker at all (not even initializing or "
        "throttled) while jobs wait, which means the GPU tiers are unavailable where the "
        "endpoint may run. Widen where it can run:"
    )
    return Finding(
        severity="critical",
        summary=summary,
        remedy=_capacity_remedy(config, acct, opening),
        evidence=evidence(
            in_queue=h.in_queue,
            in_progress=h.in_progress,
            workers_total=h.workers_total,
            not_scheduling_s=seconds,
            cycles=len(run),
            **_config_evidence(config, acct),
        ),
    )


# --- queue_backlog -------------------------------------------------------------------


def _queue_backlog(
    history: History,
    th: Thresholds,
    eid: str,
    series: Sequence[tuple[float, Health]],
    config: EndpointConfig | None,
) -> Finding | None:
    if config is None or config.workers_max <= 0:
        return None
    cap = config.workers_max
    run = trailing_run(series, lambda h: h.in_queue >= th.queue_backlog_jobs and h.running >= cap)
    seconds = run_seconds(run)
    if not run or seconds < th.queue_backlog_s:
        return None
    h = run[-1][1]
    name = history.endpoint_name(eid)
    least = min(s.in_queue for _, s in run)
    queued = (
        plural(least, "job")
        if least == h.in_queue
        else f"at least {plural(least, 'job')} ({h.in_queue} now)"
    )
    summary = (
        f"{name} has had {queued} queued for {minutes(seconds)} "
        f"({plural(len(run), 'cycle')}) while all {cap} workers its workersMax allows run: "
        f"capacity is capped by workersMax."
    )
    raised = max(cap * 2, cap + 1)
    mutation = save_endpoint(config, workersMax=raised)
    steps = [
        f"Throughput is capped by workersMax ({cap}): every allowed worker is running and "
        f"at least {plural(least, 'job')} waited throughout.",
        f"1. Raise workersMax, e.g. to {raised}:",
        f"   {graphql_curl(mutation)}",
    ]
    if config.scaler_value is not None and config.scaler_value > 1:
        lower = max(1, config.scaler_value // 2)
        changes: dict[str, object] = {"scalerValue": lower}
        if config.scaler_type:
            changes["scalerType"] = config.scaler_type
        scaler = save_endpoint(config, **changes)
        steps += [
            f"2. Or lower scalerValue (now {config.scaler_value}"
            f"{', ' + config.scaler_type if config.scaler_type else ''}), e.g. to {lower}, so "
            f"workers start sooner on a growing queue:",
            f"   {graphql_curl(scaler)}",
        ]
    else:
        steps.append(
            "2. Or lower scalerValue (seconds of queue delay for QUEUE_DELAY, requests per "
            "worker for REQUEST_COUNT) so workers start sooner on a growing queue."
        )
    return Finding(
        severity="warning",
        summary=summary,
        remedy="\n".join(steps),
        evidence=evidence(
            in_queue=h.in_queue,
            min_in_queue=least,
            running=h.running,
            workers_max=cap,
            backlog_s=seconds,
            cycles=len(run),
            scaler_type=config.scaler_type,
            scaler_value=config.scaler_value,
        ),
    )


# --- shared pieces -------------------------------------------------------------------


def _datacenter(config: EndpointConfig | None, account: Account | None) -> str | None:
    """The datacenter of the endpoint's network volume, when the account data names it."""
    if config is None or not config.network_volume_id or account is None:
        return None
    for v in account.network_volumes:
        if v.id == config.network_volume_id:
            return v.datacenter
    return None


def _where(config: EndpointConfig | None, account: Account | None) -> str:
    """Where the endpoint may run, for a summary."""
    if config is not None and config.network_volume_id:
        dc = _datacenter(config, account)
        if dc:
            return f"{dc}, the datacenter its network volume pins,"
        return "the datacenter its network volume pins"
    return "RunPod"


def _tiers_text(config: EndpointConfig | None) -> str:
    tiers = config.gpu_tiers if config is not None else ()
    return " / ".join(tiers) if tiers else "requested GPU"


def _config_evidence(config: EndpointConfig | None, account: Account | None) -> dict[str, object]:
    if config is None:
        return {}
    wider = compatible_tiers(config.gpu_tiers)
    return evidence(
        gpu_ids=config.gpu_ids,
        suggested_gpu_ids=",".join(wider) if len(wider) > len(config.gpu_tiers) else None,
        network_volume_id=config.network_volume_id or None,
        datacenter=_datacenter(config, account),
        workers_max=config.workers_max,
    )


def _capacity_remedy(config: EndpointConfig | None, account: Account | None, opening: str) -> str:
    """Widen gpuIds, drop the volume pin, move the volume, check availability."""
    steps = [opening]
    n = 1
    if config is None:
        steps.append(
            f"{n}. Add every compatible GPU tier to the endpoint's gpuIds (comma-separated, e.g. "
            "AMPERE_48,ADA_48_PRO,AMPERE_80,ADA_80_PRO) with a saveEndpoint mutation; GraphQL "
            "gave no configuration for this endpoint, so the mutation is not prefilled."
        )
        n += 1
        steps.append(
            f'{n}. Or, if a network volume is attached, drop the pin with networkVolumeId: "" '
            "in saveEndpoint, or move the volume to another datacenter."
        )
        n += 1
    else:
        current = list(config.gpu_tiers)
        wider = compatible_tiers(current)
        if len(wider) > len(current):
            mutation = save_endpoint(config, gpuIds=",".join(wider))
            steps += [
                f"{n}. Add every compatible GPU tier to gpuIds ({config.gpu_ids or 'empty'} -> "
                f"{','.join(wider)}):",
                f"   {graphql_curl(mutation)}",
            ]
            n += 1
        elif current:
            steps.append(
                f"{n}. gpuIds ({config.gpu_ids}) already lists every compatible tier up to "
                "80 GB; add a larger tier if the model allows none smaller."
            )
            n += 1
        if config.network_volume_id:
            dc = _datacenter(config, account)
            pinned = f" in {dc}" if dc else ""
            unpin = save_endpoint(config, networkVolumeId="")
            steps += [
                f"{n}. Or drop the network volume pin (volume {config.network_volume_id}{pinned}) "
                "so workers may start in any datacenter (models then load to container disk, "
                "so size containerDiskInGb for them):",
                f"   {graphql_curl(unpin)}",
            ]
            n += 1
            steps.append(
                f"{n}. Or move the models to a new network volume in a datacenter with capacity "
                "(createNetworkVolume with another dataCenterId; not every datacenter offers "
                "storage) and attach it with saveEndpoint networkVolumeId."
            )
            n += 1
    steps.append(f"{n}. Check which GPU types RunPod offers now: {graphql_curl(GPU_TYPES_QUERY)}")
    return "\n".join(steps)


# --- the records ---------------------------------------------------------------------

# (history, thresholds, endpoint id, its known health, its latest config) -> diagnosis
EndpointCheck = Callable[
    [History, Thresholds, str, Sequence[tuple[float, Health]], EndpointConfig | None],
    Finding | None,
]

RULES: tuple[Rule[EndpointCheck], ...] = (
    Rule(
        code="no_gpu_capacity", scope="endpoint", severity="critical", source="health",
        family="capacity", check=_no_gpu_capacity, thresholds=("throttled_cycles",),
        severity_doc="critical while the queue is stalled, else warning",
        raised_when="`workers.throttled > 0` in 2 consecutive cycles",
    ),
    Rule(
        code="not_scheduling", scope="endpoint", severity="critical", source="health",
        family="capacity", check=_not_scheduling, thresholds=("not_scheduling_s",),
        raised_when="jobs queued, none in progress, `workersMax > 0`, every worker count 0, "
        "for 5 min",
    ),
    Rule(
        code="queue_backlog", scope="endpoint", severity="warning", source="health",
        family="capacity", check=_queue_backlog,
        thresholds=("queue_backlog_jobs", "queue_backlog_s"),
        raised_when="≥ 10 queued for 5 min while running equals `workersMax`",
    ),
)
