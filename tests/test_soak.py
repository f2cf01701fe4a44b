"""Fault soak: the real pipeline, over real loopback HTTP, through thousands of simulated
cycles with RunPod faults injected at random; only the diagnoses the faults warrant appear.

What a fault burst warrants (the oracle below, from spec/diagnoses.md), computed from the
*truth*: the fault the simulator was scripted to answer in each cycle, for each target
(GraphQL, each endpoint's data plane), and whether the target was called at all (the
simulator's request counts; a target the monitor is backing off from is not called, and
its truth that cycle is "skipped": nothing was asked, so nothing failed):

- `runpod_api_errors` while, walking back over the cycles that called the target, the
  last 3 of them saw GraphQL's truth transient (timeout, reset, 429, 5xx, malformed body,
  GraphQL `errors`), or every called endpoint's; a cycle that called none of them neither
  counts nor breaks the run;
- `auth_invalid` while, walking back over the cycles whose truth says anything (GraphQL
  neither transient nor skipped, and not every endpoint so), at least 2 cycles saw a 401/403
  anywhere before one that saw none;
- `endpoint_disabled` on an endpoint whose last 2 known `/health` truths (ok or 404;
  others skipped) were both 404: the endpoint answered 200 earlier and the balance is > 0.

The two account-scope codes must be active after exactly the cycles that warrant them;
`endpoint_disabled` may only be raised where warranted (auth_invalid mutes it); nothing else
may ever be raised.
"""

from __future__ import annotations

import gc
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog

from monitor.alerts.model import Message, Sink
from monitor.alerts.outbox import Outbox
from monitor.alerts.router import AlertRouter
from monitor.config import load_settings
from monitor.pipeline.cycle import Pipeline
from monitor.pipeline.history import HistoryBuffer
from monitor.pipeline.probes import Prober
from monitor.runpod.client import RunPodClient
from monitor.simulator import Scenario, SimulatorServer
from monitor.state.incidents import IncidentTracker
from monitor.state.store import Store

KEY = "soak-test-key-0123456789abcdef"
INTERVAL = 30.0
EPOCH = 1_767_225_600.0
CLIENT_TIMEOUT_S = 0.2
WARMUP = 5  # clean cycles first: every endpoint answers 200 before any fault
GRAPHQL = "graphql"
BUSY, IDLE, ZERO = "soakbusy0001", "soakidle0002", "soakzero0003"
ENDPOINTS = (BUSY, IDLE, ZERO)

REST_FAULTS = ("401", "403", "404", "429", "500", "502", "503", "timeout", "reset", "malformed")
GRAPHQL_FAULTS = ("401", "403", "429", "500", "502", "503", "timeout", "reset", "malformed",
                  "errors")
RETRY_AFTER = (0, 2, 45, 100)  # 429's Retry-After (s): 45 and 100 outlast a cycle
ALLOWED = {"runpod_api_errors", "auth_invalid", "endpoint_disabled"}
NO_ANSWER = ("transient", "skipped")  # truths that tell nothing about the key


# the outcome the client must report for each scripted fault
OUTCOME = {"ok": "ok", "401": "http_401", "403": "http_403", "404": "http_404",
           "429": "http_429", "500": "http_5xx", "502": "http_5xx", "503": "http_5xx",
           "timeout": "timeout", "reset": "connect", "malformed": "malformed",
           "errors": "graphql_error"}


def fault_class(kind: str) -> str:
    """ok, auth, 404 or transient: what a rule reads from the answer."""
    if kind == "ok":
        return "ok"
    if kind in ("401", "403"):
        return "auth"
    if kind == "404":
        return "404"
    return "transient"


def _template(i: int) -> dict[str, Any]:
    return {"id": f"tpl{i}", "name": f"worker{i}", "imageName": f"acme/worker:{i}",
            "dockerArgs": "", "containerDiskInGb": 50,
            "env": [{"key": "LOG_LEVEL", "value": "info"}]}


def base_endpoints() -> list[dict[str, Any]]:
    """A busy endpoint, one idle with a warm worker, one scaled to zero; clean templates."""
    common = {"gpuIds": "AMPERE_48,ADA_48_PRO", "idleTimeout": 5, "scalerType": "QUEUE_DELAY",
              "scalerValue": 4}
    jobs = [{"id": f"job-{i}", "status": "IN_PROGRESS", "delayTime": 800 + i,
             "workerId": f"w{i}"} for i in range(2)]
    return [
        {"id": BUSY, "name": "busy", "workersMin": 1, "workersMax": 3, **common,
         "template": _template(1), "jobs": jobs,
         "health": {"jobs": {"completed": 900, "failed": 3, "inProgress": 2, "inQueue": 0},
                    "workers": {"running": 2, "idle": 0, "ready": 0}}},
        {"id": IDLE, "name": "idle", "workersMin": 1, "workersMax": 2, **common,
         "template": _template(2),
         "health": {"jobs": {"completed": 40}, "workers": {"idle": 1}}},
        {"id": ZERO, "name": "zero", "workersMin": 0, "workersMax": 2, **common,
         "template": _template(3), "health": {"jobs": {"completed": 7}}},
    ]


