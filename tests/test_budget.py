"""The REST v2 budget (monitor/pipeline/budget.py): header parsing, pacing within every window
against a server that counts as the simulator does, 429s and exempt keys, the planner's
priorities and fairness, the N=1000 target, and the budget metrics."""

from __future__ import annotations

import math
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from shutil import which

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from model.observation import EndpointConfig, EndpointSample, Health, Observation
from monitor.config import ConfigError, load_settings
from monitor.metrics import CycleFacts, MonitorMetrics
from monitor.pipeline.budget import (
    ASSUMED_QUOTA,
    FACTS,
    WINDOWS,
    Need,
    Plan,
    Planner,
    V2Budget,
    parse_rate_limit,
    parse_rate_limit_policy,
)

# Recorded by the runpod-migrate plugin against the live API (spec/runpod-rest-v2.md 0.5).
RECORDED = '"minute";r=176;t=1, "hour";r=7193;t=2701'
SCHEMA_POLICY = '"minute";q=60;w=60, "hour";q=3000;w=3600, "day";q=50000;w=86400'


# -- a server that counts as monitor/simulator/rest_v2.py RestV2._count does ----------------


@dataclass
class Server:
    """Fixed windows by index floor(now / w); a request past a quota answers 429 uncounted."""

    quota: dict[str, int]
    used: Counter[tuple[str, int]] = field(default_factory=Counter)
    accepted: Counter[tuple[str, int]] = field(default_factory=Counter)  # what we check

    def call(self, now: float) -> tuple[int, str, str, float | None]:
        state = []
        for name, w in WINDOWS:
            q = self.quota[name]
            index = math.floor(now / w)
            state.append((name, w, q, index, max(1, math.ceil((index + 1) * w - now))))
        exhausted = [(n, reset) for n, _, q, i, reset in state if self.used[(n, i)] >= q]
        if not exhausted:
            for n, _, _, i, _ in state:
                self.used[(n, i)] += 1
                self.accepted[(n, i)] += 1
        limit = ", ".join(f'"{n}";r={max(0, q - self.used[(n, i)])};t={reset}'
                          for n, _, q, i, reset in state)
        policy = ", ".join(f'"{n}";q={q};w={int(w)}' for n, w, q, _, _ in state)
        if exhausted:
            return 429, limit, policy, float(max(r for _, r in exhausted))
        return 200, limit, policy, None


# -- header parsing ---------------------------------------------------------------------


def test_recorded_header_parses() -> None:
    assert parse_rate_limit(RECORDED) == {"minute": (176, 1), "hour": (7193, 2701)}
    assert parse_rate_limit_policy('"minute";q=177;w=60, "hour";q=7194;w=3600') == {
        "minute": (177, 60), "hour": (7194, 3600),
    }
    assert parse_rate_limit_policy(SCHEMA_POLICY) == {
        "minute": (60, 60), "hour": (3000, 3600), "day": (50000, 86400),
    }
    # tokens instead of strings, spaces, unknown parameters: structured fields allow them
    assert parse_rate_limit('minute ; r=3 ;t=9;x=y;flag,"day";r=0;t=5') == {
        "minute": (3, 9), "day": (0, 5),
    }
    assert parse_rate_limit("") == {}
    assert parse_rate_limit_policy("  ") == {}


@pytest.mark.parametrize("value", [
    '"minute";r=-1;t=1',  # negative
    '"minute";r=1',  # no reset
    '"minute";r=abc;t=1',
    '"minute";r=1.5;t=1',  # a decimal
    '"minute" r=1;t=1',
    '"min"ute";r=1;t=1',
    ';r=1;t=1',
    '"minute";R=1;t=1',  # keys are lowercase
    '"minute";r=1;t=1,',  # an empty member
    '"minute";r=1234567890123456;t=1',  # past structured fields' 15 digits
    '"minute";r=1;t=1, ' * 200,  # oversized
])
def test_malformed_rate_limit_is_none(value: str) -> None:
    assert parse_rate_limit(value) is None


@pytest.mark.parametrize("value", ['"minute";w=60', '"minute";q=60;w=0', '"minute";q=-1',
                                   '"minute";q=x;w=60', '{"minute": 60}'])
def test_malformed_policy_is_none(value: str) -> None:
    assert parse_rate_limit_policy(value) is None


@given(st.text(max_size=300))
def test_parsers_never_raise(value: str) -> None:
    parse_rate_limit(value)
    parse_rate_limit_policy(value)
    b = V2Budget()
    b.observe(value, value, 0.0)
    b.on_429(None, 1.0, value, value)
    assert b.allowance(2.0, 30) >= 0


