"""Capacity: no GPU to be had (no_gpu_capacity, not_scheduling) or too few allowed (queue_backlog).

A network volume pins an endpoint's workers to the volume's datacenter; when its GPU tiers
have no free GPU there, RunPod either shows a `throttled` worker (it tried and failed) or
shows nothing at all while jobs sit in the queue. Both are fixed by widening `gpuIds`,
dropping the volume pin, or moving the volume.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from model.history import History
from model.observation import Account, EndpointConfig, GpuStock, Health, Observation
from rules.diagnosis import Diagnosis, evidence
from rules.gpus import compatible_tiers
from rules.remedies import REST, api, read, update_endpoint
from rules.rule import Finding, Rule
from rules.signals import minutes, plural, run_seconds, stalled_run, trailing_run
from rules.thresholds import Thresholds

# A GPU catalog read older than this (seconds before the latest cycle) is not "now": the
# remedy then gives the advice that needs no stock data.
STOCK_MAX_AGE_S = 600.0


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
        remedy=_capacity_remedy(history, eid, config, opening),
        evidence=evidence(
            throttled=h.throttled,
            throttled_cycles=len(run),
            throttled_s=seconds,
            in_queue=h.in_queue,
            in_progress=h.in_progress,
            running=h.running,
            **_config_evidence(config, history.latest_account()),
            **_stock_evidence(history, config),
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
    if not run:
        return None
    seconds = run_seconds(run)
    if seconds < th.not_scheduling_s:
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
        remedy=_capacity_remedy(history, eid, config, opening),
        evidence=evidence(
            in_queue=h.in_queue,
            in_progress=h.in_progress,
            workers_total=h.workers_total,
            not_scheduling_s=seconds,
            cycles=len(run),
            **_config_evidence(config, acct),
            **_stock_evidence(history, config),
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
    if not run:
        return None
    seconds = run_seconds(run)
    if seconds < th.queue_backlog_s:
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
    obs = history.latest
    rest = api(obs) == REST
    steps = [
        f"Throughput is capped by workersMax ({cap}): every allowed worker is running and "
        f"at least {plural(least, 'job')} waited throughout.",
        f"1. Raise workersMax, e.g. to {raised}:",
        f"   {update_endpoint(obs, config, workers_max=raised)}",
    ]
    scaler_name = "the scaling value" if rest else "scalerValue"
    if config.scaler_value is not None and config.scaler_value > 1:
        lower = max(1, config.scaler_value // 2)
        changes: dict[str, object] = {"scaler_value": lower}
        if config.scaler_type:
            changes["scaler_type"] = config.scaler_type
        steps += [
            f"2. Or lower {scaler_name} (now {config.scaler_value}"
            f"{', ' + config.scaler_type if config.scaler_type else ''}), e.g. to {lower}, so "
            f"workers start sooner on a growing queue:",
            f"   {update_endpoint(obs, config, **changes)}",
        ]
    else:
        steps.append(
            f"2. Or lower {scaler_name} (seconds of queue delay for QUEUE_DELAY, requests per "
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
    if config is not None and config.locations:
        return f"{config.locations}, where it is pinned,"
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


# --- live GPU stock (REST v2 catalog) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stock:
    """What the catalog said of the endpoint's compatible tiers, where it may run."""

    age_s: float  # how long ago the catalog was read
    pins: tuple[str, ...]  # the datacenters (or regions) it is pinned to; () = anywhere
    here: dict[str, list[str]]  # tier -> "DC LEVEL" with stock in a pinned datacenter
    elsewhere: dict[str, list[str]]  # tier -> "DC LEVEL" with stock outside the pins
    none: list[str]  # compatible tiers with stock nowhere the endpoint may run


def latest_stock(history: History) -> tuple[tuple[GpuStock, ...], float] | None:
    """The newest GPU catalog read within STOCK_MAX_AGE_S of the latest cycle, and its age."""
    latest = history.latest
    if latest is None:
        return None
    for obs in reversed(history.observations):
        if latest.t - obs.t > STOCK_MAX_AGE_S:
            break
        if obs.gpu_stock is not None:
            return obs.gpu_stock, latest.t - obs.t
    return None


def _pins(config: EndpointConfig, account: Account | None) -> tuple[str, ...]:
    """Where the endpoint may run: its volumes' datacenters when known (a volume pins the
    workers), else its `locations` / dataCenterIds; () when it is not pinned."""
    volumes = config.network_volume_ids or (
        (config.network_volume_id,) if config.network_volume_id else ()
    )
    if volumes and account is not None:
        dcs = tuple(
            dict.fromkeys(
                v.datacenter for v in account.network_volumes if v.id in volumes and v.datacenter
            )
        )
        if dcs:
            return dcs
    return tuple(d.strip() for d in (config.locations or "").split(",") if d.strip())


def _in(dc: str, pins: Sequence[str]) -> bool:
    # GraphQL `locations` may name a region ("US"): a datacenter id starts with it
    return any(dc == p or dc.startswith(p + "-") for p in pins)


