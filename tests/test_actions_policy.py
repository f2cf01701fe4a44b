"""The pure half of guarded fixes (monitor/actions/policy.py): what each incident
proposes, where spend_guard reads the cost, and when a fresh read refuses; and the
engine's bounds (expiry, one call per approval, a failed write never repeated)."""

from __future__ import annotations

from typing import Any

import pytest

from model.observation import EndpointConfig, EndpointSample, Health, Observation
from monitor.actions import ActionEngine, Proposal
from monitor.actions.policy import Fresh, incident_cost, propose, refusal
from monitor.config import ActionsSettings
from monitor.runpod.models import Failure, Ok, Result
from monitor.state.incidents import Changes, Incident
from rules.diagnosis import Diagnosis

EP = "polendpoint1"
T = 1_767_225_600.0


def obs(*, in_queue: int = 0, running: int = 2, workers_max: int = 3,
        spend: float | None = None) -> Observation:
    sample = EndpointSample(EP, "ok", 200, Health(in_queue=in_queue, running=running),
                            config=EndpointConfig(EP, "pol", workers_max=workers_max))
    return Observation(cycle=1, t=T, control_outcome="ok", endpoints={EP: sample},
                       endpoint_spend=None if spend is None else {EP: spend})


def incident(code: str, since: float = T - 3600, **evidence: Any) -> Incident:
    d = Diagnosis(code=code, scope="endpoint", severity="critical", summary=code,
                  remedy="r", evidence=evidence, endpoint_id=EP, endpoint_name="pol")
    return Incident(d, since, 1)


def settings(**kinds: Any) -> ActionsSettings:
    return ActionsSettings.model_validate(kinds)


GUARD = {"enabled": True, "max_usd": 5}


@pytest.mark.parametrize(("inc", "o", "price", "cost", "source"), [
    (incident("crash_loop", cost_usd=7.5, spend_usd=1.0), obs(spend=0.1), 1.0, 7.5,
     "evidence cost_usd"),
    (incident("crash_loop", cost_so_far_usd=2), obs(), None, 2.0, "evidence cost_so_far_usd"),
    (incident("crash_loop"), obs(spend=1.5), 9.0, 1.5, "v2 billing 1.5 USD/h x 1.00 h"),
    (incident("crash_loop"), obs(running=2), 0.5, 1.0, "2 workers x 0.5 USD/h x 1.00 h"),
    # the operator's price beats the rules' list-price estimate, not a billed figure
    (incident("crash_loop", cost_so_far_usd=0.4,
              cost_basis="billed workers over 60 min at list price (an estimate)"),
     obs(running=2), 0.5, 1.0, "2 workers x 0.5 USD/h x 1.00 h"),
    (incident("crash_loop", cost_so_far_usd=0.4,
              cost_basis="v2 billing's 0.40 USD/h over 60 min (an estimate)"),
     obs(running=2), 0.5, 0.4, "evidence cost_so_far_usd"),
])
def test_cost_sources_in_order(inc: Incident, o: Observation, price: float | None,
                               cost: float, source: str) -> None:
    got = incident_cost(inc, o, price, T)
    assert got is not None
    assert got[0] == pytest.approx(cost)
    assert got[1] == source


def test_the_estimate_counts_the_workers_runpod_bills() -> None:
    """Health.workers_billed, the one definition: idle and unhealthy workers hold a GPU,
    throttled ones wait for one, `ready` repeats `idle`."""
    h = Health(running=1, idle=2, ready=2, initializing=1, unhealthy=1, throttled=4)
    o = Observation(cycle=1, t=T, control_outcome="ok",
                    endpoints={EP: EndpointSample(EP, "ok", 200, h)})
    got = incident_cost(incident("crash_loop"), o, 1.0, T)
    assert got == (pytest.approx(h.workers_billed * 1.0), "5 workers x 1 USD/h x 1.00 h")


def test_an_unknown_cost_never_trips_the_guard() -> None:
    inc = incident("crash_loop", cost_usd="lots")  # malformed evidence is not a cost
    assert incident_cost(inc, obs(), None, T) is None
    assert propose(settings(spend_guard=GUARD), [inc], [], obs(), T) == []


def test_spend_guard_proposes_over_the_limit_only_while_workers_can_run() -> None:
    s = settings(spend_guard={**GUARD, "usd_per_worker_hr": 2.0})
    over = incident("job_failures")  # 2 workers x 2 USD/h x 1 h = 4 USD... under 5
    assert propose(s, [over], [], obs(), T) == []
    [p] = propose(s, [over], [], obs(running=3), T)
    assert p.kind == "spend_guard"
    assert p.precondition == {"workers_max": 3, "workers_min": 0}
    assert dict(p.extra) == {"cost_usd": 6.0, "cost_from": "3 workers x 2 USD/h x 1.00 h"}
    assert propose(s, [over], [], obs(running=3, workers_max=0), T) == []  # stopped already
    assert propose(s, [incident("workers_unhealthy", cost_usd=99)], [], obs(), T) == []


def test_the_same_incident_gives_the_same_id() -> None:
    s = settings(spend_guard=GUARD)
    inc = incident("crash_loop", cost_usd=10)
    a = propose(s, [inc], [], obs(), T)[0]
    b = propose(s, [inc], [], obs(running=7), T + 300)[0]
    assert a.id == b.id
    assert a.id.startswith("spend-")
    assert propose(s, [incident("crash_loop", T - 60, cost_usd=10)], [], obs(), T)[0].id != a.id