@given(st.dictionaries(st.sampled_from(["minute", "hour", "day", "second"]),
                       st.tuples(st.integers(0, 10**9), st.integers(0, 10**6)), min_size=1))
def test_rate_limit_round_trip(windows: dict[str, tuple[int, int]]) -> None:
    text = ", ".join(f'"{n}";r={r};t={t}' for n, (r, t) in windows.items())
    assert parse_rate_limit(text) == windows


def test_malformed_header_is_counted_and_knowledge_kept() -> None:
    b = V2Budget()
    b.spend(1, 0.0)
    b.observe('"minute";r=170;t=50', '"minute";q=177;w=60', 0.0)
    before = b.reading(0.0).windows
    b.spend(1, 1.0)
    b.observe('"minute";r=lots;t=50', "garbage ;;", 1.0)
    assert b.malformed_headers == 2
    after = b.reading(1.0).windows
    assert after[0].quota == before[0].quota == 177
    assert after[0].remaining == before[0].remaining - 1  # our own count went on
    assert not b.exempt


# -- the budget -------------------------------------------------------------------------


def test_schema_example_until_the_first_answer() -> None:
    b = V2Budget()
    # minute 60/2 cycles, hour 3000/120, day 50000/2880 = 17: the day binds
    assert b.allowance(0.0, 30) == 17
    assert b.allowance(0.0, 30, reserve=2) == 15
    assert [(w.name, w.quota) for w in b.reading(0.0).windows] == list(ASSUMED_QUOTA.items())


def test_policy_header_replaces_the_assumption() -> None:
    b = V2Budget()
    b.spend(1, 0.0)
    b.observe('"minute";r=176;t=30, "hour";r=7193;t=2700, "day";r=999999;t=86000',
              '"minute";q=177;w=60, "hour";q=7194;w=3600, "day";q=1000000;w=86400', 0.0)
    # minute 176 over 1 cycle, hour 7193 over 90, day 999999 over 2867: the hour binds
    assert b.allowance(0.0, 30) == 7193 // 90


def test_the_recorded_policy_has_no_day_window() -> None:
    """The recorded account names minute and hour only: the assumed day no longer binds."""
    b = V2Budget()
    b.spend(1, 0.0)
    b.observe('"minute";r=176;t=60, "hour";r=7193;t=3600',
              '"minute";q=177;w=60, "hour";q=7194;w=3600', 0.0)
    assert [w.name for w in b.reading(0.0).windows] == ["minute", "hour"]
    assert b.allowance(0.0, 30, 2) == 7193 // 120 - 2  # 57: the hour binds


def test_the_stricter_count_wins() -> None:
    b = V2Budget({"minute": 100, "hour": 10**6, "day": 10**7})
    b.spend(10, 0.0)
    for i in range(10):
        b.observe(f'"minute";r={89 - i};t=60', None, 0.0)  # someone else spent 1 more
    assert b.remaining(0.0) == 80
    b.spend(5, 1.0)
    b.observe('"minute";r=200;t=59', None, 1.0)  # a lagging, larger r is no news
    assert b.remaining(1.0) == 75
    c = V2Budget({"minute": 100, "hour": 10**6, "day": 10**7})
    c.spend(10, 0.0)
    c.observe('"minute";r=99;t=60', None, 0.0)  # 9 still in flight: the server's r lags
    assert c.remaining(0.0) == 90
    # and when the window resets, so does the count
    assert b.remaining(61.0) == 100


def test_429_closes_until_retry_after_and_shrinks() -> None:
    b = V2Budget({"minute": 100, "hour": 10**6, "day": 10**7}, shrink=0.5)
    b.spend(1, 0.0)
    b.observe('"minute";r=99;t=60', None, 0.0)
    b.spend(1, 10.0)
    b.on_429(20.0, 10.0)
    assert b.throttled == 1
    assert b.allowance(29.0, 30) == 0
    assert not b.can_spend(29.0)
    assert b.can_spend(30.0)
    # the quota shrank by half: 50 - 2 spent, paced over the one cycle left
    assert b.remaining(30.0) == 48
    # one minute window without a 429 gives back one step
    assert b.remaining(61.0) == 100 * 0.5
    assert b.remaining(121.0) == 100