def _has_stock(level: str | None) -> bool:
    return level is not None and level.upper() != "NONE"


def read_stock(
    config: EndpointConfig, account: Account | None, catalog: Sequence[GpuStock], age_s: float
) -> Stock | None:
    """The compatible tiers' stock in and outside the endpoint's pins; None when the catalog
    names none of them (nothing to tell)."""
    tiers = compatible_tiers(config.gpu_tiers)
    excluded = {p.strip()[1:].strip() for p in config.gpu_ids.split(",") if p.strip()[:1] == "-"}
    pins = _pins(config, account)
    here: dict[str, list[str]] = {}
    elsewhere: dict[str, list[str]] = {}
    seen = False
    for tier in tiers:
        for gpu in catalog:
            if gpu.pool != tier or gpu.gpu_type in excluded:
                continue
            seen = True
            for dc, level in gpu.datacenters:
                if not _has_stock(level):
                    continue
                where = here if not pins or _in(dc, pins) else elsewhere
                entry = f"{dc} {level.upper()}"
                if entry not in where.setdefault(tier, []):
                    where[tier].append(entry)
    if not seen:
        return None
    none = [t for t in tiers if t not in here]
    return Stock(age_s, pins, here, elsewhere, none)


def _stock(history: History, config: EndpointConfig | None) -> Stock | None:
    """The endpoint's compatible tiers in the latest recent catalog read, if any."""
    catalog = latest_stock(history)
    if config is None or catalog is None:
        return None
    return read_stock(config, history.latest_account(), *catalog)


def _stock_evidence(history: History, config: EndpointConfig | None) -> dict[str, object]:
    stock = _stock(history, config)
    if stock is None:
        return {}
    return evidence(
        stock_read_s_ago=round(stock.age_s, 1),
        stock_where_pinned=_levels(stock.here) or "none",
        stock_elsewhere=_levels(stock.elsewhere) or None,
    )


def _levels(found: dict[str, list[str]]) -> str:
    return "; ".join(f"{tier} ({', '.join(where)})" for tier, where in found.items())


def _stock_steps(
    obs: Observation | None, config: EndpointConfig, stock: Stock, n: int
) -> tuple[list[str], int]:
    """The capacity steps when the catalog was read: widen to the tiers with stock where the
    endpoint runs; drop the pin only when none has stock there and some has elsewhere."""
    current = list(config.gpu_tiers)
    pinned = ", ".join(stock.pins) if stock.pins else "any datacenter"
    read = f"GPU stock by the REST v2 catalog, read {minutes(stock.age_s)} ago"
    steps: list[str] = []
    if stock.here:
        steps.append(
            f"{read}: compatible tiers with stock in {pinned} now: {_levels(stock.here)}"
            + (f"; none there: {', '.join(stock.none)}." if stock.none else ".")
        )
        stocked = [t for t in stock.here if t not in current]
        if stocked:
            wider = current + stocked
            steps += [
                f"{n}. Add the tiers with stock there to the endpoint's GPU pools "
                f"({','.join(current) or 'none'} -> {','.join(wider)}):",
                f"   {update_endpoint(obs, config, gpu_ids=_gpu_ids(config, wider))}",
            ]
            n += 1
        else:
            steps.append(
                f"{n}. Its own tiers ({', '.join(current)}) have stock there: the throttling "
                "should clear as RunPod places a worker; if it persists, the listed stock "
                "is taken, so add a tier of another VRAM size the model fits."
            )
            n += 1
        return steps, n
    if stock.elsewhere and stock.pins:
        steps.append(
            f"{read}: no compatible tier has stock in {pinned} now "
            f"({', '.join(stock.none)}: none); elsewhere: {_levels(stock.elsewhere)}."
        )
        changes: dict[str, Any] = {}
        if config.locations:
            changes["locations"] = None
        if config.network_volume_id or config.network_volume_ids:
            changes.update(network_volume_id=None, network_volume_ids=())
        stocked = [t for t in stock.elsewhere if t not in current]
        if stocked:
            changes["gpu_ids"] = _gpu_ids(config, current + stocked)
        detach = "network_volume_ids" in changes
        steps += [
            f"{n}. Drop the datacenter pin so workers may start where there is stock"
            + (
                " and detach the network volume (models then load to container disk, so "
                "size its disk for them)" if detach else ""
            )
            + (f", with the tiers that have stock ({','.join(stocked)})" if stocked else "")
            + ":",
            f"   {update_endpoint(obs, config, **changes)}",
        ]
        n += 1
        if detach:
            best = _best_datacenter(stock.elsewhere)
            steps.append(
                f"{n}. Or move the models to a new network volume in {best} (stock of "
                "compatible tiers now) and attach it instead."
            )
            n += 1
        return steps, n
    steps.append(
        f"{read}: no compatible tier ({', '.join(stock.none)}) has stock in any datacenter "
        "now, so dropping the datacenter pin would not help: the jobs wait until RunPod "
        "frees capacity."
    )
    wider = compatible_tiers(current)
    if len(wider) > len(current):
        steps += [
            f"{n}. Allow every compatible tier so the first freed GPU of any can take the "
            f"work ({','.join(current)} -> {','.join(wider)}):",
            f"   {update_endpoint(obs, config, gpu_ids=_gpu_ids(config, wider))}",
        ]
        n += 1
    return steps, n