@dataclass
class Plan:
    """The scripted faults: per cycle (1-based), the fault kind of each target."""

    cycles: int
    steps: list[dict[str, Any]] = field(default_factory=list)
    faults: dict[str, list[str]] = field(default_factory=dict)  # target -> kind per cycle
    bursts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (api, kind)
    fault_cycles: Counter[tuple[str, str]] = field(default_factory=Counter)

    def fault(self, target: str, cycle: int) -> str:
        return self.faults[target][cycle - 1]


def make_plan(seed: int, cycles: int) -> Plan:
    """Quiet stretches of 1-8 cycles and fault bursts of 1-5 cycles, each burst hitting
    GraphQL, one endpoint, or every endpoint, sometimes GraphQL and REST together."""
    rng = random.Random(seed)
    plan = Plan(cycles, faults={t: ["ok"] * cycles for t in (GRAPHQL, *ENDPOINTS)})
    k = 1
    plan.steps.append({"cycles": WARMUP})
    k += WARMUP

    decks: dict[tuple[str, ...], list[str]] = {}

    def pick(kinds: tuple[str, ...]) -> str:
        """Every kind once per round, in random order (so a short run sees them all)."""
        deck = decks.setdefault(kinds, [])
        if not deck:
            deck.extend(kinds)
            rng.shuffle(deck)
        return deck.pop()

    def spec(kind: str, graphql: bool) -> Any:
        if kind == "errors":
            return {"errors": "Something went wrong. Please try again later."}
        if kind == "429":
            return {"code": 429, "retry_after": rng.choice(RETRY_AFTER)}
        return int(kind) if kind.isdigit() else kind

    while k <= cycles:
        quiet = min(rng.randint(1, 8), cycles - k + 1)
        plan.steps.append({"cycles": quiet, "graphql": "ok",
                           "endpoints": {e: {"rest": "ok"} for e in ENDPOINTS}})
        k += quiet
        if k > cycles:
            break
        length = min(rng.randint(1, 5), cycles - k + 1)
        shape = rng.choice(("graphql", "one", "all", "graphql+one", "graphql+all"))
        step: dict[str, Any] = {"cycles": length, "endpoints": {}}
        hit: dict[str, str] = {}
        if shape.startswith("graphql"):
            kind = pick(GRAPHQL_FAULTS)
            step["graphql"] = spec(kind, graphql=True)
            hit[GRAPHQL] = kind
            plan.bursts[("graphql", kind)] += 1
        if shape.endswith(("one", "all")):
            kind = pick(REST_FAULTS)
            targets = [rng.choice(ENDPOINTS)] if shape.endswith("one") else list(ENDPOINTS)
            for e in targets:
                step["endpoints"][e] = {"rest": spec(kind, graphql=False)}
                hit[e] = kind
            plan.bursts[("rest", kind)] += 1
        for target, kind in hit.items():
            api = "graphql" if target == GRAPHQL else "rest"
            for c in range(k, k + length):
                plan.faults[target][c - 1] = kind
                plan.fault_cycles[(api, kind)] += 1
        plan.steps.append(step)
        k += length
    return plan


def scenario_of(plan: Plan, name: str) -> Scenario:
    return Scenario.from_dict({
        "name": name,
        "interval_s": INTERVAL,
        "account": {"clientBalance": 500.0, "currentSpendPerHr": 0.9, "spendLimit": 80},
        "endpoints": base_endpoints(),
        "steps": plan.steps,
    })


# ---------------------------------------------------------------- the oracle


@dataclass
class Truth:
    """What each target really answered in each cycle ("skipped" while not called)."""

    classes: dict[str, list[str]] = field(default_factory=dict)

    def of(self, target: str, cycle: int) -> str:
        return self.classes[target][cycle - 1]

    def auth_state(self, k: int) -> str:
        g = self.of(GRAPHQL, k)
        rest = [self.of(e, k) for e in ENDPOINTS]
        if g == "auth" or "auth" in rest:
            return "auth"
        if g in NO_ANSWER or all(r in NO_ANSWER for r in rest):
            return "unknown"
        return "clear"

    def auth_invalid(self, k: int, horizon: int) -> bool:
        run = 0
        for j in range(k, max(0, k - horizon), -1):
            state = self.auth_state(j)
            if state == "clear":
                break
            run += state == "auth"
        return run >= 2

    def api_errors(self, k: int) -> bool:
        def failed_cycles(targets: tuple[str, ...]) -> int:
            n = 0
            for j in range(k, 0, -1):
                called = [c for t in targets if (c := self.of(t, j)) != "skipped"]
                if not called:
                    continue
                if any(c != "transient" for c in called):
                    break
                n += 1
            return n

        return max(failed_cycles((GRAPHQL,)), failed_cycles(ENDPOINTS)) >= 3

    def not_found(self, endpoint: str, k: int, horizon: int) -> bool:
        run = 0
        for j in range(k, max(0, k - horizon), -1):
            c = self.of(endpoint, j)
            if c not in ("ok", "404"):
                continue
            if c != "404":
                break
            run += 1
        return run >= 2