def test_429_without_retry_after_waits_for_the_window() -> None:
    b = V2Budget()
    b.spend(1, 0.0)
    b.observe('"minute";r=59;t=40', None, 0.0)
    b.spend(1, 5.0)
    b.on_429(None, 5.0)
    assert b.allowance(39.0, 30) == 0
    assert b.allowance(40.0, 30) > 0
    c = V2Budget()
    c.spend(1, 0.0)
    c.on_429(None, 0.0, '"minute";r=0;t=7, "hour";r=0;t=25', None)
    assert c.allowance(24.0, 30) == 0
    assert c.allowance(25.0, 30) > 0


def test_exempt_after_answers_without_headers() -> None:
    b = V2Budget(exempt_after=3, exempt_per_minute=40)
    for i in range(2):
        b.spend(1, float(i))
        b.observe(None, None, float(i))
    b.spend(1, 2.0)
    b.observe(None, None, 2.0, status=502)  # an edge's error page says nothing of the key
    assert not b.exempt
    b.spend(1, 3.0)
    b.observe(None, None, 3.0)
    assert b.exempt
    # paced at the ceiling: 40 a minute, 4 spent, over the 2 cycles left
    assert b.allowance(3.0, 30) == (40 - 4) // 2
    assert [w.name for w in b.reading(3.0).windows] == ["minute"]
    b.spend(1, 4.0)
    b.observe('"minute";r=50;t=30', None, 4.0)
    assert not b.exempt
    assert b.headerless == 0


@st.composite
def answer_kind(draw: st.DrawFn) -> str:
    return draw(st.sampled_from(
        ["ok"] * 12 + ["dropped", "malformed", "fault_429", "fault_429_bare", "edge_502"]
    ))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.data(),
    st.integers(1, 300),  # minute quota
    st.integers(1, 20_000),  # hour
    st.integers(1, 200_000),  # day
    st.floats(1, 120),  # interval
    st.floats(0, 86400 * 3),  # start
    st.integers(0, 5),  # reserve
    st.integers(10, 80),  # cycles
)
def test_calls_never_exceed_a_window(
    data: st.DataObject, per_minute: int, per_hour: int, per_day: int, interval: float,
    start: float, reserve: int, cycles: int,
) -> None:
    """Every cycle spends its whole allowance and on-demand reads up to what `can_spend`
    allows; answers are sometimes lost, malformed, 429 from elsewhere or an edge's 502.
    Once a valid header was seen, the server never answers 429 for its quota."""
    server = Server({"minute": per_minute, "hour": per_hour, "day": per_day})
    b = V2Budget()
    t = start
    informed_after: int | None = None  # the cycle in which a valid header first came
    throttled_in: list[int] = []
    for cycle in range(cycles):
        a = b.allowance(t, interval, reserve)
        assert a >= 0
        calls = a
        b.spend(a, t, "workers")
        for _ in range(data.draw(st.integers(0, reserve + 2))):  # worker logs on demand
            if b.can_spend(t):
                b.spend(1, t, "logs")
                calls += 1
        for _ in range(calls):
            kind = data.draw(answer_kind())
            if kind == "fault_429":
                b.on_429(data.draw(st.floats(0, 120)), t)
                continue
            if kind == "fault_429_bare":
                b.on_429(None, t, '"minute";r=0;t=17', None)
                continue
            if kind == "edge_502":
                b.observe(None, None, t, status=502)
                continue
            status, limit, policy, retry = server.call(t)
            if status == 429:
                throttled_in.append(cycle)
                b.on_429(retry, t, limit, policy)
            elif kind == "dropped":
                pass
            elif kind == "malformed":
                b.observe(limit.replace("r=", "r=x"), policy[:-1] + ";q=", t)
            else:
                b.observe(limit, policy, t)
                if informed_after is None:
                    informed_after = cycle
        t += interval * data.draw(st.sampled_from([1.0, 1.0, 1.0, 1.5, 3.0, 7.3]))
    # before any valid header the quota is a guess (the schema example) and may be too high
    assert all(informed_after is None or c <= informed_after for c in throttled_in)
    assert not b.exempt


def test_known_quota_no_429_from_the_first_cycle() -> None:
    """A quota at least the assumed one: no 429 at all, over two simulated days."""
    server = Server(dict(ASSUMED_QUOTA))
    b = V2Budget()
    t = 1_000_000.3
    for _ in range(2 * 2880):
        a = b.allowance(t, 30, 2)
        b.spend(a, t)
        for _ in range(a):
            status, limit, policy, _ = server.call(t)
            assert status == 200
            b.observe(limit, policy, t)
        t += 30
    day = max(n for (w, _), n in server.accepted.items() if w == "day")
    assert day >= 0.9 * 50000 * (1 - 2 / 17)  # and the day's quota is close to all used


