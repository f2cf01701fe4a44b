"""account rules: auth_invalid, runpod_api_errors, low_balance and idle_spend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from rulekit import (
    CONFIG,
    TH,
    Health,
    account,
    build,
    config,
    observation,
    sample,
)

from model.observation import SKIPPED, Account, EndpointSample, NetworkVolume, Observation, Pod
from rules import account as account_rules
from rules import engine
from rules.diagnosis import Diagnosis
from rules.thresholds import Thresholds


def obs(
    cycle: int,
    graphql: str = "ok",
    rest: Sequence[str] = ("ok",),
    acct: Account | None = None,
    healths: Sequence[Health | None] | None = None,
) -> Observation:
    """One cycle: GraphQL's outcome and one REST /health outcome per endpoint (ep1, ep2...)."""
    samples: list[EndpointSample] = []
    for i, outcome in enumerate(rest):
        h = healths[i] if healths is not None else (Health(idle=1) if outcome == "ok" else None)
        eid = f"ep{i + 1}"
        cfg = config(eid) if graphql == "ok" else None
        samples.append(sample(h, endpoint_id=eid, outcome=outcome, config=cfg))
    if acct is None and graphql == "ok":
        acct = account(100.0, 0.0)
    return observation(cycle, samples, account=acct, control_outcome=graphql)


def run(observations: Sequence[Observation], th: Thresholds = TH) -> list[Diagnosis]:
    return account_rules.diagnose(build(observations), th)


def only(found: Sequence[Diagnosis], code: str) -> list[Diagnosis]:
    return [d for d in found if d.code == code]


# --- auth_invalid ---------------------------------------------------------------------


def test_one_401_raises_nothing() -> None:
    """A single 401 cycle is below the 2-cycle threshold."""
    assert only(run([obs(1), obs(2, graphql="http_401")]), "auth_invalid") == []


def test_graphql_401_twice_raises_auth_invalid() -> None:
    """GraphQL 401 in 2 consecutive cycles raises a critical account-scope auth_invalid."""
    found = only(run([obs(1, "http_401"), obs(2, "http_401")]), "auth_invalid")
    assert len(found) == 1
    d = found[0]
    assert (d.scope, d.endpoint_id, d.severity) == ("account", None, "critical")
    assert d.evidence["auth_cycles"] == 2
    assert d.evidence["graphql_auth_failures"] == 2
    assert "401" in d.summary
    assert "RUNPOD_API_KEY" in d.remedy


def test_rest_403_alone_raises_auth_invalid() -> None:
    """A REST 403 on one endpoint, GraphQL fine, for 2 cycles raises auth_invalid."""
    found = only(run([obs(c, rest=("ok", "http_403")) for c in (1, 2)]), "auth_invalid")
    assert len(found) == 1
    assert found[0].evidence["rest_auth_failures"] == 2
    assert found[0].evidence["rest_endpoints"] == "ep2"
    assert "403" in found[0].summary


def test_auth_threshold_boundary() -> None:
    """With auth_cycles=3, two 401 cycles raise nothing and three raise."""
    th = Thresholds(auth_cycles=3)
    two = [obs(1), obs(2, "http_401"), obs(3, "http_401")]
    assert only(run(two, th), "auth_invalid") == []
    assert len(only(run([*two, obs(4, "http_401")], th), "auth_invalid")) == 1


def test_all_unknown_cycle_between_401s_is_skipped() -> None:
    """401, all timeouts, 401: the unknown cycle neither counts nor breaks the run."""
    observations = [obs(1, "http_401"), obs(2, "timeout", ("timeout",)), obs(3, "http_401")]
    assert len(only(run(observations), "auth_invalid")) == 1


def test_auth_invalid_holds_through_unknown_cycles() -> None:
    """Raised, then every probe times out: still returned (unknown data holds)."""
    observations = [obs(1, "http_401"), obs(2, "http_401"), obs(3, "timeout", ("timeout",))]
    assert len(only(run(observations), "auth_invalid")) == 1


