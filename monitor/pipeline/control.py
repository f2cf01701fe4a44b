"""The control plane of one cycle: the endpoint listing and the account facts, from the API
`runpod.control_plane` names, and the REST v2 calls per endpoint within the v2 budget.

    graphql  GraphQL `myself` each cycle (account, endpoints, volumes, pods), as before
    rest     REST v2 only: `GET /serverless` and the slow facts (balance, limits, billing,
             volumes, pods, GPU catalog) on the periods `monitor.pipeline.budget.Planner` keeps,
             each kept between its reads; the spend per hour derived from billing
    auto     rest, plus a one-field GraphQL query for the current spend per hour (which v2
             lacks) while GraphQL answers; once GraphQL answers that it is retired, that is
             a known state (`graphql_state`), logged once, and GraphQL is not asked again

The data plane (/health, /requests, /status) is not budgeted here: it covers every watched
endpoint every cycle (`monitor.pipeline.probes`). After it, `after_data_plane` plans this cycle's v2
calls from what the data plane saw (trouble first, then busy, then quiet in turn) and runs
them: `/workers`, `/releases` when the version moved or stale workers show, the list and
the slow facts when due, and the worker logs a diagnosis asked for. When the cycle's first
v2 call finds RunPod unreachable (connection error, timeout), the rest wait for the next
cycle (`ControlPlane.held_back`).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import structlog

from model.observation import (
    AUTH_OUTCOMES,
    OK,
    RETIRED,
    SKIPPED,
    Account,
    EndpointConfig,
    EndpointSample,
    GpuStock,
    NetworkVolume,
    Pod,
    Releases,
    WorkerLogs,
    Workers,
)
from monitor.pipeline.budget import Need, Plan, Planner, Tier, V2Budget
from monitor.runpod.client import RunPodClient
from monitor.runpod.models import (
    AccountLimits,
    Balance,
    Failure,
    Ok,
    Result,
    ServerlessSpend,
)
from rules.account import HOURS_PER_MONTH, volume_month_usd
from rules.thresholds import Thresholds

log = structlog.get_logger("monitor.pipeline.control")

Mode = Literal["auto", "rest", "graphql"]

# A kept slow fact is used for this many of its periods, then it is unknown.
KEEP_PERIODS = 2.5
# The listing is read every cycle while its pages take at most 1/this of the allowance.
CHEAP_LIST_SHARE = 4
# At most this many worker-log reads per cycle (each is one v2 call, kept in reserve).
MAX_LOG_READS = 3
# Failures that say RunPod could not be reached at all: when the cycle's first v2 call ends
# so, the rest of the cycle's control-plane calls are held back (an unreachable API would
# only time each of them out too) and go the next cycle.
UNREACHABLE = frozenset({"connect", "timeout"})


def storage_per_hr(volumes: Sequence[NetworkVolume], prices: Thresholds) -> float:
    """What the network volumes cost per hour at the configured list prices (`rules:`
    volume_usd_per_gb_month*, the prices idle_spend quotes)."""
    return sum(volume_month_usd(v.size_gb, prices) for v in volumes) / HOURS_PER_MONTH


def serverless_now(
    billing: ServerlessSpend, samples: Sequence[EndpointSample],
    listed: Sequence[EndpointConfig] | None = None,
) -> float:
    """The serverless spend per hour now: each endpoint's rate in billing's last complete
    hour while it has billed workers now, 0 while it has none (or answers 404: disabled or
    gone); an endpoint whose /health gave nothing this cycle keeps its billed rate. One not
    billed yet (new) counts 0 until its first complete hour: an estimate from list prices
    could only overstate what a discounted account pays, and a low-balance alarm must not
    come from a guess. An endpoint the listing no longer has (deleted) spends nothing."""
    rates = dict(billing.per_endpoint)
    if listed is not None:
        ids = {e.id for e in listed}
        rates = {k: v for k, v in rates.items() if k in ids}
    for s in samples:
        h = s.health
        if s.health_outcome == "http_404" or (h is not None and h.workers_billed == 0):
            rates[s.endpoint_id] = 0.0
    return sum(rates.values())


def derived_spend_per_hr(
    serverless: float | None, pods: Sequence[Pod], volumes: Sequence[NetworkVolume],
    prices: Thresholds,
) -> float | None:
    """The account's spend per hour from v2 alone (v2 has no `currentSpendPerHr`, spec
    2.1): the serverless spend now (`serverless_now`), plus the running pods' cost and the
    volumes' storage at list price. None while the billing is unknown."""
    if serverless is None:
        return None
    pods_now = sum(p.cost_per_hr for p in pods if p.desired_status == "RUNNING")
    return serverless + pods_now + storage_per_hr(volumes, prices)