# -- the planner ------------------------------------------------------------------------

TIER = st.sampled_from(["trouble", "busy", "quiet"])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 40), TIER, st.booleans()), max_size=40),
    st.integers(0, 30),
    st.booleans(),
)
def test_trouble_before_busy_before_quiet(
    endpoints: list[tuple[int, str, bool]], allowance: int, unknown: bool,
) -> None:
    p = Planner(list_period_s=60, fact_periods_s=dict.fromkeys(FACTS, 120.0))
    needs = [Need(f"e{i}", tier, rel) for i, tier, rel in endpoints]  # type: ignore[arg-type]
    tier_of: dict[str, str] = {}
    for n in needs:
        tier_of.setdefault(n.endpoint_id, n.tier)
    for k in range(3):
        plan = p.plan(30.0 * k, 30, allowance, needs, unknown_id=unknown)
        assert plan.calls <= allowance
        ranks = [("trouble", "busy", "quiet").index(tier_of[e]) for e in plan.workers]
        assert ranks == sorted(ranks)
        served = set(plan.workers)
        trouble = {e for e, tier in tier_of.items() if tier == "trouble"}
        if trouble - served:
            assert set(plan.unserved) >= trouble - served
            assert all(tier_of[e] == "trouble" for e in plan.workers)
            assert not plan.list_endpoints
            assert not plan.facts
        if any(tier_of[e] == "quiet" for e in plan.workers):
            assert {e for e, tier in tier_of.items() if tier == "busy"} <= served
        assert len(plan.workers) == len(served)  # one call per endpoint


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 5), st.integers(0, 5), st.integers(1, 60), st.integers(1, 20),
       st.integers(10, 60))
def test_every_quiet_endpoint_is_seen_round_robin(
    trouble: int, busy: int, quiet: int, share: int, cycles: int,
) -> None:
    p = Planner(list_period_s=0, fact_periods_s=dict.fromkeys(FACTS, 0.0))
    needs = ([Need(f"t{i}", "trouble") for i in range(trouble)]
             + [Need(f"b{i}", "busy") for i in range(busy)]
             + [Need(f"q{i}", "quiet") for i in range(quiet)])
    allowance = trouble + busy + share
    # the start-up list (period 0: only this once); from here on the share is `share`
    assert p.plan(-30.0, 30, 1, []).list_endpoints
    p.report(-30.0, listed=True)
    last: dict[str, int] = {}
    shares = []
    worst = 0
    for k in range(cycles):
        plan = p.plan(30.0 * k, 30, allowance, needs)
        p.report(30.0 * k, workers=plan.workers, listed=plan.list_endpoints or None,
                 facts_ok=plan.facts)
        got = [e for e in plan.workers if e.startswith("q")]
        shares.append(len(got))
        for e in got:
            worst = max(worst, k - last.get(e, -1))
            last[e] = k
        assert all(f"t{i}" in plan.workers for i in range(trouble))
    s = max(1, min(shares))
    bound = math.ceil(quiet / s)
    assert worst <= bound
    if cycles >= bound:
        assert len(last) == quiet


def test_slow_tiers_on_their_periods_and_skipped_for_trouble() -> None:
    p = Planner(list_period_s=150, fact_periods_s={**dict.fromkeys(FACTS, 900.0),
                                                   "balance": 300.0, "catalog": 0.0})
    needs = [Need("e1", "quiet")]
    first = p.plan(0.0, 30, 20, needs)
    assert first.list_endpoints
    assert set(first.facts) == set(FACTS) - {"catalog"}  # 0: never
    p.report(0.0, listed=True, facts_ok=first.facts)
    plans = {}
    for k in range(1, 31):
        plan = p.plan(30.0 * k, 30, 20, needs)
        p.report(30.0 * k, listed=plan.list_endpoints or None, facts_ok=plan.facts)
        plans[30 * k] = plan
    assert [t for t, pl in plans.items() if pl.list_endpoints] == [150, 300, 450, 600, 750, 900]
    assert [t for t, pl in plans.items() if "balance" in pl.facts] == [300, 600, 900]
    assert [t for t, pl in plans.items() if "pods" in pl.facts] == [900]
    # an unknown id asks for the list now; a failed fact is due again next cycle
    assert p.plan(931.0, 30, 20, needs, unknown_id=True).list_endpoints
    p.report(931.0, facts_failed=["balance"], listed=False)
    # due again after a fifth of their period: the list at 30 s, the balance at 60 s
    retry = p.plan(961.0, 30, 20, needs)
    assert retry.list_endpoints
    assert "balance" not in retry.facts
    assert "balance" in p.plan(991.0, 30, 20, needs).facts
    # trouble the allowance cannot cover: no slow tier, the oldest trouble first
    p2 = Planner()
    trouble = [Need(f"t{i}", "trouble") for i in range(5)]
    p2.report(0.0, workers=["t0", "t1", "t2"])
    plan = p2.plan(30.0, 30, 3, trouble)
    assert plan.workers == ("t3", "t4", "t0")
    assert set(plan.unserved) == {"t1", "t2"}
    assert not plan.list_endpoints
    assert not plan.facts