def test_auth_invalid_holds_while_rest_is_unknown() -> None:
    """GraphQL answers but every REST probe times out: not clean yet, still returned."""
    observations = [obs(1, "http_401"), obs(2, "http_401"), obs(3, "ok", ("timeout",))]
    assert len(only(run(observations), "auth_invalid")) == 1


def test_auth_invalid_resolves_on_a_clean_cycle() -> None:
    """A cycle where GraphQL and REST answer without 401/403 ends it."""
    observations = [obs(1, "http_401"), obs(2, "http_401"), obs(3)]
    assert only(run(observations), "auth_invalid") == []


def test_auth_flapping_raises_nothing() -> None:
    """401, clean, 401: never 2 consecutive, so nothing."""
    assert only(run([obs(1, "http_401"), obs(2), obs(3, "http_401")]), "auth_invalid") == []


def test_auth_state_classification() -> None:
    """auth_state: 401/403 anywhere is auth; unknown GraphQL or all-unknown REST is unknown."""
    assert account_rules.auth_state(obs(1, "ok", ("http_403",))) == "auth"
    assert account_rules.auth_state(obs(1, "timeout", ("ok",))) == "unknown"
    assert account_rules.auth_state(obs(1, "ok", ("timeout", "http_5xx"))) == "unknown"
    assert account_rules.auth_state(obs(1, "ok", ("timeout", "http_404"))) == "clear"
    assert account_rules.auth_state(obs(1, "ok", ())) == "clear"


# --- runpod_api_errors ----------------------------------------------------------------


def test_graphql_failing_below_threshold_raises_nothing() -> None:
    """GraphQL timeouts in 2 cycles are below the 3-cycle threshold."""
    observations = [obs(1), obs(2, "timeout"), obs(3, "timeout")]
    assert only(run(observations), "runpod_api_errors") == []


def test_graphql_failing_three_cycles_raises_api_errors() -> None:
    """GraphQL timeout/5xx in 3 consecutive cycles raises runpod_api_errors with counts."""
    observations = [obs(1), obs(2, "timeout"), obs(3, "http_5xx"), obs(4, "timeout")]
    found = only(run(observations), "runpod_api_errors")
    assert len(found) == 1
    d = found[0]
    assert (d.scope, d.endpoint_id, d.severity) == ("account", None, "warning")
    assert d.evidence["graphql_failed_cycles"] == 3
    assert d.evidence["graphql_failures"] == "timeout: 2, http_5xx: 1"
    assert d.evidence["failing_s"] == 60.0
    assert "rest_failed_cycles" not in d.evidence
    assert "GraphQL" in d.summary


def test_rest_failing_for_every_endpoint_raises_api_errors() -> None:
    """Every watched endpoint's /health failing for 3 cycles raises, REST kind named."""
    observations = [obs(c, rest=("http_429", "connect")) for c in (1, 2, 3)]
    found = only(run(observations), "runpod_api_errors")
    assert len(found) == 1
    ev = found[0].evidence
    assert ev["rest_failed_cycles"] == 3
    assert ev["rest_endpoints"] == 2
    assert ev["rest_failures"] == "http_429: 3, connect: 3"
    assert "graphql_failed_cycles" not in ev


def test_one_endpoint_answering_means_rest_is_not_failing() -> None:
    """One endpoint failing while another answers is not an API outage."""
    observations = [obs(c, rest=("timeout", "ok")) for c in (1, 2, 3, 4)]
    assert only(run(observations), "runpod_api_errors") == []


def test_404_and_401_are_answers_not_api_errors() -> None:
    """404 and 401 are RunPod answering: they never count as API errors."""
    observations = [obs(c, rest=("http_404", "http_401")) for c in (1, 2, 3, 4)]
    assert only(run(observations), "runpod_api_errors") == []


def test_no_endpoints_is_not_a_rest_failure() -> None:
    """With no endpoint watched there is no REST kind to fail."""
    observations = [obs(c, rest=()) for c in (1, 2, 3)]
    assert only(run(observations), "runpod_api_errors") == []


