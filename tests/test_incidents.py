"""The incident tracker: raise, hold on unknown data, resolve on fresh data, suppression."""

from __future__ import annotations

from model.observation import Account, EndpointSample, Health, Observation
from monitor.state.incidents import IncidentTracker
from rules.diagnosis import Diagnosis
from rules.inhibit import suppress

HEALTHY = Health()


def obs(cycle: int, *, health: Health | None = HEALTHY, outcome: str = "ok",
        graphql: str = "ok", eids: tuple[str, ...] = ("ep1",)) -> Observation:
    ok = outcome == "ok"
    samples = {e: EndpointSample(e, outcome, 200 if ok else 0, health if ok else None)
               for e in eids}
    return Observation(cycle, cycle * 30.0, graphql,
                       account=Account(10, 0) if graphql == "ok" else None,
                       listed_ids=frozenset(eids) if graphql == "ok" else None,
                       endpoints=samples)


def diag(code: str, eid: str | None = "ep1", severity: str = "critical") -> Diagnosis:
    scope = "endpoint" if eid else "account"
    return Diagnosis(code, scope, severity, f"{code} summary", "fix", {}, eid, eid)  # type: ignore[arg-type]


def test_raise_then_hold_then_resolve() -> None:
    """A diagnosis is raised once, held while found again, resolved when fresh data clears it."""
    tr = IncidentTracker()
    c1 = tr.update(obs(1), [diag("crash_loop")])
    assert [i.key for i in c1.raised] == [("crash_loop", "ep1")]
    c2 = tr.update(obs(2), [diag("crash_loop")])
    assert not c2.raised
    assert [i.key for i in c2.held] == [("crash_loop", "ep1")]
    assert c2.held[0].since == 30.0
    assert c2.held[0].raised_cycle == 1
    c3 = tr.update(obs(3), [])
    assert [i.key for i in c3.resolved] == [("crash_loop", "ep1")]
    assert c3.resolved[0].resolved_cycle == 3
    assert not tr.active


def test_a_severity_that_rises_is_escalated_once() -> None:
    """warning -> critical is held and escalated in that cycle only; a fall is not."""
    tr = IncidentTracker()
    tr.update(obs(1), [diag("no_gpu_capacity", severity="warning")])
    rose = tr.update(obs(2), [diag("no_gpu_capacity", severity="critical")])
    assert [i.key for i in rose.escalated] == [("no_gpu_capacity", "ep1")]
    assert rose.escalated[0].diagnosis.severity == "critical"
    assert rose.escalated[0].since == 30.0
    assert not tr.update(obs(3), [diag("no_gpu_capacity", severity="critical")]).escalated
    assert not tr.update(obs(4), [diag("no_gpu_capacity", severity="warning")]).escalated


def test_unknown_health_holds_crash_loop() -> None:
    """An API outage (health timeouts) never resolves a crash loop."""
    tr = IncidentTracker()
    tr.update(obs(1), [diag("crash_loop")])
    for c in range(2, 6):
        ch = tr.update(obs(c, outcome="timeout"), [])
        assert not ch.resolved
        assert ("crash_loop", "ep1") in tr.active
    assert tr.update(obs(6), []).resolved


def test_graphql_outage_holds_audit_and_account() -> None:
    """Template-audit and account diagnoses are held while GraphQL fails."""
    tr = IncidentTracker()
    tr.update(obs(1), [diag("secret_in_template"), diag("low_balance", None, "warning")])
    ch = tr.update(obs(2, graphql="timeout"), [])
    assert not ch.resolved
    assert len(ch.held) == 2


def test_404_is_fresh_data_for_health_rules() -> None:
    """A REST 404 is an answer: a crash loop on an endpoint now answering 404 resolves."""
    tr = IncidentTracker()
    tr.update(obs(1), [diag("crash_loop")])
    assert tr.update(obs(2, outcome="http_404"), []).resolved


def test_unwatched_endpoint_resolves() -> None:
    """An endpoint no longer watched (deleted and unlisted) has its incidents resolved."""
    tr = IncidentTracker()
    tr.update(obs(1), [diag("endpoint_disabled")])
    ch = tr.update(obs(2, eids=("ep2",)), [])
    assert [i.key for i in ch.resolved] == [("endpoint_disabled", "ep1")]


def test_auth_invalid_suppresses_endpoint_diagnoses() -> None:
    """While auth_invalid holds, endpoint diagnoses are not raised and active ones are held."""
    tr = IncidentTracker()
    tr.update(obs(1), [diag("workers_unhealthy")])
    ch = tr.update(obs(2), [diag("auth_invalid", None), diag("crash_loop")])
    assert [i.key for i in ch.raised] == [("auth_invalid", None)]
    assert ("workers_unhealthy", "ep1") in tr.active
    assert not ch.resolved


def test_balance_exhausted_mutes_its_symptoms() -> None:
    """balance_exhausted mutes the same endpoint's other diagnoses, not other endpoints'."""
    kept = suppress([diag("balance_exhausted"), diag("never_started"), diag("crash_loop", "ep2")])
    assert {d.key for d in kept} == {("balance_exhausted", "ep1"), ("crash_loop", "ep2")}


def test_diagnoses_sorted_by_severity() -> None:
    """The active list puts critical first."""
    tr = IncidentTracker()
    tr.update(obs(1), [diag("idle_spend", None, "info"), diag("crash_loop")])
    assert [d.code for d in tr.diagnoses()] == ["crash_loop", "idle_spend"]