def test_releases_after_trouble_workers_and_costs() -> None:
    p = Planner()
    needs = [Need("q1", "quiet", releases=True), Need("t1", "trouble", releases=True),
             Need("b1", "busy")]
    plan = p.plan(0.0, 30, 4, needs, costs={"list": 3})
    assert plan.workers[0] == "t1"
    assert plan.releases == ("t1", "q1")
    assert not plan.list_endpoints  # 3 pages do not fit in the 2 calls left
    assert plan.calls <= 4
    roomy = Planner().plan(0.0, 30, 50, needs, costs={"list": 3, "pods": 2})
    assert roomy.list_endpoints
    assert roomy.cost("list") == 3
    assert roomy.cost("pods") == 2
    assert roomy.calls == 3 + 2 + 3 + (len(FACTS) - 1) + 2


def test_freshest_worker_data_and_forgetting() -> None:
    p = Planner()
    p.report(10.0, workers=["e1", "e2"])
    p.report(5.0, workers=["e1"])  # an older answer reported late keeps the fresher time
    assert p.workers_seen == {"e1": 10.0, "e2": 10.0}
    assert p.age_s("e1", 40.0) == 30.0
    assert p.age_s("e9", 40.0) is None
    p.plan(40.0, 30, 5, [Need("e1")])
    assert p.workers_seen == {"e1": 10.0}


def plan_n1000(p: Planner, b: V2Budget, t: float, needs: list[Need]) -> Plan:
    return p.plan(t, 30, b.allowance(t, 30, 2), needs)


def test_n1000_sixty_a_minute_ten_in_trouble() -> None:
    """The issue's target: N = 1000 (10 % busy), 60 v2 calls a minute (the schema example's
    hour and day too), 30 s cycles, 10 endpoints in trouble: no 429, and every endpoint in
    trouble gets a /workers call every cycle, over two simulated hours with worker logs."""
    server = Server(dict(ASSUMED_QUOTA))
    b = V2Budget()
    p = Planner()
    needs = ([Need(f"t{i:03}", "trouble", releases=i == 0) for i in range(10)]
             + [Need(f"b{i:03}", "busy") for i in range(100)]
             + [Need(f"q{i:03}", "quiet") for i in range(890)])
    trouble = {n.endpoint_id for n in needs if n.tier == "trouble"}
    t = 1_764_633_600.0 + 7.0  # a cycle phase that is not the windows'
    for _ in range(240):
        plan = plan_n1000(p, b, t, needs)
        assert trouble <= set(plan.workers), plan
        b.spend(plan.calls, t, "workers")
        for _ in range(plan.calls):
            status, limit, policy, _ = server.call(t)
            assert status == 200
            b.observe(limit, policy, t)
        for _ in range(2):  # the reserve: worker logs of the troubled
            assert b.can_spend(t)
            b.spend(1, t, "logs")
            assert server.call(t)[0] == 200
        p.report(t, workers=plan.workers, listed=plan.list_endpoints or None, facts_ok=plan.facts)
        t += 30
    assert b.throttled == 0
    assert all(p.age_s(e, t) == 30 for e in trouble)


# -- config ---------------------------------------------------------------------------


def test_config_section_defaults_and_errors(tmp_path: Path) -> None:
    s = load_settings(None, env={})
    v = s.runpod.v2_budget
    assert v.assumed == dict(ASSUMED_QUOTA)
    assert v.fact_periods_s["balance"] == 30  # every cycle: it decides balance_exhausted
    assert set(v.fact_periods_s) == set(FACTS)
    path = tmp_path / "config.yaml"
    path.write_text("runpod:\n  v2_budget:\n    shrink_on_429: 1.5\n    reserve: -1\n")
    path.chmod(0o600)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    text = str(info.value)
    assert "runpod.v2_budget.shrink_on_429" in text
    assert "runpod.v2_budget.reserve" in text


