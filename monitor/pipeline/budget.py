"""The REST v2 call budget and the planner that spends it (docs/budget.md).

RunPod limits v2 calls per user in minute, hour and day windows and says so in the
`RateLimit` / `RateLimit-Policy` headers (spec/runpod-rest-v2.md 2.9). `V2Budget` keeps what
those headers and its own count of calls sent say, and paces the remaining calls evenly over
the cycles left in each window; `Planner` decides which v2 calls one cycle makes with that
allowance: endpoints in trouble first, then busy ones, then the quiet ones round-robin, the
endpoint list and the slow account facts on their own periods.

Pure: every time is passed in (the cycle's `t`, simulated in replay), never read from a
clock, and nothing here does I/O. The data plane (/health, /requests, /status) has its own
limits and is not budgeted here.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

# The windows RunPod names, and their length when a policy does not say (spec 2.9).
WINDOWS: tuple[tuple[str, float], ...] = (("minute", 60.0), ("hour", 3600.0), ("day", 86400.0))
# The schema example: assumed until the first answer tells the account's own quota.
ASSUMED_QUOTA: Mapping[str, int] = {"minute": 60, "hour": 3000, "day": 50000}

# Slow account facts (spec/runpod-rest-v2.md section 1, rows 7-13) and their default periods.
FACTS = ("balance", "account_limits", "billing", "network_volumes", "pods", "catalog")
FACT_PERIODS_S: Mapping[str, float] = {
    "balance": 30.0, "account_limits": 900.0, "billing": 900.0,
    "network_volumes": 900.0, "pods": 30.0, "catalog": 900.0,
}
LIST_PERIOD_S = 150.0  # the endpoint list: every 5 cycles of 30 s
# What a call is spent on: the `kind` label of the calls counter (bounded).
KINDS = ("workers", "releases", "list", *FACTS, "logs", "other")

Tier = Literal["trouble", "busy", "quiet"]
TIERS: tuple[Tier, ...] = ("trouble", "busy", "quiet")

MAX_HEADER_CHARS = 2048  # a longer header is malformed, not parsed
# The server's `t` is whole seconds; an answer whose window end differs from ours by more
# than this is another window.
RESET_TOLERANCE_S = 2.0
# RateLimit's `t` is whole seconds, rounded up (as the simulator does): the true reset is up
# to a second before the end we derive, so a call in that last second may count in the next
# window; it is counted in both.
EDGE_S = 1.0
MAX_WINDOWS = 6  # windows a policy may add beyond these three are ignored (bounded labels)
MIN_SCALE = 0.1  # repeated 429s shrink the assumed quota to a tenth, no further
MAX_CLOSED_S = 86400.0  # a Retry-After longer than a day is a day

_KEY = re.compile(r"[a-z*][a-z0-9_.*-]*")
_TOKEN = re.compile(r"[A-Za-z*][A-Za-z0-9!#$%&'*+.^_`|~:/-]*")
_STRING = re.compile(r'"([\x20\x21\x23-\x5b\x5d-\x7e]*)"')
_INTEGER = re.compile(r"-?[0-9]{1,15}")


# -- header parsing -----------------------------------------------------------------------


def _members(value: str) -> dict[str, dict[str, int]] | None:
    """The members of a structured-field list `"name";k=1;j=2, ...` by name, with their
    integer parameters; None when malformed. Parameters that are not integers are ignored
    only when their key is not one we read (the caller checks the keys it needs)."""
    if len(value) > MAX_HEADER_CHARS:
        return None
    out: dict[str, dict[str, int]] = {}
    for member in value.split(","):
        parts = member.split(";")
        item = parts[0].strip()
        m = _STRING.fullmatch(item) or _TOKEN.fullmatch(item)
        if m is None:
            return None
        name = m.group(1) if m.re is _STRING else m.group(0)
        params: dict[str, int] = {}
        for part in parts[1:]:
            key, eq, raw = part.strip().partition("=")
            if _KEY.fullmatch(key) is None:
                return None
            raw = raw.strip()
            if eq and _INTEGER.fullmatch(raw) is not None:
                params[key] = int(raw)
            elif key in ("r", "t", "q", "w"):
                return None  # a parameter we read that is not an integer
        out[name] = params
    return out


def parse_rate_limit(value: str) -> dict[str, tuple[int, int]] | None:
    """`RateLimit: "minute";r=176;t=1, ...` -> {window: (remaining, seconds to reset)};
    None when malformed (never raises). A blank value is no member at all."""
    if not value.strip():
        return {}
    members = _members(value)
    if members is None:
        return None
    out: dict[str, tuple[int, int]] = {}
    for name, params in members.items():
        r, t = params.get("r"), params.get("t")
        if r is None or t is None or r < 0 or t < 0:
            return None
        out[name] = (r, t)
    return out


def parse_rate_limit_policy(value: str) -> dict[str, tuple[int, int | None]] | None:
    """`RateLimit-Policy: "minute";q=177;w=60, ...` -> {window: (quota, window seconds or
    None when not given)}; None when malformed (never raises)."""
    if not value.strip():
        return {}
    members = _members(value)
    if members is None:
        return None
    out: dict[str, tuple[int, int | None]] = {}
    for name, params in members.items():
        q, w = params.get("q"), params.get("w")
        if q is None or q < 0 or (w is not None and w <= 0):
            return None
        out[name] = (q, w)
    return out


# -- the budget ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Window:
    """One rate-limit window as the budget counts it."""

    name: str
    window_s: float
    quota: int
    end: float | None = None  # when the current window resets; None: not known yet
    confirmed: bool = False  # `end` came from the server's `t`, not from our first call
    spent: int = 0  # calls sent in the current window (ours)
    answered: int = 0  # answers seen in the current window
    # what the server's `r` says is left now: the least over the window's answers of `r`
    # less the calls in flight when it came, less every call sent since
    server_left: int | None = None
    throttled: bool = False  # a 429 in the current window
    carry: int = 0  # calls sent in the last EDGE_S of the window: maybe the next one's

    def roll(self, t: float) -> bool:
        """Start the window `t` is in, when the current one ended; True if it rolled."""
        if self.end is None or t < self.end:
            return False
        skipped = math.floor((t - self.end) / self.window_s)
        self.end += (skipped + 1) * self.window_s
        self.spent = self.answered = self.carry if skipped == 0 else 0
        self.carry = 0
        self.server_left = None
        self.throttled = False
        return True

    def add(self, n: int, t: float) -> None:
        """`n` calls sent at `t` (after `roll` and `anchor`)."""
        self.spent += n
        if self.server_left is not None:
            self.server_left -= n
        if self.confirmed and self.end is not None and self.end - t <= EDGE_S:
            self.carry += n

    def anchor(self, t: float) -> None:
        """Before the server tells the window's end: assume a whole window from `t`."""
        if self.end is None:
            self.end = t + self.window_s

    def effective_quota(self, scale: float) -> int:
        return math.floor(self.quota * scale)

    def remaining(self, scale: float) -> int:
        """Calls left: the stricter of our count and the server's."""
        q = self.effective_quota(scale)
        left = q - self.spent
        if self.server_left is not None:
            left = min(left, self.server_left - (self.quota - q))
        return max(0, left)

    def take_server(self, t: float, remaining: int, reset_s: int, *, anchor: bool = True
                    ) -> None:
        """Fold one answer's `r` and `t` for this window (after counting the answer);
        without `anchor` (a 429's headers) only an `r` of the window as we place it."""
        implied = t + reset_s
        if not anchor:
            near = self.end is not None and abs(implied - self.end) <= RESET_TOLERANCE_S
            if self.confirmed and near:
                self._least(remaining)
            return
        if self.end is None or not self.confirmed:
            # the server's first word places the window; our count of calls stays (it may
            # hold some of the window before: stricter, never looser)
            self.end = implied
            self.confirmed = True
            self._least(remaining)
            return
        if implied > self.end + RESET_TOLERANCE_S:
            # the server is already in the next window (our end was up to a second late):
            # the calls of that last second are the new window's
            self.end = implied
            self.spent = self.carry
            self.answered = min(1, self.carry)
            self.carry = 0
            self.server_left = None
            self.throttled = False
            self._least(remaining)
            return
        if implied < self.end - RESET_TOLERANCE_S:
            return  # a late answer from the window before: no news of this one
        self.end = min(self.end, implied)  # each answer bounds the reset from above
        self._least(remaining)

    def _least(self, remaining: int) -> None:
        left = remaining - max(0, self.spent - self.answered)
        self.server_left = left if self.server_left is None else min(self.server_left, left)