def test_api_errors_flapping_raises_nothing() -> None:
    """timeout, timeout, ok, timeout, timeout: the success breaks the run."""
    outcomes = ["timeout", "timeout", "ok", "timeout", "timeout"]
    observations = [obs(i + 1, g) for i, g in enumerate(outcomes)]
    assert only(run(observations), "runpod_api_errors") == []


def test_skipped_probe_after_two_failures_is_not_a_third() -> None:
    """5xx, 5xx, then a cycle the back-off skipped, then 200: two probes failed, none of
    the 3 consecutive failures the rule needs (the skip is not a failure)."""
    rest = ["http_5xx", "http_5xx", SKIPPED]
    observations = [obs(1), *(obs(i + 2, rest=(r,)) for i, r in enumerate(rest))]
    assert only(run(observations), "runpod_api_errors") == []
    assert only(run([*observations, obs(5)]), "runpod_api_errors") == []


def test_skipped_probes_neither_count_nor_break_the_run() -> None:
    """5xx, skipped, 5xx, skipped, 5xx: three sent probes failed, raised; the evidence
    counts the failures only and says how many cycles were not probed."""
    rest = ["http_5xx", SKIPPED, "http_5xx", SKIPPED, SKIPPED, "timeout"]
    observations = [obs(1), *(obs(i + 2, rest=(r,)) for i, r in enumerate(rest))]
    assert only(run(observations[:-1]), "runpod_api_errors") == []
    found = only(run(observations), "runpod_api_errors")
    assert len(found) == 1
    ev = found[0].evidence
    assert ev["rest_failed_cycles"] == 3
    assert ev["rest_failures"] == "http_5xx: 2, timeout: 1"
    assert ev["rest_unprobed_cycles"] == 3
    assert ev["failing_s"] == 150.0
    assert SKIPPED not in found[0].summary
    assert "3 more cycles not probed (back-off)" in found[0].summary
    # held while the back-off skips the next cycles, ended by the first answer
    held = [*observations, obs(8, rest=(SKIPPED,))]
    assert only(run(held), "runpod_api_errors")
    assert only(run([*held, obs(9)]), "runpod_api_errors") == []


def test_skipped_graphql_is_unknown_too() -> None:
    """GraphQL: timeout, timeout, skipped is not raised; a third sent failure raises."""
    first = [obs(1), obs(2, "timeout"), obs(3, "timeout"), obs(4, SKIPPED)]
    assert only(run(first), "runpod_api_errors") == []
    found = only(run([*first, obs(5, "http_5xx")]), "runpod_api_errors")
    assert len(found) == 1
    assert found[0].evidence["graphql_failures"] == "timeout: 2, http_5xx: 1"
    assert found[0].evidence["graphql_unprobed_cycles"] == 1
    assert "rest_failed_cycles" not in found[0].evidence


def test_rest_cycle_counts_only_the_probes_sent() -> None:
    """One endpoint skipped and the other failing: every probe sent failed, a failed cycle;
    one skipped and the other answering: not failing."""
    failing = [obs(c, rest=("timeout", SKIPPED if c == 2 else "timeout")) for c in (1, 2, 3)]
    found = only(run(failing), "runpod_api_errors")
    assert len(found) == 1
    assert found[0].evidence["rest_failures"] == "timeout: 5"
    assert "rest_unprobed_cycles" not in found[0].evidence
    answering = [obs(c, rest=("timeout", SKIPPED if c == 2 else "ok")) for c in (1, 2, 3)]
    assert only(run([*failing[:2], answering[2]]), "runpod_api_errors") == []