@dataclass
class SoakResult:
    cycles: int
    plan: Plan
    raised: Counter[str]
    active_cycles: Counter[str]
    skipped: dict[str, int]
    calls: int
    rss_start_kb: int
    rss_end_kb: int
    seconds: float
    alerts: int
    spurious_timeouts: int
    rss_samples: list[tuple[int, int]]

    def report(self) -> str:
        faults = ", ".join(f"{api} {kind}: {n} bursts / {self.plan.fault_cycles[(api, kind)]}"
                           f" cycles" for (api, kind), n in sorted(self.plan.bursts.items()))
        return (
            f"cycles: {self.cycles} in {self.seconds:.1f} s; API calls: {self.calls}; "
            f"probes skipped (back-off / Retry-After): {sum(self.skipped.values())}; "
            f"unscripted timeouts: {self.spurious_timeouts}\n"
            f"faults injected: {sum(self.plan.bursts.values())} bursts, "
            f"{sum(self.plan.fault_cycles.values())} target-cycles: {faults}\n"
            f"diagnoses raised: {dict(sorted(self.raised.items()))}; "
            f"cycles active: {dict(sorted(self.active_cycles.items()))}; "
            f"alerts: {self.alerts}\n"
            f"RSS: {self.rss_start_kb / 1024:.1f} MB -> {self.rss_end_kb / 1024:.1f} MB "
            f"({(self.rss_end_kb - self.rss_start_kb) / 1024:+.2f} MB); along the way: "
            + ", ".join(f"{k}: {kb / 1024:.1f}" for k, kb in self.rss_samples)
        )


class CountingSink(Sink):
    """A sink that only counts what it is given (keeping it would grow memory)."""

    name = "slack"
    min_severity = "info"
    mode = "messages"

    def __init__(self) -> None:
        self.notifications = 0

    async def send(self, message: Message) -> None:
        self.notifications += len(message.notifications)


def rss_kb() -> int:
    """The process's current resident set size, in KiB (/proc/self/statm)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


@contextmanager
def quiet_logs() -> Iterator[None]:
    """Drop the pipeline's log lines (thousands of them) for the run; restore afterwards."""
    old = structlog.get_config()
    structlog.configure(processors=[_drop], cache_logger_on_first_use=False)
    try:
        yield
    finally:
        structlog.configure(**old)


def _drop(*_: Any) -> Any:
    raise structlog.DropEvent