def test_cancel_needs_a_job_id_in_the_evidence() -> None:
    s = settings(cancel_overrun={"enabled": True})
    assert propose(s, [incident("job_overrun")], [], obs(), T) == []
    assert propose(s, [incident("job_overrun", job_id="")], [], obs(), T) == []
    [p] = propose(s, [incident("job_overrun", job_id="j/1")], [], obs(), T)
    assert p.call.text() == f"POST /v2/{EP}/cancel/j%2F1"
    assert p.job_id == "j/1"
    # the other overrunning jobs job_overrun quotes are proposed one by one
    several = incident("job_overrun", job_id="a", job_2="b", job_2_running_s=9.0, job_3="a")
    assert [p.job_id for p in propose(s, [several], [], obs(), T)] == ["a", "b"]


def test_purge_needs_a_resolved_crash_loop_and_enough_queued() -> None:
    s = settings(purge_after_crash_loop={"enabled": True, "min_queued": 3})
    ended = incident("crash_loop")
    assert propose(s, [ended], [], obs(in_queue=5), T) == []  # still active: not yet
    assert propose(s, [], [ended], obs(in_queue=2), T) == []
    [p] = propose(s, [], [ended], obs(in_queue=3), T)
    assert p.precondition == {"min_in_queue": 3, "in_queue_seen": 3}


def test_nothing_is_proposed_by_default() -> None:
    everything = [incident("crash_loop", cost_usd=1e6), incident("job_overrun", job_id="j"),
                  incident("job_failures", cost_usd=1e6)]
    assert propose(ActionsSettings(), everything, everything, obs(in_queue=9), T) == []


@pytest.mark.parametrize(("kind_inc", "fresh", "why"), [
    (("cancel_overrun", incident("job_overrun", job_id="j")), Fresh(job_status="IN_PROGRESS"),
     None),
    (("cancel_overrun", incident("job_overrun", job_id="j")), Fresh(job_status="gone"),
     "the job is gone now, no longer IN_PROGRESS"),
    (("spend_guard", incident("crash_loop", cost_usd=9)), Fresh(workers=(0, 3)), None),
    (("spend_guard", incident("crash_loop", cost_usd=9)), Fresh(workers=(0, 0)),
     "workersMax is 0 now, not the 3 this was based on"),
    (("spend_guard", incident("crash_loop", cost_usd=9)), Fresh(error="timeout 0: slow"),
     "could not read the state again: timeout 0: slow"),
])
def test_refusal_reads_the_fresh_state(kind_inc: tuple[str, Incident], fresh: Fresh,
                                       why: str | None) -> None:
    kind, inc = kind_inc
    s = settings(**{kind: GUARD if kind == "spend_guard" else {"enabled": True}})
    [p] = propose(s, [inc], [], obs(), T)
    assert refusal(p, fresh) == why


class FakePort:
    """A port that counts what it was asked; writes answer `write`."""

    def __init__(self, write: Result[str]) -> None:
        self.write = write
        self.reads = 0
        self.writes: list[str] = []

    async def job_status(self, endpoint_id: str, job_id: str) -> Result[str]:
        self.reads += 1
        return Ok("IN_PROGRESS")

    async def queue_length(self, endpoint_id: str) -> Result[int]:
        self.reads += 1
        return Ok(4)

    async def endpoint_workers(self, endpoint_id: str) -> Result[tuple[int, int]]:
        self.reads += 1
        return Ok((0, 3))

    async def execute(self, p: Proposal) -> Result[str]:
        self.writes.append(p.id)
        return self.write


async def test_a_failed_write_is_recorded_and_never_repeated() -> None:
    port = FakePort(Failure("http_500", 500, message="boom"))
    engine = ActionEngine(settings(spend_guard={**GUARD, "auto": True}), port=port)
    inc = incident("crash_loop", cost_usd=9)
    for k in range(3):
        await engine.step(obs(), Changes(held=[inc]), [inc], T + 30 * k)
    [p] = engine.listing()
    assert p.state == "failed"
    assert p.result == "http_500 500: boom"
    assert len(port.writes) == 1
    assert [a.event for a in engine.audit] == ["proposed", "approved", "failed"]


async def test_proposals_expire_and_the_cycle_runs_at_most_max_per_cycle() -> None:
    port = FakePort(Ok("done"))
    s = settings(expire_s=600, max_per_cycle=2, cancel_overrun={"enabled": True})
    engine = ActionEngine(s, port=port)
    jobs = [incident("job_overrun", job_id=f"j{i}") for i in range(3)]
    await engine.step(obs(), Changes(raised=jobs), jobs, T)
    for p in engine.listing():
        engine.approve(p.id, "api:token", T + 1)
    await engine.step(obs(), Changes(held=jobs), jobs, T + 30)
    assert len(port.writes) == 2
    await engine.step(obs(), Changes(held=jobs), jobs, T + 60)
    assert len(port.writes) == 3
    assert {p.state for p in engine.listing()} == {"executed"}
    late = incident("job_overrun", job_id="late")
    await engine.step(obs(), Changes(raised=[late]), [late], T + 100)
    await engine.step(obs(), Changes(held=[late]), [late], T + 100 + 601)
    [expired] = [p for p in engine.listing() if p.job_id == "late"]
    assert expired.state == "expired"
    assert len(port.writes) == 3