def _best_datacenter(found: dict[str, list[str]]) -> str:
    """The datacenter where the most compatible tiers have stock."""
    counts: dict[str, int] = {}
    for entries in found.values():
        for entry in entries:
            dc = entry.rsplit(" ", 1)[0]
            counts[dc] = counts.get(dc, 0) + 1
    return max(counts, key=lambda dc: counts[dc])


def _gpu_ids(config: EndpointConfig, tiers: Sequence[str]) -> str:
    """`gpuIds` with these pools and the endpoint's excluded types kept."""
    excluded = [p.strip() for p in config.gpu_ids.split(",") if p.strip().startswith("-")]
    return ",".join([*tiers, *excluded])


# --- the remedy ----------------------------------------------------------------------


def _capacity_remedy(
    history: History, eid: str, config: EndpointConfig | None, opening: str
) -> str:
    """Widen the GPU pools, drop the pin, move the volume, check availability; from the
    live catalog when it was read in the last few minutes."""
    obs = history.latest
    account = history.latest_account()
    rest = api(obs) == REST
    steps = [opening]
    n = 1
    stock = _stock(history, config)
    if config is None:
        if rest:
            steps.append(
                f"{n}. Add every compatible GPU pool to the endpoint (PATCH "
                f'/v2/serverless/{eid} with {{"gpu": {{"pools": [...]}}}}, e.g. AMPERE_48, '
                "ADA_48_PRO, AMPERE_80, ADA_80_PRO, keeping any excludedTypes); the listing "
                "gave no configuration for this endpoint, so the call is not prefilled."
            )
            n += 1
            steps.append(
                f'{n}. Or, if it is pinned, drop the pin with {{"dataCenterIds": []}} (and '
                '{"networkVolumes": []} for a network volume), or move the volume to another '
                "datacenter."
            )
        else:
            steps.append(
                f"{n}. Add every compatible GPU tier to the endpoint's gpuIds (comma-separated, "
                "e.g. AMPERE_48,ADA_48_PRO,AMPERE_80,ADA_80_PRO) with a saveEndpoint mutation; "
                "GraphQL gave no configuration for this endpoint, so the mutation is not "
                "prefilled."
            )
            n += 1
            steps.append(
                f'{n}. Or, if a network volume is attached, drop the pin with networkVolumeId: "" '
                "in saveEndpoint, or move the volume to another datacenter."
            )
        n += 1
    elif stock is not None:
        more, n = _stock_steps(obs, config, stock, n)
        steps += more
    else:
        pools = "GPU pools" if rest else "gpuIds"
        current = list(config.gpu_tiers)
        wider = compatible_tiers(current)
        if len(wider) > len(current):
            steps += [
                f"{n}. Add every compatible GPU tier to {pools} ({config.gpu_ids or 'empty'} -> "
                f"{','.join(wider)}):",
                f"   {update_endpoint(obs, config, gpu_ids=_gpu_ids(config, wider))}",
            ]
            n += 1
        elif current:
            steps.append(
                f"{n}. {pools} ({config.gpu_ids}) already lists every compatible tier up to "
                "80 GB; add a larger tier if the model allows none smaller."
            )
            n += 1
        if config.network_volume_id:
            dc = _datacenter(config, account)
            pinned = f" in {dc}" if dc else ""
            unpin: dict[str, Any] = {"network_volume_id": None, "network_volume_ids": ()}
            if rest and config.locations:
                unpin["locations"] = None
            disk = "its disk" if rest else "containerDiskInGb"
            steps += [
                f"{n}. Or drop the network volume pin (volume {config.network_volume_id}{pinned}) "
                "so workers may start in any datacenter (models then load to container disk, "
                f"so size {disk} for them):",
                f"   {update_endpoint(obs, config, **unpin)}",
            ]
            n += 1
            if rest:
                steps.append(
                    f"{n}. Or move the models to a new network volume in a datacenter with "
                    "capacity (POST /v2/network-volumes with another dataCenter; not every "
                    'datacenter offers storage) and attach it with {"networkVolumes": [...]}.'
                )
            else:
                steps.append(
                    f"{n}. Or move the models to a new network volume in a datacenter with "
                    "capacity (createNetworkVolume with another dataCenterId; not every "
                    "datacenter offers storage) and attach it with saveEndpoint networkVolumeId."
                )
            n += 1
    steps.append(f"{n}. Check which GPU types RunPod offers now: {read(obs, 'gpu_stock')}")
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