async def soak(seed: int, cycles: int, measure_from: int, workdir: Path) -> SoakResult:
    """Drive the pipeline through `cycles` cycles of a random fault plan; check the oracle.

    As the daemon does: the alert outbox in SQLite (`workdir`), pruned as it goes."""
    plan = make_plan(seed, cycles)
    sc = scenario_of(plan, f"soak-{seed}")
    assert sc.total_cycles == cycles
    settings = load_settings(None, env={})
    horizon = int(settings.state.retention_s // INTERVAL) + 1
    server = SimulatorServer(sc, KEY, timeout_hold_s=2.0)
    url = await server.start()
    sink = CountingSink()
    store = Store(workdir / "soak.db")
    outbox = Outbox(store, [sink])
    router = AlertRouter(outbox=outbox, group_wait_s=0, repeat_interval_s=1e9)
    truth = Truth({t: [] for t in (GRAPHQL, *ENDPOINTS)})
    last = dict.fromkeys(truth.classes, "ok")
    raised: Counter[str] = Counter()
    active_cycles: Counter[str] = Counter()
    problems: list[str] = []
    rss_start = 0
    rss_samples: list[tuple[int, int]] = []  # (cycle, KiB) along the way, for the report
    spurious = 0  # calls that timed out although the simulator answered (host load)
    started = time.perf_counter()
    try:
        async with RunPodClient(api_key=KEY, graphql_url=f"{url}/graphql", rest_url=f"{url}/v2",
                                timeout_s=CLIENT_TIMEOUT_S) as client:
            prober = Prober(client)
            pipeline = Pipeline(
                prober=prober,
                thresholds=settings.rules,
                history=HistoryBuffer(settings.state.retention_s),
                tracker=IncidentTracker(),
                router=router,
            )
            for k in range(1, cycles + 1):
                if k == measure_from:
                    gc.collect()
                    rss_start = rss_kb()
                if k >= measure_from and (k - measure_from) % max(cycles // 10, 1) == 0:
                    rss_samples.append((k, rss_kb()))
                server.set_cycle(k)
                before = _counts(server)
                t = EPOCH + (k - 1) * INTERVAL
                out = await pipeline.cycle(k, t)
                await outbox.deliver(t)
                if k % 100 == 0:
                    store.prune_outbox(t - settings.state.retention_s)
                after = _counts(server)
                seen = {c.endpoint_id or GRAPHQL: c.outcome for c in out.calls
                        if c.probe in ("graphql", "health")}
                for target in truth.classes:
                    received = after[target] > before[target]
                    if target not in seen:  # not called: backing off, nothing asked
                        if received:
                            problems.append(f"cycle {k}: {target} not probed, yet called")
                        truth.classes[target].append("skipped")
                        continue
                    if seen[target] == "timeout" != OUTCOME[plan.fault(target, k)]:
                        # a real timeout on a loaded host (the answer, or even the request's
                        # arrival, came too late): the monitor really saw no answer
                        spurious += 1
                        last[target] = "transient"
                    elif not received:
                        problems.append(f"cycle {k}: {target} saw {seen[target]}, "
                                        "but the simulator got no request")
                    else:
                        kind = plan.fault(target, k)
                        last[target] = fault_class(kind)
                        if seen[target] != OUTCOME[kind]:
                            problems.append(f"cycle {k}: {target} answered {kind}, "
                                            f"the client saw {seen[target]}")
                    truth.classes[target].append(last[target])
                active = {(d.code, d.endpoint_id) for d in out.active}
                for code, _ in active:
                    active_cycles[code] += 1
                for inc in out.changes.raised:
                    code, eid = inc.key
                    raised[code] += 1
                    if code not in ALLOWED:
                        problems.append(f"cycle {k}: {code} on {eid} raised")
                    elif code == "endpoint_disabled" and not (
                        eid is not None and truth.not_found(eid, k, horizon)
                    ):
                        problems.append(f"cycle {k}: endpoint_disabled on {eid} unwarranted")
                want = {
                    "runpod_api_errors": truth.api_errors(k),
                    "auth_invalid": truth.auth_invalid(k, horizon),
                }
                for code, warranted in want.items():
                    if ((code, None) in active) != warranted:
                        state = "active" if (code, None) in active else "inactive"
                        problems.append(f"cycle {k}: {code} {state}, warranted={warranted}; "
                                        f"truth {[truth.of(t, k) for t in truth.classes]}")
                if len(problems) > 20:
                    break
            gc.collect()
            rss_end = rss_kb()
            rss_samples.append((cycles, rss_end))
    finally:
        await server.stop()
        store.close()
    assert not problems, "\n".join(problems)
    calls = sum(server.request_counts.values())
    return SoakResult(cycles, plan, raised, active_cycles, dict(prober.skipped), calls,
                      rss_start, rss_end, time.perf_counter() - started, sink.notifications,
                      spurious, rss_samples)


def _counts(server: SimulatorServer) -> dict[str, int]:
    counts = {e: server.request_counts[(e, "health")] for e in ENDPOINTS}
    counts[GRAPHQL] = sum(n for (who, _), n in server.request_counts.items() if who == "graphql")
    return counts


def check(result: SoakResult, rss_limit_mb: float) -> None:
    print(f"\nsoak {result.plan.cycles} cycles:\n{result.report()}")
    kinds_hit = {kind for (_, kind) in result.plan.bursts}
    assert kinds_hit >= set(REST_FAULTS) | set(GRAPHQL_FAULTS)
    assert result.raised["runpod_api_errors"] > 0
    assert result.raised["auth_invalid"] > 0
    assert (result.rss_end_kb - result.rss_start_kb) / 1024 < rss_limit_mb
    assert result.spurious_timeouts <= result.calls // 50


async def test_fault_soak_short(tmp_path: Path) -> None:
    """200 cycles of random faults: no crash, only warranted diagnoses, exactly when warranted."""
    with quiet_logs():
        result = await soak(seed=20260101, cycles=200, measure_from=50, workdir=tmp_path)
    check(result, rss_limit_mb=10)


@pytest.mark.soak
async def test_fault_soak_long(tmp_path: Path) -> None:
    """2,000+ cycles (SOAK_CYCLES) of faults: no crash, only warranted diagnoses, flat RSS."""
    cycles = int(os.environ.get("SOAK_CYCLES", "2000"))
    seed = int(os.environ.get("SOAK_SEED", "7"))
    with quiet_logs():
        result = await soak(seed=seed, cycles=cycles, measure_from=200, workdir=tmp_path)
    check(result, rss_limit_mb=10)
