"""A tiny builder of histories for rule tests.

One `Observation` per cycle, at ``t = (cycle - 1) * interval_s`` (30 s by default), with the
health, jobs, configuration, account and probe outcomes a test gives. ``None`` for a health
means the `/health` probe failed (an unknown sample, outcome "timeout" unless told).

    h = Health(in_queue=2, throttled=1)
    history = endpoint_history([h, None, h], config=config(gpu_ids="AMPERE_48"))

For several endpoints or account-level tests, build the observations yourself:

    obs = [observation(c, [sample(Health(), endpoint_id="a"), sample(None, endpoint_id="b")],
                       account=account(balance=3.0)) for c in range(1, 4)]
    history = build(obs)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from model.history import History, Memory
from model.observation import (
    OK,
    Account,
    EndpointConfig,
    EndpointSample,
    EnvVar,
    GpuStock,
    Health,
    Job,
    NetworkVolume,
    Observation,
    Pod,
    Release,
    ReleaseChange,
    Releases,
    Template,
    Worker,
    Workers,
)
from rules.thresholds import Thresholds

INTERVAL_S = 30.0
EID = "ep1"
NAME = "mocha-video"
TH = Thresholds.model_validate({})

__all__ = [
    "CONFIG",
    "EID",
    "INTERVAL_S",
    "NAME",
    "TH",
    "Health",
    "Job",
    "Memory",
    "account",
    "build",
    "config",
    "endpoint_history",
    "healthy_traffic",
    "job",
    "observation",
    "prefixes",
    "release",
    "releases",
    "sample",
    "template",
    "worker",
    "workers",
]


def template(
    id: str = "tpl-1",
    *,
    name: str = "worker",
    image_name: str = "example/worker:1",
    docker_args: str = "",
    container_disk_gb: int | None = 40,
    env: Iterable[tuple[str, str]] = (),
) -> Template:
    """A template; `env` as (key, value) pairs."""
    return Template(
        id=id,
        name=name,
        image_name=image_name,
        docker_args=docker_args,
        container_disk_gb=container_disk_gb,
        env=tuple(EnvVar(k, v) for k, v in env),
    )


def config(
    endpoint_id: str = EID,
    *,
    name: str = NAME,
    gpu_ids: str = "AMPERE_48",
    network_volume_id: str | None = None,
    workers_min: int = 0,
    workers_max: int = 1,
    idle_timeout: int | None = 5,
    template: Template | None = None,
    **extra: Any,
) -> EndpointConfig:
    """An endpoint's GraphQL configuration; `extra` sets any other EndpointConfig field."""
    return EndpointConfig(
        id=endpoint_id,
        name=name,
        gpu_ids=gpu_ids,
        network_volume_id=network_volume_id,
        workers_min=workers_min,
        workers_max=workers_max,
        idle_timeout=idle_timeout,
        template=template,
        **extra,
    )


CONFIG = config()


def account(
    balance: float = 100.0,
    spend_per_hr: float = 0.0,
    *,
    spend_limit: float | None = None,
    volumes: Iterable[NetworkVolume] = (),
    pods: Iterable[Pod] = (),
    billing_mode: str | None = None,
) -> Account:
    """The account scalars, volumes and pods."""
    return Account(
        balance, spend_per_hr, spend_limit, tuple(volumes), tuple(pods), billing_mode
    )


def job(
    id: str,
    status: str = "IN_QUEUE",
    *,
    delay_ms: int | None = None,
    execution_ms: int | None = None,
    worker_id: str | None = None,
    error: str | None = None,
) -> Job:
    """A job as `/requests` or `/status` describes it."""
    return Job(id, status, delay_ms, execution_ms, worker_id, error)


def worker(
    id: str,
    status: str = "RUNNING",
    *,
    version: int | None = 1,
    stale: bool = False,
    started_at: float | None = None,
    uptime_s: int | None = None,
    image: str | None = "example/worker:1",
) -> Worker:
    """One REST v2 worker record."""
    return Worker(id, status, stale=stale, version=version, started_at=started_at,
                  uptime_s=uptime_s, image=image)


def workers(*ws: Worker, version: int | None = 1) -> Workers:
    """One `/workers` answer (`endpointVersion` and the active workers)."""
    return Workers(version, tuple(ws))


def release(
    version: int, created_at: float | None = None, *changes: tuple[str, str, str]
) -> Release:
    """A release; each change as (field, old, new) in compact JSON text."""
    return Release(version, created_at, "MANUAL", None, None,
                   tuple(ReleaseChange(f, o, n) for f, o, n in changes))


def releases(*rs: Release, version: int | None = None,
             in_progress: bool | None = None, percent: float | None = None) -> Releases:
    """One `/releases` answer; `version` defaults to the newest release's."""
    v = version if version is not None else (max(r.version for r in rs) if rs else None)
    return Releases(v, tuple(sorted(rs, key=lambda r: -r.version)), in_progress, percent)


def sample(
    health: Health | None,
    *,
    endpoint_id: str = EID,
    outcome: str | None = None,
    http_status: int | None = None,
    jobs: Sequence[Job] | None = None,
    config: EndpointConfig | None = None,
    listed: bool | None = None,
    workers: Workers | None = None,
    releases: Releases | None = None,
) -> EndpointSample:
    """One endpoint's sample. Without `outcome`: "ok" with a health, else "timeout"."""
    if outcome is None:
        outcome = OK if health is not None else "timeout"
    if http_status is None:
        if health is not None:
            http_status = 200
        elif outcome.startswith("http_") and outcome[5:].isdigit():
            http_status = int(outcome[5:])
        else:
            http_status = 0
    if listed is None and config is not None:
        listed = True
    return EndpointSample(
        endpoint_id=endpoint_id,
        health_outcome=outcome,
        http_status=http_status,
        health=health,
        jobs=tuple(jobs) if jobs is not None else None,
        listed=listed,
        config=config,
        workers=workers,
        releases=releases,
    )