# -- metrics --------------------------------------------------------------------------


def observation(ids: list[str], t: float) -> Observation:
    return Observation(
        1, t, "ok", listed_ids=frozenset(ids),
        endpoints={e: EndpointSample(e, "ok", 200, Health(), None, True,
                                     EndpointConfig(e, f"name-{e}")) for e in ids},
    )


def samples(m: MonitorMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body = m.render()[0]
    assert body == generate_latest(m.registry)
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_budget_metrics() -> None:
    b = V2Budget()
    p = Planner()
    b.spend(3, 100.0, "workers")
    b.spend(1, 100.0, "list")
    b.observe('"minute";r=170;t=50', '"minute";q=177;w=60', 100.0)
    b.observe("nonsense", None, 100.0)
    b.on_429(5.0, 100.0)
    p.report(100.0, workers=["e1", "e2"])
    b.allowance(130.0, 30, 2)
    m = MonitorMetrics(extensions=True)
    m.observe_cycle(CycleFacts(observation(["e1", "e2"], 130.0),
                               budget=b.reading(130.0, p.workers_seen)))
    got = samples(m)
    v2 = "runpod_monitor_v2_budget"
    assert got[(f"{v2}_quota", (("window", "minute"),))] == 177
    assert (f"{v2}_quota", (("window", "day"),)) not in got  # the policy names no day
    assert got[(f"{v2}_spent", (("window", "minute"),))] == 4
    assert got[(f"{v2}_calls_total", (("kind", "workers"),))] == 3
    assert got[(f"{v2}_calls_total", (("kind", "pods"),))] == 0  # every kind from 0
    assert got[(f"{v2}_throttled_total", ())] == 1
    assert got[(f"{v2}_malformed_headers_total", ())] == 1
    assert got[(f"{v2}_exempt", ())] == 0
    assert (f"{v2}_allowance", ()) in got
    seen = "runpod_endpoint_workers_seen_timestamp_seconds"
    assert got[(seen, (("endpoint", "name-e1"), ("endpoint_id", "e1")))] == 100.0
    # an endpoint no longer watched loses its series with the cycle that dropped it
    m.observe_cycle(CycleFacts(observation(["e1"], 160.0)))
    got = samples(m)
    assert (seen, (("endpoint", "name-e2"), ("endpoint_id", "e2"))) not in got
    assert (seen, (("endpoint", "name-e1"), ("endpoint_id", "e1"))) in got


def test_budget_metrics_are_extensions_only() -> None:
    fed = MonitorMetrics(extensions=True)
    fed.observe_cycle(CycleFacts(observation(["e1"], 1.0)))
    assert b"v2_budget" not in fed.render()[0]  # no family at all before the first reading
    m = MonitorMetrics()
    m.observe_cycle(CycleFacts(observation(["e1"], 1.0), budget=V2Budget().reading(1.0)))
    assert b"v2_budget" not in m.render()[0]
    assert b"workers_seen" not in m.render()[0]


@pytest.mark.skipif(which("promtool") is None, reason="promtool not installed")
def test_budget_metrics_pass_promtool() -> None:
    b = V2Budget()
    b.spend(2, 0.0, "workers")
    m = MonitorMetrics(extensions=True)
    m.observe_cycle(CycleFacts(observation(["e1"], 30.0),
                               budget=b.reading(30.0, {"e1": 0.0})))
    out = subprocess.run(["promtool", "check", "metrics"], input=m.render()[0],
                         capture_output=True, check=False)
    problems = [line for line in out.stdout.decode().splitlines() + out.stderr.decode()
                .splitlines() if "v2_budget" in line or "workers_seen" in line]
    assert problems == []


def test_budget_module_is_pure() -> None:
    """monitor/pipeline/budget.py imports only the standard library and model/ (replay
    determinism: no clock, no I/O)."""
    import ast
    import sys

    tree = ast.parse((Path(__file__).parents[1] / "monitor" / "pipeline" / "budget.py").read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    roots = {n.split(".")[0] for n in names}
    assert all(r in sys.stdlib_module_names or r in ("__future__", "model") for r in roots)
    assert not roots & {"time", "datetime", "os", "random", "asyncio"}