@dataclass(frozen=True, slots=True)
class WindowReading:
    """One window as the metrics show it."""

    name: str
    quota: int  # RateLimit-Policy's `q` (or the assumed one; the ceiling while exempt)
    remaining: int  # what the budget may still spend in it (the stricter count)
    spent: int  # calls sent in the current window


@dataclass(frozen=True, slots=True)
class BudgetReading:
    """The budget and the planner's freshness, as `MonitorMetrics.observe_budget` reads them."""

    windows: tuple[WindowReading, ...]
    allowance: int  # the last cycle's allowance
    exempt: bool
    calls: tuple[tuple[str, int], ...]  # (kind, calls sent since start)
    throttled: int  # 429s from the v2 quota since start
    malformed_headers: int  # RateLimit headers ignored as malformed since start
    workers_seen: Mapping[str, float] = field(default_factory=dict)  # endpoint -> unix t


class V2Budget:
    """How many REST v2 calls the monitor may still make, per window.

    Until the first answer the quota is `assumed` (the schema example); then the answers'
    `RateLimit-Policy` and `RateLimit` headers, and our own count of calls sent (the server's
    `r` lags calls in flight: the stricter of the two counts). A 429 closes the budget until
    its Retry-After and shrinks the quota by `shrink` (back by one step per minute window
    without a 429). Answers without any RateLimit header: `exempt_after` successive 2xx ones
    mean a rate-limit-exempt key (the spec: headers "omitted for rate-limit-exempt callers"),
    paced at `exempt_per_minute`; until then, and as soon as a header shows up again, the
    windows as last known.
    """

    def __init__(
        self,
        assumed: Mapping[str, int] = ASSUMED_QUOTA,
        *,
        exempt_after: int = 3,
        exempt_per_minute: int = 300,
        shrink: float = 0.75,
    ) -> None:
        self._windows: dict[str, _Window] = {
            name: _Window(name, w, assumed.get(name, ASSUMED_QUOTA[name])) for name, w in WINDOWS
        }
        self._ceiling = _Window("minute", 60.0, exempt_per_minute)
        self.exempt_after = exempt_after
        self.shrink = shrink
        self.scale = 1.0
        self.closed_until = -math.inf
        self.exempt = False
        self.headerless = 0  # successive 2xx answers without RateLimit headers
        self.malformed_headers = 0
        self.throttled = 0
        self.calls: Counter[str] = Counter(dict.fromkeys(KINDS, 0))
        self.last_allowance = 0

    # -- what the prober reports ------------------------------------------------------

    def spend(self, n: int, t: float, kind: str = "other") -> None:
        """`n` v2 calls are being sent at `t` (count them before sending)."""
        if n <= 0:
            return
        self._roll(t)
        for w in (*self._windows.values(), self._ceiling):
            w.anchor(t)
            w.add(n, t)
        self.calls[kind if kind in self.calls else "other"] += n

    def observe(
        self,
        rate_limit: str | None,
        policy: str | None,
        t: float,
        status: int = 200,
        answers: int = 1,
    ) -> None:
        """One v2 answer (not a 429: `on_429`) at `t` with its raw header values (None:
        absent); `answers` > 1: the last page of a paged list whose pages were each a call
        (all spent before), so its `r` counts every page already. A malformed header is
        counted and ignored; what was known is kept."""
        self._roll(t)
        self._answered(max(1, answers))
        self._headers(rate_limit, policy, t, status)

    def on_429(
        self,
        retry_after_s: float | None,
        t: float,
        rate_limit: str | None = None,
        policy: str | None = None,
    ) -> None:
        """A 429 from the v2 quota at `t`: closed until Retry-After (without one: until the
        exhausted window resets, else a minute), and the quota shrinks."""
        self._roll(t)
        self._answered()
        self.throttled += 1
        limits = self._headers(rate_limit, policy, t, 429, anchor=False)
        self.exempt = False
        self.headerless = 0
        self.scale = max(MIN_SCALE, self.scale * self.shrink)
        self._ceiling.throttled = True  # no step back at the next minute
        if retry_after_s is not None and math.isfinite(retry_after_s) and retry_after_s >= 0:
            wait = retry_after_s
        else:
            spent = [float(reset) for r, reset in (limits or {}).values() if r == 0]
            minute = self._windows.get("minute")
            if spent:
                wait = max(spent)
            elif minute is not None and minute.confirmed and minute.end is not None:
                wait = minute.end - t
            else:
                wait = 60.0
        self.closed_until = max(self.closed_until, t + min(wait, MAX_CLOSED_S))

    # -- what the planner asks ----------------------------------------------------------

    def allowance(self, t: float, interval_s: float, reserve: int = 0, pending: int = 0) -> int:
        """The v2 calls the cycle at `t` may make: each window's remaining calls paced evenly
        over the cycles left in it (so spending every cycle's allowance never exceeds a
        window), less `reserve` calls kept for on-demand reads (`can_spend`); `pending`:
        at most what it would be once that many more calls were sent (their answers may
        move a window's end by a cycle: one more cycle is counted in each window)."""
        self._roll(t)
        interval = interval_s if math.isfinite(interval_s) and interval_s >= 1 else 1.0
        share = 0
        if t >= self.closed_until:
            shares = []
            for w in self._in_force():
                left = w.window_s if w.end is None else max(0.0, w.end - t)
                cycles = max(1, math.ceil(left / interval - 1e-9))
                if pending > 0:
                    cycles += 1
                shares.append(max(0, w.remaining(self._scale_for(w)) - pending) // cycles)
            share = max(0, min(shares) - max(0, reserve))
        self.last_allowance = share
        return share

    def can_spend(self, t: float, n: int = 1) -> bool:
        """Whether `n` calls more fit in every window now (an on-demand read: worker logs)."""
        self._roll(t)
        if t < self.closed_until:
            return False
        return all(w.remaining(self._scale_for(w)) >= n for w in self._in_force())

    def remaining(self, t: float) -> int:
        """The calls that still fit in every window now."""
        self._roll(t)
        return min(w.remaining(self._scale_for(w)) for w in self._in_force())

    def reading(self, t: float, workers_seen: Mapping[str, float] | None = None) -> BudgetReading:
        """The budget as the metrics show it at `t`."""
        self._roll(t)
        windows = tuple(
            WindowReading(w.name, w.quota, w.remaining(self._scale_for(w)), w.spent)
            for w in self._in_force()
        )
        return BudgetReading(
            windows, self.last_allowance, self.exempt, tuple(sorted(self.calls.items())),
            self.throttled, self.malformed_headers, dict(workers_seen or {}),
        )

    # -- internals ------------------------------------------------------------------------

    def _in_force(self) -> tuple[_Window, ...]:
        return (self._ceiling,) if self.exempt else tuple(self._windows.values())

    def _scale_for(self, w: _Window) -> float:
        return 1.0 if w is self._ceiling else self.scale

    def _roll(self, t: float) -> None:
        # the ceiling's minute (our own clock) times the shrink's recovery
        throttled = self._ceiling.throttled
        if self._ceiling.roll(t) and not throttled:
            self.scale = min(1.0, self.scale / self.shrink)
        for w in self._windows.values():
            w.roll(t)

    def _answered(self, n: int = 1) -> None:
        for w in (*self._windows.values(), self._ceiling):
            w.answered += n

    def _policy(self, policy: Mapping[str, tuple[int, int | None]]) -> None:
        """The policy is the key's whole list: its windows replace the assumed ones (a
        window it does not name, as the day in the recorded header, is no limit)."""
        known = {name: w for name, w in WINDOWS}
        placed: dict[str, _Window] = {}
        for name, (q, w_s) in policy.items():
            length = float(w_s) if w_s is not None else known.get(name)
            if length is None or len(placed) >= MAX_WINDOWS:
                continue  # a window we cannot place, or one too many
            w = self._windows.get(name) or _Window(name, length, q)
            w.quota = q
            w.window_s = length
            placed[name] = w
        if placed:
            self._windows = placed

    def _headers(
        self, rate_limit: str | None, policy: str | None, t: float, status: int,
        *, anchor: bool = True,
    ) -> dict[str, tuple[int, int]] | None:
        """Fold the headers of one answer; the parsed RateLimit, if any."""
        absent = (rate_limit is None or not rate_limit.strip()) and (
            policy is None or not policy.strip()
        )
        if absent:
            if 200 <= status < 300:
                self.headerless += 1
                if self.headerless >= self.exempt_after:
                    self.exempt = True
            return None
        self.headerless = 0
        self.exempt = False
        if policy is not None and policy.strip():
            parsed_policy = parse_rate_limit_policy(policy)
            if parsed_policy is None:
                self.malformed_headers += 1
            else:
                self._policy(parsed_policy)
        limits: dict[str, tuple[int, int]] | None = None
        if rate_limit is not None and rate_limit.strip():
            limits = parse_rate_limit(rate_limit)
            if limits is None:
                self.malformed_headers += 1
            else:
                for name, (r, reset) in limits.items():
                    w = self._windows.get(name)
                    if w is not None:
                        w.take_server(t, r, reset, anchor=anchor)
        return limits


# -- the planner --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Need:
    """What one watched endpoint asks of this cycle's v2 calls."""

    endpoint_id: str
    # trouble: a stalled queue (or one with nothing in progress seen for the first time),
    # unhealthy or throttled workers, an active or pending diagnosis, a version change;
    # busy: jobs queued or running; quiet: the rest
    tier: Tier = "quiet"
    releases: bool = False  # the version changed or stale workers were seen


@dataclass(frozen=True, slots=True)
class Plan:
    """The v2 calls of one cycle, in the order to send them (the prober executes it)."""

    t: float
    allowance: int
    workers: tuple[str, ...] = ()  # endpoints to get /workers of
    releases: tuple[str, ...] = ()  # endpoints to get /releases of
    list_endpoints: bool = False  # GET /v2/serverless (all its pages)
    facts: tuple[str, ...] = ()  # slow facts due (FACTS)
    unserved: tuple[str, ...] = ()  # endpoints in trouble the allowance could not cover
    costs: tuple[tuple[str, int], ...] = ()  # calls per list / fact when not 1

    def cost(self, what: str) -> int:
        """The calls `what` ("list" or a fact) takes."""
        return dict(self.costs).get(what, 1)

    @property
    def calls(self) -> int:
        """The v2 calls this plan makes."""
        return (
            len(self.workers) + len(self.releases)
            + (self.cost("list") if self.list_endpoints else 0)
            + sum(self.cost(f) for f in self.facts)
        )


class Planner:
    """Spends each cycle's allowance where it decides something.

    Endpoints in trouble first (every one when the allowance allows, else those whose worker
    data is oldest), then the /releases asked for, then, unless some trouble went unserved,
    the endpoint list and the slow facts that are due, then busy endpoints (oldest data
    first), then quiet ones round-robin (least recently asked first, so each is seen within
    ceil(quiet / share) cycles). A period of 0 means never (the list: only when first
    needed or when an unknown id shows up).
    """

    def __init__(
        self,
        *,
        list_period_s: float = LIST_PERIOD_S,
        fact_periods_s: Mapping[str, float] = FACT_PERIODS_S,
    ) -> None:
        self.list_period_s = list_period_s
        self.fact_periods_s = {f: fact_periods_s.get(f, FACT_PERIODS_S[f]) for f in FACTS}
        self.workers_seen: dict[str, float] = {}  # endpoint -> time of its freshest workers
        self._asked: dict[str, float] = {}  # endpoint -> when its /workers was last planned
        self._releases_asked: dict[str, float] = {}
        self._listed: float | None = None  # when the list was last planned
        self._listed_ok: float | None = None
        self._facts: dict[str, float] = {}  # fact -> when last planned
        self._facts_ok: dict[str, float] = {}
        # what the last plan overwrote (table, key -> the value before; None: absent), so
        # that calls it planned but never sent can be held back (`hold_back`)
        self._prior: dict[str, dict[str, float | None]] = {}
        self._prior_t: float | None = None

    def plan(
        self,
        t: float,
        interval_s: float,
        allowance: int,
        needs: Iterable[Need],
        *,
        unknown_id: bool = False,
        costs: Mapping[str, int] | None = None,
        list_now: bool = False,
    ) -> Plan:
        """The calls of the cycle at `t`. `needs`: every watched endpoint (state of the
        others is dropped); `unknown_id`: an id not in the last list showed up;
        `costs`: calls the list or a fact takes (pages), 1 when not given; `list_now`: list
        this cycle whatever the period (the caller found the list cheap enough)."""
        by_id: dict[str, Need] = {}
        for n in needs:
            by_id.setdefault(n.endpoint_id, n)
        self._forget(by_id)
        cost = {k: max(1, v) for k, v in (costs or {}).items()}
        left = max(0, allowance)
        never = -math.inf

        def seen(n: Need) -> tuple[float, str]:
            return self.workers_seen.get(n.endpoint_id, never), n.endpoint_id

        tiers: dict[str, list[Need]] = {tier: [] for tier in TIERS}
        for n in by_id.values():
            tiers[n.tier if n.tier in tiers else "quiet"].append(n)
        workers: list[str] = []
        unserved: list[str] = []
        for n in sorted(tiers["trouble"], key=seen):
            if left > 0:
                workers.append(n.endpoint_id)
                left -= 1
            else:
                unserved.append(n.endpoint_id)
        rank = {tier: i for i, tier in enumerate(TIERS)}
        releases: list[str] = []
        for n in sorted(
            (n for n in by_id.values() if n.releases),
            key=lambda n: (rank.get(n.tier, 2), self._releases_asked.get(n.endpoint_id, never),
                           n.endpoint_id),
        ):
            if left > 0:
                releases.append(n.endpoint_id)
                left -= 1
            elif n.tier == "trouble" and n.endpoint_id not in unserved:
                unserved.append(n.endpoint_id)
        listing = False
        facts: list[str] = []
        if not unserved:
            half = interval_s / 2
            if unknown_id or list_now or self._due(self._listed, self.list_period_s, t, half,
                                                   first=True):
                c = cost.get("list", 1)
                if left >= c:
                    listing = True
                    left -= c
            due = [f for f in FACTS
                   if self._due(self._facts.get(f), self.fact_periods_s[f], t, half)]
            for f in sorted(due, key=lambda f: (self._facts.get(f, never), FACTS.index(f))):
                c = cost.get(f, 1)
                if left >= c:
                    facts.append(f)
                    left -= c
        for n in sorted(tiers["busy"], key=seen):
            if left <= 0:
                break
            workers.append(n.endpoint_id)
            left -= 1
        if left > 0:
            quiet = sorted(tiers["quiet"],
                           key=lambda n: (self._asked.get(n.endpoint_id, never), n.endpoint_id))
            for n in quiet[:left]:
                workers.append(n.endpoint_id)

        self._prior_t = t
        self._prior = {
            "workers": {eid: self._asked.get(eid) for eid in workers},
            "releases": {eid: self._releases_asked.get(eid) for eid in releases},
            "facts": {f: self._facts.get(f) for f in facts},
            "list": {"list": self._listed} if listing else {},
        }
        for eid in workers:
            self._asked[eid] = t
        for eid in releases:
            self._releases_asked[eid] = t
        if listing:
            self._listed = t
        for f in facts:
            self._facts[f] = t
        used = {k: v for k, v in cost.items()
                if v != 1 and ((k == "list" and listing) or k in facts)}
        return Plan(t, allowance, tuple(workers), tuple(releases), listing, tuple(facts),
                    tuple(unserved), tuple(sorted(used.items())))

    def report(
        self,
        t: float,
        *,
        workers: Iterable[str] = (),
        listed: bool | None = None,
        facts_ok: Iterable[str] = (),
        facts_failed: Iterable[str] = (),
    ) -> None:
        """What the plan at `t` got: the endpoints whose /workers answered; `listed` True
        or False when the plan listed (None: it did not); which facts answered and which
        failed (those are due again after a fifth of their period)."""
        for eid in workers:
            self.workers_seen[eid] = max(t, self.workers_seen.get(eid, -math.inf))
        if listed is True:
            self._listed_ok = t
            self._listed = t if self._listed is None else max(self._listed, t)
        elif listed is False:
            # a failed list is due again after a fifth of its period (at start: next cycle)
            period = self.list_period_s
            self._listed = None if period <= 0 or self._listed_ok is None else t - 0.8 * period
        for f in facts_ok:
            self._facts_ok[f] = t
        for f in facts_failed:
            # likewise: soon enough for a transient failure, rare enough for a 403 (scope)
            self._facts[f] = t - 0.8 * self.fact_periods_s[f]

    def hold_back(
        self,
        t: float,
        *,
        workers: Iterable[str] = (),
        releases: Iterable[str] = (),
        facts: Iterable[str] = (),
        listing: bool = False,
    ) -> None:
        """Calls the plan at `t` chose but that were not sent (RunPod could not be reached):
        each is as it was before that plan, so it is due again, first in line, next cycle
        (not a failure: a fact held back is not put off by a fifth of its period)."""
        if self._prior_t != t:
            return
        tables: tuple[tuple[str, dict[str, float], Iterable[str]], ...] = (
            ("workers", self._asked, workers), ("releases", self._releases_asked, releases),
            ("facts", self._facts, facts),
        )
        for name, table, keys in tables:
            prior = self._prior.get(name, {})
            for k in keys:
                if k not in prior:
                    continue
                before = prior[k]
                if before is None:
                    table.pop(k, None)
                else:
                    table[k] = before
        if listing and "list" in self._prior.get("list", {}):
            self._listed = self._prior["list"]["list"]

    def list_due(self, t: float, interval_s: float) -> bool:
        """Whether the endpoint list's period has come round at `t` (or it was never read)."""
        return self._due(self._listed, self.list_period_s, t, interval_s / 2, first=True)

    def age_s(self, endpoint_id: str, t: float) -> float | None:
        """Seconds since the endpoint's freshest worker data; None: never had any."""
        seen = self.workers_seen.get(endpoint_id)
        return None if seen is None else max(0.0, t - seen)

    @staticmethod
    def _due(last: float | None, period_s: float, t: float, half: float,
             *, first: bool = False) -> bool:
        if last is None:
            return first or period_s > 0
        return period_s > 0 and t - last >= period_s - half

    def _forget(self, watched: Mapping[str, Need]) -> None:
        for table in (self.workers_seen, self._asked, self._releases_asked):
            for k in [k for k in table if k not in watched]:
                del table[k]