def test_skipped_probes_do_not_clear_auth_invalid() -> None:
    """A cycle whose every REST probe was skipped tells nothing: auth_invalid holds."""
    assert account_rules.auth_state(obs(1, "ok", (SKIPPED,))) == "unknown"
    assert account_rules.auth_state(obs(1, SKIPPED, ("ok",))) == "unknown"
    assert account_rules.auth_state(obs(1, "ok", (SKIPPED, "ok"))) == "clear"
    observations = [obs(1, "http_401"), obs(2, "http_401"), obs(3, "ok", (SKIPPED,))]
    assert len(only(run(observations), "auth_invalid")) == 1


def test_outage_raises_only_runpod_api_errors() -> None:
    """Healthy, then every probe timing out for 5 cycles: the engine raises only api errors."""
    busy = account(100.0, 1.0)
    healthy = [
        observation(c, [sample(Health(running=1, in_progress=1), config=CONFIG)], account=busy)
        for c in (1, 2, 3)
    ]
    outage = [
        observation(c, [sample(None, outcome="timeout")], control_outcome="timeout")
        for c in range(4, 9)
    ]
    found = engine.evaluate(build([*healthy, *outage]), TH)
    assert [d.code for d in found] == ["runpod_api_errors"]
    ev = found[0].evidence
    assert ev["graphql_failed_cycles"] == 5
    assert ev["rest_failed_cycles"] == 5


# --- low_balance ------------------------------------------------------------------------


def low(balance: float, spend: float, th: Thresholds = TH, t: float = 0.0) -> list[Diagnosis]:
    o = replace(obs(1, acct=account(balance, spend)), t=t)
    return only(account_rules.diagnose(build([o]), th), "low_balance")


def test_short_runway_raises_low_balance_with_the_date() -> None:
    """100 USD at 5 USD/h is a 20 h runway: warning, with hours and the run-out date."""
    found = low(100.0, 5.0, t=1_700_000_000)
    assert len(found) == 1
    d = found[0]
    assert (d.scope, d.severity) == ("account", "warning")
    assert d.evidence["runway_h"] == 20.0
    assert d.evidence["runs_out_at"] == "2023-11-15 18:13 UTC"
    assert "20.0 h" in d.summary
    assert "2023-11-15 18:13 UTC" in d.summary


def test_runway_threshold_boundary() -> None:
    """A runway of exactly 24 h raises nothing; just under raises."""
    assert low(120.0, 5.0) == []
    assert len(low(119.9, 5.0)) == 1


def test_balance_floor_boundary() -> None:
    """With no spend, 5 USD raises nothing and 4.99 USD raises a warning."""
    assert low(5.0, 0.0) == []
    found = low(4.99, 0.0)
    assert [d.severity for d in found] == ["warning"]
    assert "runway_h" not in found[0].evidence


def test_critical_runway_boundary() -> None:
    """A runway of exactly 2 h is a warning; under 2 h is critical."""
    assert [d.severity for d in low(20.0, 10.0)] == ["warning"]
    found = low(0.40, 2.30)
    assert [d.severity for d in found] == ["critical"]
    assert "0.2 h (10 min)" in found[0].summary


def test_nonpositive_balance_is_critical() -> None:
    """A balance at or below zero is critical even with no spend."""
    found = low(-0.12, 0.0)
    assert [d.severity for d in found] == ["critical"]
    assert found[0].evidence["runway_h"] == 0.0
    assert "runs_out_at" not in found[0].evidence


def test_healthy_balance_raises_nothing() -> None:
    """500 USD at 1 USD/h raises nothing."""
    assert low(500.0, 1.0) == []


def test_a_postpaid_account_gets_no_low_balance_alarm() -> None:
    """POSTPAID accounts are invoiced, so a low or negative balance raises nothing; the same
    balance on a PREPAID (or unknown) account does."""
    for balance, spend in ((1.0, 2.0), (0.0, 0.5), (-3.0, 0.0)):
        for mode, raised in (("POSTPAID", False), ("PREPAID", True), (None, True)):
            acct = account(balance, spend, billing_mode=mode)
            found = only(run([obs(1, acct=acct)]), "low_balance")
            assert bool(found) is raised, (balance, spend, mode)