def observation(
    cycle: int,
    samples: Iterable[EndpointSample] = (),
    *,
    account: Account | None = None,
    control_outcome: str = OK,
    control_status: int | None = None,
    listed_ids: Iterable[str] | None = None,
    interval_s: float = INTERVAL_S,
    control_plane: str = "graphql",
    gpu_stock: Sequence[GpuStock] | None = None,
) -> Observation:
    """One cycle's observation at t = (cycle - 1) * interval_s.

    Without `listed_ids`, a successful GraphQL answer lists the samples whose `listed` is
    not False; a failed one lists nothing (None). `control_plane` is the API remedies
    quote ("rest" also marks the endpoints as listed by REST v2); `gpu_stock` the v2
    catalog read this cycle.
    """
    eps = {s.endpoint_id: s for s in samples}
    ok = control_outcome == OK
    if listed_ids is None:
        ids = frozenset(e for e, s in eps.items() if s.listed is not False) if ok else None
    else:
        ids = frozenset(listed_ids)
    if control_status is None:
        control_status = 200 if ok else 0
    return Observation(
        cycle=cycle,
        t=(cycle - 1) * interval_s,
        control_outcome=control_outcome,
        control_status=control_status,
        account=account,
        listed_ids=ids,
        endpoints=eps,
        control_plane=control_plane,
        sources={"endpoints": control_plane},
        gpu_stock=tuple(gpu_stock) if gpu_stock is not None else None,
    )


def build(observations: Sequence[Observation], memory: Memory | None = None) -> History:
    """A history of the observations; without `memory`, the one they build up themselves."""
    if memory is None:
        memory = Memory()
        for o in observations:
            memory = memory.updated(o)
    return History(tuple(observations), memory)


def endpoint_history(
    healths: Sequence[Health | None],
    *,
    endpoint_id: str = EID,
    config: EndpointConfig | None = CONFIG,
    jobs: Sequence[Sequence[Job] | None] | None = None,
    account: Account | None = None,
    outcome_unknown: str = "timeout",
    memory: Memory | None = None,
    first_cycle: int = 1,
    interval_s: float = INTERVAL_S,
    workers: Sequence[Workers | None] | None = None,
    releases: Sequence[Releases | None] | None = None,
    control_plane: str = "graphql",
    gpu_stock: Sequence[GpuStock] | None = None,
) -> History:
    """One endpoint over len(healths) cycles; a None health is an unknown sample.

    `config` and `account` repeat on every cycle (pass config=None for "GraphQL gave no
    configuration"); `jobs`, `workers` and `releases`, when given, hold one entry per
    cycle (None: not asked); `control_plane` on every cycle, `gpu_stock` read on the last
    one only.
    """
    for name, per in (("jobs", jobs), ("workers", workers), ("releases", releases)):
        if per is not None and len(per) != len(healths):
            raise ValueError(f"{name} needs one entry per cycle")
    obs = []
    for i, h in enumerate(healths):
        s = sample(
            h,
            endpoint_id=endpoint_id,
            outcome=None if h is not None else outcome_unknown,
            jobs=jobs[i] if jobs is not None else None,
            config=config,
            workers=workers[i] if workers is not None else None,
            releases=releases[i] if releases is not None else None,
        )
        last = i == len(healths) - 1
        obs.append(
            observation(
                first_cycle + i, [s], account=account, interval_s=interval_s,
                control_plane=control_plane, gpu_stock=gpu_stock if last else None,
            )
        )
    return build(obs, memory)


def prefixes(history: History) -> Iterator[History]:
    """The history as the rules saw it at every cycle: its first 1, 2, ... observations."""
    obs = list(history.observations)
    for i in range(1, len(obs) + 1):
        yield build(obs[:i])


def healthy_traffic() -> History:
    """scenarios/healthy-traffic.yaml: a cold start, a burst worked off, back to zero.

    Nothing is wrong here, so no rule may raise at any cycle (see `prefixes`).
    """
    cfg = config(
        "ep7healthy01",
        name="sdxl-images",
        gpu_ids="AMPERE_48,ADA_48_PRO,AMPERE_80",
        network_volume_id="vol-tx3",
        workers_max=3,
        scaler_type="QUEUE_DELAY",
        scaler_value=4,
        template=template("tpl-sdxl", container_disk_gb=40),
    )
    volume = NetworkVolume("vol-tx3", "models", 50, "US-TX-3")
    base = Health(completed=1200, failed=3)
    phases: list[tuple[int, Health, list[Job] | None, float]] = [
        (3, base, None, 0.047),
        (
            2,
            Health(completed=1200, failed=3, in_queue=6, initializing=1),
            [job("j-101"), job("j-102")],
            1.95,
        ),
        (
            4,
            Health(completed=1204, failed=3, in_progress=2, in_queue=3, running=2),
            [job("j-101", "IN_PROGRESS", delay_ms=41200, worker_id="w-a"), job("j-103")],
            1.95,
        ),
        (
            3,
            Health(completed=1210, failed=3, idle=2, ready=2),
            [job("j-103", "COMPLETED", delay_ms=900, execution_ms=6100, worker_id="w-b")],
            1.95,
        ),
        (6, Health(completed=1210, failed=3), [], 0.047),
    ]
    obs: list[Observation] = []
    for cycles, h, jobs, spend in phases:
        for _ in range(cycles):
            s = sample(h, endpoint_id=cfg.id, jobs=jobs, config=cfg)
            acct = account(250.0, spend, spend_limit=80, volumes=[volume])
            obs.append(observation(len(obs) + 1, [s], account=acct))
    return build(obs)