@dataclass(frozen=True, slots=True)
class Call:
    """One API call of the control plane, for the probe metrics (see `ProbeCall`)."""

    probe: str
    result: Result[Any]
    endpoint_id: str | None = None


@dataclass(frozen=True, slots=True)
class Hints:
    """What the pipeline knows before a cycle's probes: the endpoints with an active
    diagnosis, and the workers whose logs a diagnosis asks for."""

    active_endpoints: frozenset[str] = frozenset()
    wanted_logs: tuple[tuple[str, str], ...] = ()


NO_HINTS = Hints()


@dataclass(frozen=True, slots=True)
class Listing:
    """The endpoint listing this cycle works with, and the outcome of the call that fed it
    (SKIPPED when no call was made this cycle: a kept listing, or a gate held it back)."""

    outcome: str
    status: int
    endpoints: tuple[EndpointConfig, ...] | None
    source: str


@dataclass(frozen=True, slots=True)
class AccountFacts:
    account: Account | None
    sources: Mapping[str, str] = field(default_factory=dict)
    endpoint_spend: Mapping[str, float] | None = None
    gpu_stock: tuple[GpuStock, ...] | None = None


@dataclass(frozen=True, slots=True)
class EndpointV2:
    """What REST v2 answered for one endpoint this cycle (None: not asked, or failed)."""

    workers: Workers | None = None
    releases: Releases | None = None
    logs: tuple[WorkerLogs, ...] | None = None


@dataclass(slots=True)
class _Kept:
    value: Any
    t: float