def test_low_balance_needs_account_data() -> None:
    """With GraphQL failed in the latest cycle there is no account data: nothing."""
    observations = [obs(1, acct=account(1.0, 1.0)), obs(2, "timeout")]
    assert only(run(observations), "low_balance") == []


# --- idle_spend -------------------------------------------------------------------------

VOLUMES = (NetworkVolume("vol1", "models", 50.0, "US-TX-3"), NetworkVolume("vol2", "", 10.0))


def idle_obs(cycle: int, *, workers: int = 0, pods: Sequence[Pod] = (),
             spend: float = 0.05, graphql: str = "ok", rest: str = "ok") -> Observation:
    acct = account(100.0, spend, volumes=VOLUMES, pods=pods) if graphql == "ok" else None
    h = Health(idle=workers) if rest == "ok" else None
    return obs(cycle, graphql, (rest,), acct=acct, healths=[h])


def idle_run(n: int, **kw: object) -> list[Observation]:
    return [idle_obs(c, **kw) for c in range(1, n + 1)]  # type: ignore[arg-type]


def test_idle_spend_for_30_min_raises_info_with_costs() -> None:
    """Spend with no worker and no pod for 1800 s raises idle_spend with volumes and costs."""
    found = only(run(idle_run(61)), "idle_spend")
    assert len(found) == 1
    d = found[0]
    assert (d.scope, d.severity) == ("account", "info")
    ev = d.evidence
    assert ev["idle_s"] == 1800.0
    assert ev["monthly_usd"] == 36.5
    assert ev["network_volumes"] == 2
    assert ev["volumes_usd_month"] == 4.2
    assert "models (vol1, US-TX-3): 50 GB, 3.50 USD/month" in ev["volumes"]
    assert "36.50 USD/month" in d.summary
    assert "vol1" in d.remedy
    assert "https://api.runpod.io/v2/network-volumes/<volume id>" in d.remedy


def test_idle_spend_threshold_boundary() -> None:
    """1770 s of idle spend is below the 1800 s threshold."""
    assert only(run(idle_run(60)), "idle_spend") == []


def test_a_worker_breaks_the_idle_run() -> None:
    """A worker seen mid-window restarts the idle clock."""
    observations = idle_run(61)
    observations[30] = idle_obs(31, workers=1)
    assert only(run(observations), "idle_spend") == []


def test_unknown_workers_neither_count_nor_break_the_idle_run() -> None:
    """Cycles whose /health failed are not idle: a REST outage beside a busy worker raises
    nothing, and unknown cycles inside an idle run neither count nor break it."""
    outage = [idle_obs(c, rest="timeout") for c in range(2, 80)]
    busy_then_outage = [idle_obs(1, workers=1), *outage]
    assert only(run(busy_then_outage), "idle_spend") == []
    gappy = idle_run(61)
    gappy[20:25] = [idle_obs(c, rest="http_5xx") for c in range(21, 26)]
    assert len(only(run(gappy), "idle_spend")) == 1


def test_running_pod_is_not_idle() -> None:
    """A RUNNING pod explains the spend: nothing."""
    pod = Pod("pod1", "dev", "RUNNING", 0.4)
    assert only(run(idle_run(61, pods=[pod])), "idle_spend") == []


def test_exited_pod_does_not_prevent_idle_spend() -> None:
    """An EXITED pod does not count as running."""
    pod = Pod("pod1", "dev", "EXITED", 0.0)
    assert len(only(run(idle_run(61, pods=[pod])), "idle_spend")) == 1


def test_zero_spend_is_not_idle_spend() -> None:
    """No spend, nothing to report."""
    assert only(run(idle_run(61, spend=0.0)), "idle_spend") == []


def test_unknown_cycles_inside_the_idle_window_are_skipped() -> None:
    """GraphQL failures and /health timeouts inside the window neither count nor break it."""
    observations = idle_run(61)
    observations[10] = idle_obs(11, graphql="timeout")
    observations[20] = idle_obs(21, rest="timeout")
    assert len(only(run(observations), "idle_spend")) == 1