class ControlPlane:
    """The v2 side of the prober: budget, plan, the kept slow facts, GraphQL's state."""

    def __init__(
        self, client: RunPodClient, mode: Mode, *,
        budget: V2Budget | None = None, planner: Planner | None = None, page_size: int = 100,
        log_reserve: int = 2, prices: Thresholds | None = None,
    ) -> None:
        self.client = client
        self.page_size = max(1, page_size)  # runpod.v2_pagination.page_size: list cost
        self.log_reserve = log_reserve  # runpod.v2_budget.reserve: calls kept for logs
        # the storage prices of the derived spend (the `rules:` ones idle_spend quotes)
        self.prices = prices if prices is not None else Thresholds.model_validate({})
        self.mode: Mode = mode
        self.budget = budget or V2Budget()
        self.planner = planner or Planner()
        self.graphql_retired = False
        self.last_plan: Plan | None = None
        self._kept: dict[str, _Kept] = {}
        self._listing: tuple[EndpointConfig, ...] | None = None
        self._listed_at: float | None = None
        self._last_list_ok = False  # whether the last listing call answered
        self._spend_graphql: tuple[float, float | None] | None = None  # (spend, limit)
        self._trouble = 0  # endpoints in trouble in the last plan
        self._list_later = False  # list_first left a cheap list to this cycle's plan
        # the last worker records and releases per endpoint: what the next plan needs
        self.workers: dict[str, Workers] = {}
        self.releases: dict[str, Releases] = {}
        # this cycle: its time, the v2 calls sent, whether the first found RunPod
        # unreachable, and the calls held back for that (probe name -> count)
        self._cycle_t: float | None = None
        self._sent = 0
        self.unreachable: str | None = None  # the failure kind (UNREACHABLE) that said so
        self.held_back: Counter[str] = Counter()

    @property
    def remedy_api(self) -> str:
        """The API remedies quote: GraphQL only when the config says so."""
        return "graphql" if self.mode == "graphql" else "rest"

    @property
    def listing(self) -> tuple[EndpointConfig, ...] | None:
        """The last endpoint listing v2 gave (None before the first)."""
        return self._listing

    # -- GraphQL's state ----------------------------------------------------------------

    def note_graphql(self, result: Result[Any]) -> None:
        """Take a GraphQL answer; one that says GraphQL is retired is logged once and kept."""
        if isinstance(result, Failure) and result.kind == RETIRED and not self.graphql_retired:
            self.graphql_retired = True
            log.warning("graphql_retired", status=result.status, message=result.message,
                        control_plane=self.mode,
                        effect="reading REST v2 only" if self.mode != "graphql"
                        else "control-plane facts unknown: set runpod.control_plane: auto")

    @property
    def graphql_state(self) -> str | None:
        return RETIRED if self.graphql_retired else None

    async def graphql_spend(self, calls: list[Call]) -> None:
        """auto: the current spend per hour from GraphQL, while it answers (held back in a
        cycle whose endpoint list found RunPod unreachable: the same API host)."""
        if self.mode != "auto" or self.graphql_retired:
            return
        if self.unreachable is not None:
            self._hold("graphql")
            self._spend_graphql = None
            return
        result = await self.client.spend()
        calls.append(Call("graphql", result))
        self.note_graphql(result)
        if isinstance(result, Ok) and result.value.account is not None:
            a = result.value.account
            self._spend_graphql = (a.spend_per_hr, a.spend_limit)
        else:
            self._spend_graphql = None

    def graphql_spend_unknown(self) -> None:
        """auto: no spend query this cycle (GraphQL's gate held it back): its value unknown."""
        self._spend_graphql = None

    # -- v2 calls, each counted against the budget ------------------------------------------

    def _begin(self, t: float, *, new: bool = False) -> None:
        """Start the cycle at `t` once (every entry point of a cycle calls it; `new`: the
        cycle's first, whatever `t`)."""
        if new or self._cycle_t != t:
            self._cycle_t = t
            self._sent = 0
            self.unreachable = None
            self.held_back = Counter()

    def _hold(self, probe: str, n: int = 1) -> None:
        if n > 0:
            self.held_back[probe] += n

    async def _v2(self, kind: str, t: float, call: Awaitable[Result[Any]],
                  pages: Callable[[Any], int] | None = None) -> Result[Any]:
        self._begin(t)
        first = self._sent == 0
        self._sent += 1
        self.budget.spend(1, t, kind)
        result = await call
        if first and isinstance(result, Failure) and result.kind in UNREACHABLE:
            self.unreachable = result.kind
        answers = 1
        if pages is not None and isinstance(result, Ok):
            # each further page was a call, answered before the last page's headers: the
            # server's `r` there counts them all, so they are neither in flight nor spent twice
            answers = max(1, pages(result.value))
            self.budget.spend(answers - 1, t, kind)
        rate = result.rate
        ratelimit = rate.rate_limit if rate is not None else None
        policy = rate.rate_limit_policy if rate is not None else None
        if isinstance(result, Failure) and result.kind == "http_429":
            if result.status:  # 0: our own limiter refused it before sending
                self.budget.on_429(result.retry_after_s, t, ratelimit, policy)
        elif isinstance(result, Ok) or result.status:
            self.budget.observe(ratelimit, policy, t, result.status or 200, answers)
        return result

    def _reserve(self, hints: Hints) -> int:
        """Calls kept back for this cycle's worker-log reads: only as many as are wanted."""
        return min(self.log_reserve, len(hints.wanted_logs), MAX_LOG_READS)

    async def list_first(
        self, t: float, interval_s: float | None, hints: Hints, calls: list[Call]
    ) -> None:
        """List the endpoints before the data plane, as GraphQL did, when the list is due
        (never read yet, or its period came round) or cheap (its pages take at most a
        `CHEAP_LIST_SHARE`th of this cycle's allowance): the data plane then watches this
        cycle's endpoints, and a config change counts from the cycle it shows."""
        self._begin(t, new=True)
        interval = interval_s or 30.0
        pages = max(1, -(-len(self._listing or ()) // self.page_size))
        allowance = self.budget.allowance(t, interval, reserve=self._reserve(hints))
        if self._listing is None:
            # nothing to watch without it: the first list goes whenever the budget has room,
            # paced or not
            if not self.budget.can_spend(t, pages):
                return
        elif not (self.planner.list_due(t, interval) or pages * CHEAP_LIST_SHARE <= allowance) \
                or allowance < pages:
            return
        elif self.budget.allowance(t, interval, reserve=self._reserve(hints),
                                   pending=pages) < self._trouble:
            # the list would leave too little for the endpoints in trouble last cycle (10
            # pages of a 19-call allowance at N = 1000): their /workers come first, and the
            # plan lists after them if the allowance leaves room
            self._list_later = pages * CHEAP_LIST_SHARE <= allowance
            return
        await self._list(t, calls)

    async def _list(self, t: float, calls: list[Call]) -> None:
        result = await self._v2("list", t, self.client.list_endpoints(),
                                pages=lambda items: -(-len(items) // self.page_size))
        calls.append(Call("v2_endpoints", result))
        self._take_listing(result, t)
        self.planner.report(t, listed=isinstance(result, Ok))

    def _take_listing(self, result: Result[Any], t: float) -> None:
        if isinstance(result, Ok):
            self._listing = result.value
            self._listed_at = t

    def listing_now(self, calls: Sequence[Call]) -> Listing:
        """The listing the cycle works with: this cycle's call's outcome when one was made.
        A cycle without a listing call keeps the last listing (OK) while the last call
        answered; after a failed one it is SKIPPED (unknown, not a failure again); either
        way a v2 call refused for the key this cycle (401/403) is that outcome, so a key
        revoked between two listings is seen the cycle it happens."""
        made = [c for c in calls if c.probe == "v2_endpoints"]
        if made:
            outcome, status = outcome_of(made[-1].result)
            self._last_list_ok = outcome == OK
            if outcome != OK and self._listing is not None:
                return Listing(outcome, status, None, "rest")
            return Listing(outcome, status, self._listing, "rest")
        refused = [c for c in calls if c.probe.startswith("v2_")
                   and isinstance(c.result, Failure) and c.result.kind in AUTH_OUTCOMES]
        if refused:
            outcome, status = outcome_of(refused[0].result)
            return Listing(outcome, status, None, "rest")
        if self._listing is None or not self._last_list_ok:
            return Listing(SKIPPED, 0, None, "rest")
        return Listing(OK, 200, self._listing, "rest")

    # -- after the data plane: the plan ---------------------------------------------------------

    def needs(
        self, samples: Sequence[EndpointSample], previous: Mapping[str, EndpointSample],
        hints: Hints,
    ) -> list[Need]:
        """Each watched endpoint's tier this cycle, and whether its releases are wanted."""
        out = []
        for s in samples:
            eid = s.endpoint_id
            h = s.health
            before = previous.get(eid)
            workers = self.workers.get(eid)
            releases = self.releases.get(eid)
            trouble = eid in hints.active_endpoints
            busy = False
            if h is not None:
                busy = bool(h.in_queue or h.in_progress or h.running)
                if h.unhealthy or h.throttled:
                    trouble = True
                if h.in_queue and not h.in_progress:
                    b = before.health if before is not None else None
                    # a queue nothing works on that did not move since the last cycle, or
                    # one seen for the first time (cycle 1 of a crash storm): whether it
                    # moves is unknown, and its /workers tell it before the next cycle does
                    if b is None or (h.completed, h.failed) == (b.completed, b.failed):
                        trouble = True
            stale = workers is not None and any(w.stale for w in workers.workers)
            versioned = workers is not None and workers.endpoint_version is not None
            # releases never read is no news of a version change: they are wanted, but an
            # endpoint first seen is not trouble (at N = 1000 the busy ones' first reads
            # would crowd the endpoints really in trouble out of the allowance)
            unread = versioned and releases is None
            version_moved = (
                versioned and releases is not None and workers is not None
                and releases.endpoint_version != workers.endpoint_version
            )
            if version_moved:
                trouble = True
            want_releases = stale or version_moved or unread
            tier: Tier = "trouble" if trouble else "busy" if busy else "quiet"
            out.append(Need(eid, tier, want_releases))
        return out

    async def after_data_plane(
        self, t: float, interval_s: float | None, samples: Sequence[EndpointSample],
        previous: Mapping[str, EndpointSample], hints: Hints, calls: list[Call],
    ) -> dict[str, EndpointV2]:
        """Plan and run this cycle's v2 calls; what each endpoint got. When this cycle's
        first v2 call (the list before the data plane, else the first of the plan, sent
        alone) finds RunPod unreachable, the rest are held back: counted in `held_back`,
        each due again, first in line, next cycle."""
        self._begin(t)
        interval = interval_s or 30.0
        wanted_logs = [(e, w) for e, w in hints.wanted_logs
                       if e in {s.endpoint_id for s in samples}][:MAX_LOG_READS]
        allowance = self.budget.allowance(t, interval, reserve=self._reserve(hints))
        listing_pages = max(1, -(-len(self._listing or ()) // self.page_size))
        needs = self.needs(samples, previous, hints)
        plan = self.planner.plan(
            t, interval, allowance, needs, costs={"list": listing_pages},
            list_now=self._list_later,
        )
        self._list_later = False
        self._trouble = sum(1 for n in needs if n.tier == "trouble")
        self.last_plan = plan
        client = self.client

        facts_ok: list[str] = []
        facts_failed: list[str] = []

        async def fact_call(fact: str) -> None:
            fetch: Callable[[], Awaitable[Result[Any]]] = {
                "balance": client.balance, "account_limits": client.account_limits,
                "billing": client.serverless_spend, "network_volumes": client.network_volumes,
                "pods": client.pods, "catalog": client.gpu_stock,
            }[fact]
            result = await self._v2(fact, t, fetch())
            calls.append(Call(f"v2_{fact}", result))
            if isinstance(result, Ok):
                self._kept[fact] = _Kept(result.value, t)
                facts_ok.append(fact)
            else:
                facts_failed.append(fact)

        workers_got: dict[str, Workers] = {}
        releases_got: dict[str, Releases] = {}

        async def workers_call(eid: str) -> None:
            result = await self._v2("workers", t, client.endpoint_workers(eid))
            calls.append(Call("v2_workers", result, eid))
            if isinstance(result, Ok):
                self.workers[eid] = workers_got[eid] = result.value

        async def releases_call(eid: str) -> None:
            result = await self._v2("releases", t, client.endpoint_releases(eid))
            calls.append(Call("v2_releases", result, eid))
            if isinstance(result, Ok):
                self.releases[eid] = releases_got[eid] = result.value

        # (what, the call): made only when sent, so a call held back is never created
        jobs: list[tuple[tuple[str, str], Callable[[], Awaitable[None]]]] = [
            (("workers", e), partial(workers_call, e)) for e in plan.workers]
        jobs += [(("releases", e), partial(releases_call, e)) for e in plan.releases]
        jobs += [(("facts", f), partial(fact_call, f)) for f in plan.facts]
        if plan.list_endpoints and not any(c.probe == "v2_endpoints" for c in calls):
            jobs.append((("list", "list"), partial(self._list, t, calls)))
        elif plan.list_endpoints:
            # list_first's call failed this cycle: asking again at once doubles the calls to
            # an API that is down; the failure keeps the list due from the next cycle
            self.planner.report(t, listed=False)
        if jobs and self._sent == 0 and self.unreachable is None:
            # nothing was sent this cycle: the first call alone says whether RunPod answers
            await jobs[0][1]()
            jobs = jobs[1:]
        if self.unreachable is not None:
            self._hold_jobs(t, [what for what, _ in jobs])
        else:
            await asyncio.gather(*(call() for _, call in jobs))
        self.planner.report(t, workers=list(workers_got), facts_ok=facts_ok,
                            facts_failed=facts_failed)
        logs = await self._logs(t, wanted_logs, calls)
        watched = {s.endpoint_id for s in samples}
        for table in (self.workers, self.releases):
            for k in [k for k in table if k not in watched]:
                del table[k]
        return {
            eid: EndpointV2(workers_got.get(eid), releases_got.get(eid),
                            tuple(logs[eid]) if eid in logs else None)
            for eid in {*workers_got, *releases_got, *logs}
        }

    async def _logs(
        self, t: float, wanted: Sequence[tuple[str, str]], calls: list[Call]
    ) -> dict[str, list[WorkerLogs]]:
        out: dict[str, list[WorkerLogs]] = {}
        for k, (eid, wid) in enumerate(wanted):
            if self.unreachable is not None:
                self._hold("v2_logs", len(wanted) - k)
                break
            if not self.budget.can_spend(t):
                break
            result = await self._v2("logs", t, self.client.worker_logs(eid, wid, source=None))
            calls.append(Call("v2_logs", result, eid))
            if isinstance(result, Ok):
                out.setdefault(eid, []).append(result.value)
        return out

    def _hold_jobs(self, t: float, held: Sequence[tuple[str, str]]) -> None:
        """The plan's calls not sent this cycle: due again next cycle, counted as held back."""
        by: dict[str, list[str]] = {"workers": [], "releases": [], "facts": [], "list": []}
        for table, key in held:
            by[table].append(key)
        self.planner.hold_back(t, workers=by["workers"], releases=by["releases"],
                               facts=by["facts"], listing=bool(by["list"]))
        self._hold("v2_workers", len(by["workers"]))
        self._hold("v2_releases", len(by["releases"]))
        for f in by["facts"]:
            self._hold(f"v2_{f}")
        self._hold("v2_endpoints", len(by["list"]))
        log.debug("v2 calls held back", reason=self.unreachable, t=t,
                  held=dict(self.held_back))

    # -- the account ---------------------------------------------------------------------

    def _fact(self, fact: str, t: float) -> Any:
        kept = self._kept.get(fact)
        if kept is None:
            return None
        period = self.planner.fact_periods_s.get(fact, 900.0)
        return kept.value if t - kept.t <= KEEP_PERIODS * period else None

    def account_facts(self, t: float, samples: Sequence[EndpointSample]) -> AccountFacts:
        """The account as the kept v2 facts (and GraphQL's spend in auto) tell it at `t`;
        `samples`: this cycle's, whose workers say which endpoints spend now."""
        sources: dict[str, str] = {}
        balance = self._fact("balance", t)
        limits = self._fact("account_limits", t)
        billing = self._fact("billing", t)
        volumes = self._fact("network_volumes", t)
        pods = self._fact("pods", t)
        # the catalog only in the cycle it was read: the rules judge its age by the
        # observation that carries it (an older read is further back in the history)
        kept_stock = self._kept.get("catalog")
        stock = kept_stock.value if kept_stock is not None and kept_stock.t == t else None
        endpoint_spend = None
        if isinstance(billing, ServerlessSpend) and billing.total_per_hr is not None:
            endpoint_spend = dict(billing.per_endpoint)
            sources["endpoint_spend"] = "rest"
        if stock is not None:
            sources["gpu_stock"] = "rest"
        if volumes is not None:
            sources["volumes"] = "rest"
        if pods is not None:
            sources["pods"] = "rest"
        spend: float | None
        spend_limit = limits.spend_limit if isinstance(limits, AccountLimits) else None
        if spend_limit is not None:
            sources["spend_limit"] = "rest"
        if self._spend_graphql is not None:
            spend = self._spend_graphql[0]
            sources["spend_per_hr"] = "graphql"
            if spend_limit is None and self._spend_graphql[1] is not None:
                spend_limit = self._spend_graphql[1]
                sources["spend_limit"] = "graphql"
        else:
            serverless = None
            if isinstance(billing, ServerlessSpend) and billing.total_per_hr is not None:
                serverless = serverless_now(billing, samples, self._listing)
            spend = derived_spend_per_hr(serverless, pods or (), volumes or (), self.prices)
            if spend is not None:
                sources["spend_per_hr"] = "rest"
        account = None
        if isinstance(balance, Balance):
            sources["balance"] = "rest"
            if balance.billing_mode is not None:
                sources["billing_mode"] = "rest"
            if spend is not None:
                account = Account(
                    balance=balance.amount, spend_per_hr=spend, spend_limit=spend_limit,
                    network_volumes=tuple(volumes or ()), pods=tuple(pods or ()),
                    billing_mode=balance.billing_mode,
                )
        return AccountFacts(account, sources, endpoint_spend,
                            tuple(stock) if stock is not None else None)


def outcome_of(result: Result[object]) -> tuple[str, int]:
    """The outcome name and HTTP status of a client result."""
    if isinstance(result, Failure):
        return result.kind, result.status
    return OK, result.status


__all__ = [
    "NO_HINTS",
    "AccountFacts",
    "Call",
    "ControlPlane",
    "EndpointV2",
    "Hints",
    "Listing",
    "Mode",
    "derived_spend_per_hr",
    "outcome_of",
    "storage_per_hr",
]