def test_idle_spend_latest_unknown_raises_nothing() -> None:
    """With the latest GraphQL answer failed, idle_spend says nothing (tracker holds)."""
    observations = [*idle_run(61), idle_obs(62, graphql="timeout")]
    assert only(run(observations), "idle_spend") == []


def test_idle_spend_without_volumes_points_at_pods() -> None:
    """Idle spend with no network volume listed points at pods' disks and workersMin."""
    observations = [
        obs(c, acct=account(100.0, 0.02), healths=[Health()]) for c in range(1, 62)
    ]
    found = only(run(observations), "idle_spend")
    assert len(found) == 1
    assert found[0].evidence["network_volumes"] == 0
    assert "workersMin" in found[0].remedy


def test_idle_spend_names_each_volume_and_pod_with_its_monthly_cost() -> None:
    """A volume costs its size at 0.07 USD/GB-month under 1 TB and 0.05 from 1 TB; a
    stopped pod its disk at 0.20; each is named with its cost, dearest first, and the
    stopped pod gets its terminate call."""
    volumes = (NetworkVolume("vol-big", "archive", 2000.0, "EU-RO-1"),
               NetworkVolume("vol1", "models", 50.0, "US-TX-3"))
    pods = (Pod("pod-a", "dev", "EXITED", 0.0, disk_gb=100.0),
            Pod("pod-b", "gone", "EXITED", 0.0))  # disk unknown: no cost to name
    observations = [
        obs(c, acct=account(100.0, 0.2, volumes=volumes, pods=pods), healths=[Health()])
        for c in range(1, 62)
    ]
    (d,) = only(run(observations), "idle_spend")
    ev = d.evidence
    assert ev["volumes"] == (
        "archive (vol-big, EU-RO-1): 2000 GB, 100.00 USD/month; "
        "models (vol1, US-TX-3): 50 GB, 3.50 USD/month"
    )
    assert ev["volumes_usd_month"] == 103.5
    assert ev["pods"] == "pod dev (pod-a, EXITED): stopped, 100 GB disk, 20.00 USD/month"
    assert ev["pods_usd_month"] == 20.0
    assert "2 network volumes (103.50 USD/month) and 1 pod (20.00 USD/month)" in d.summary
    assert "pod-b" not in d.remedy
    assert 'podTerminate(input: { podId: \\"pod-a\\" })' in d.remedy


def test_idle_spend_prices_pods_and_volumes_by_the_thresholds() -> None:
    """The three prices are `rules:` keys."""
    th = Thresholds.model_validate({"volume_usd_per_gb_month": 0.1,
                                    "volume_usd_per_gb_month_over_1tb": 0.04,
                                    "pod_disk_usd_per_gb_month": 0.3})
    assert account_rules.volume_month_usd(500, th) == 50.0
    assert account_rules.volume_month_usd(1000, th) == 40.0
    assert account_rules.pod_month_usd(Pod("p", "", "EXITED", 0.0, disk_gb=10), th) == 3.0
    assert account_rules.pod_month_usd(Pod("p", "", "RUNNING", 0.5), th) == 365.0
    assert account_rules.pod_month_usd(Pod("p", "", "EXITED", 0.0), th) is None


def test_idle_spend_in_rest_mode_quotes_v2_calls() -> None:
    """In REST mode the pod is terminated with DELETE /v2/pods/{id} and the checks are v2
    GETs: no GraphQL."""
    pods = (Pod("pod-a", "dev", "EXITED", 0.0, disk_gb=100.0),)
    observations = [
        replace(obs(c, acct=account(100.0, 0.2, pods=pods), healths=[Health()]),
                control_plane="rest")
        for c in range(1, 62)
    ]
    (d,) = only(run(observations), "idle_spend")
    assert "curl -s -X DELETE https://api.runpod.io/v2/pods/pod-a " in d.remedy
    assert "curl -s https://api.runpod.io/v2/pods " in d.remedy
    assert "graphql" not in d.remedy.lower()
