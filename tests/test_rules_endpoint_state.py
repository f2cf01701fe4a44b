"""endpoint_state rules: workers_max_zero and the four readings of a REST 404 on /health."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest
from remedykit import posted
from rulekit import (
    CONFIG,
    EID,
    TH,
    Health,
    account,
    build,
    config,
    observation,
    sample,
    template,
)

from model.history import History, Memory
from model.observation import Observation
from rules import endpoint_state
from rules.diagnosis import Diagnosis
from rules.thresholds import Thresholds

TPL_CONFIG = config(template=template("tpl-w", image_name="example/whisper:3"))


def ok(cycle: int, balance: float = 100.0, health: Health | None = None) -> Observation:
    """A cycle where /health answered 200 and GraphQL listed the endpoint."""
    h = health if health is not None else Health(idle=1, ready=1)
    return observation(cycle, [sample(h, config=TPL_CONFIG)], account=account(balance))


def nf(cycle: int, balance: float = 100.0, *, listed: bool = True) -> Observation:
    """A cycle where /health answered 404 (listed or not by a successful GraphQL answer)."""
    s = sample(None, outcome="http_404", config=TPL_CONFIG if listed else None,
               listed=None if listed else False)
    return observation(cycle, [s], account=account(balance))


def unknown(cycle: int, balance: float = 100.0, outcome: str = "timeout") -> Observation:
    """A cycle where /health failed (unknown) and GraphQL answered."""
    return observation(
        cycle, [sample(None, outcome=outcome, config=TPL_CONFIG)], account=account(balance)
    )


def graphql_down(cycle: int, outcome: str = "http_404") -> Observation:
    """A cycle where /health answered `outcome` and GraphQL timed out."""
    return observation(cycle, [sample(None, outcome=outcome)], control_outcome="timeout")


def run(obs: Sequence[Observation], th: Thresholds = TH, memory: Memory | None = None
        ) -> list[Diagnosis]:
    return endpoint_state.diagnose(build(obs, memory), th)


def codes(found: Sequence[Diagnosis]) -> list[str]:
    return [d.code for d in found]


# --- the 404 window ------------------------------------------------------------------


def test_single_404_raises_nothing() -> None:
    """One 404 is below the 2-cycle threshold, whatever the balance."""
    assert run([ok(1), nf(2, -1.0)]) == []


def test_two_404s_with_nonpositive_balance_raise_balance_exhausted() -> None:
    """404 twice, listed, balance <= 0 raises balance_exhausted with evidence and remedy."""
    found = run([ok(1), nf(2, -0.12), nf(3, -0.12)])
    assert codes(found) == ["balance_exhausted"]
    d = found[0]
    assert d.severity == "critical"
    assert d.endpoint_id == EID
    assert d.endpoint_name == CONFIG.name
    assert d.evidence["not_found_cycles"] == 2
    assert d.evidence["balance_usd"] == -0.12
    assert d.evidence["listed"] is True
    assert "-0.12" in d.summary
    assert "Add funds" in d.remedy
    assert f'deleteEndpoint(id: "{EID}")' in posted(d.remedy)
    assert "saveEndpoint(input: { name:" in d.remedy  # the create mutation has no id
    assert "workersMax: 0" in d.remedy  # scale to zero before deleting


def test_a_postpaid_account_is_never_balance_exhausted() -> None:
    """A POSTPAID account is invoiced: a balance <= 0 does not disable its endpoints, so
    404s that follow a 200 read as endpoint_disabled, not balance_exhausted."""
    postpaid = account(-5.0, billing_mode="POSTPAID")
    cycles = [ok(1), nf(2, -5.0), nf(3, -5.0)]
    found = run([replace(o, account=postpaid) for o in cycles])
    assert codes(found) == ["endpoint_disabled"]


def test_rest_mode_recreates_with_v2_delete_and_post() -> None:
    """In REST mode the recreation is DELETE /v2/serverless/{id} and POST /v2/serverless
    (no scale-to-zero: a v2 DELETE stops the workers itself), and the summary names REST v2
    as the listing."""
    found = run([replace(o, control_plane="rest", sources={"endpoints": "rest"})
                 for o in (ok(1), nf(2, -0.12), nf(3, -0.12))])
    (d,) = found
    assert "REST v2 still lists it" in d.summary
    assert f"curl -s -X DELETE https://api.runpod.io/v2/serverless/{EID} " in d.remedy
    assert "curl -s -X POST https://api.runpod.io/v2/serverless " in d.remedy
    assert '"templateId": "tpl-w"' in d.remedy
    assert "mutation" not in d.remedy


def test_balance_exactly_zero_counts_as_exhausted() -> None:
    """A balance of exactly 0 is exhausted (<= 0)."""
    assert codes(run([nf(1, 0.0), nf(2, 0.0)])) == ["balance_exhausted"]


def test_not_found_threshold_boundary() -> None:
    """With not_found_cycles=3, two 404s raise nothing and three raise."""
    th = Thresholds(not_found_cycles=3)
    assert run([ok(1), nf(2, -1), nf(3, -1)], th) == []
    assert codes(run([ok(1), nf(2, -1), nf(3, -1), nf(4, -1)], th)) == ["balance_exhausted"]


def test_unknown_samples_inside_the_window_are_skipped() -> None:
    """404, timeout, 5xx, 404: the unknown samples neither count nor break the run."""
    obs = [ok(1), nf(2, -1), unknown(3, -1), unknown(4, -1, "http_5xx"), nf(5, -1)]
    found = run(obs)
    assert codes(found) == ["balance_exhausted"]
    assert found[0].evidence["not_found_cycles"] == 2


def test_flapping_ok_between_404s_raises_nothing() -> None:
    """404, 200, 404: the 200 breaks the run."""
    assert run([nf(1, -1), ok(2, -1), nf(3, -1)]) == []


def test_latest_sample_unknown_raises_nothing() -> None:
    """404, 404, timeout: the latest sample is unknown, so the rule holds (says nothing)."""
    assert run([nf(1, -1), nf(2, -1), unknown(3, -1)]) == []


def test_latest_auth_failure_raises_nothing() -> None:
    """A 401 on /health is not a 404 reading: nothing from the 404 family."""
    assert run([nf(1, -1), nf(2, -1), unknown(3, -1, "http_401")]) == []


def test_latest_graphql_failure_raises_nothing() -> None:
    """404s with the latest GraphQL answer failed: no listing, no balance, no diagnosis."""
    assert run([nf(1, -1), nf(2, -1), graphql_down(3)]) == []


def test_latest_ok_raises_nothing() -> None:
    """Earlier 404s followed by a 200 raise nothing."""
    assert run([nf(1, -1), nf(2, -1), ok(3)]) == []


def test_top_up_with_404_continuing_raises_endpoint_disabled() -> None:
    """After a top-up, 404s that continue raise endpoint_disabled with both mutations."""
    obs = [ok(1), nf(2, -0.12), nf(3, -0.12), nf(4, 50.0), nf(5, 50.0)]
    found = run(obs)
    assert codes(found) == ["endpoint_disabled"]
    d = found[0]
    assert d.severity == "critical"
    assert d.evidence["balance_usd"] == 50.0
    assert d.evidence["answered_200_before"] is True
    assert d.evidence["balance_seen_nonpositive"] is True
    assert f'deleteEndpoint(id: "{EID}")' in posted(d.remedy)
    assert "saveEndpoint(input: { name:" in d.remedy
    assert "update it everywhere" in d.remedy


def test_endpoint_disabled_from_memory_of_nonpositive_balance() -> None:
    """Never answered 200, but the balance was seen <= 0 before the window: disabled."""
    memory = Memory(balance_seen_nonpositive=True)
    found = run([nf(1, 20.0), nf(2, 20.0)], memory=memory)
    assert codes(found) == ["endpoint_disabled"]
    assert found[0].evidence["answered_200_before"] is False


def test_endpoint_disabled_from_memory_of_a_200() -> None:
    """Balance always positive, but the endpoint answered 200 before the window: disabled."""
    found = run([nf(1, 20.0), nf(2, 20.0)], memory=Memory(ever_ok=frozenset({EID})))
    assert codes(found) == ["endpoint_disabled"]


def test_never_answered_and_balance_never_nonpositive_is_never_started() -> None:
    """404s on an endpoint never seen answering, balance always > 0: never_started."""
    found = run([nf(1, 20.0), nf(2, 20.0), nf(3, 20.0)])
    assert codes(found) == ["never_started"]
    d = found[0]
    assert d.severity == "warning"
    assert d.evidence["not_found_cycles"] == 3
    assert "example/whisper:3" in d.remedy
    assert "dockerArgs" in d.remedy
    assert "gpuTypes" in d.remedy
    assert "logs" in d.remedy


def test_not_listed_is_endpoint_not_found() -> None:
    """404s and a successful GraphQL answer that does not list the endpoint: not found."""
    found = run([nf(1, listed=False), nf(2, listed=False)])
    assert codes(found) == ["endpoint_not_found"]
    assert found[0].severity == "critical"
    assert found[0].evidence["listed"] is False


def test_not_listed_wins_over_balance() -> None:
    """An unlisted endpoint is endpoint_not_found even with the balance <= 0."""
    assert codes(run([nf(1, -1, listed=False), nf(2, -1, listed=False)])) == [
        "endpoint_not_found"
    ]


def test_only_endpoints_in_the_latest_observation_are_judged() -> None:
    """An endpoint no longer watched (absent from the latest cycle) gets no diagnosis."""
    gone = sample(None, endpoint_id="old", outcome="http_404", listed=False)
    obs = [
        observation(1, [gone, sample(Health(idle=1), config=CONFIG)], account=account()),
        observation(2, [gone, sample(Health(idle=1), config=CONFIG)], account=account()),
        observation(3, [sample(Health(idle=1), config=CONFIG)], account=account()),
    ]
    assert run(obs) == []


def test_balance_exhausted_scenario_sequence() -> None:
    """The balance-exhausted scenario, cycle by cycle: exhausted, disabled, then nothing."""
    obs: list[Observation] = []
    seen: dict[int, list[str]] = {}
    memory = Memory()
    busy = Health(completed=310, failed=1, in_progress=1, running=1)
    for cycle in range(1, 22):
        if cycle <= 3:
            o = ok(cycle, 0.40, busy)
        elif cycle <= 9:
            o = nf(cycle, -0.12)
        elif cycle <= 15:
            o = nf(cycle, 50.0)
        else:  # recreated under a new id; the old one is no longer watched
            fresh = config("ep7newfresh2")
            o = observation(
                cycle, [sample(Health(idle=1, ready=1), endpoint_id="ep7newfresh2",
                               config=fresh)],
                account=account(50.0),
            )
        obs.append(o)
        memory = memory.updated(o)
        window = obs[-60:]
        seen[cycle] = codes(endpoint_state.diagnose(History(tuple(window), memory), TH))
    assert seen[1] == seen[3] == []
    assert seen[4] == []  # one 404 only
    assert all(seen[c] == ["balance_exhausted"] for c in range(5, 10))
    assert all(seen[c] == ["endpoint_disabled"] for c in range(10, 16))
    assert all(seen[c] == [] for c in range(16, 22))


# --- workers_max_zero --------------------------------------------------------------------


def zero_history(health: Health | None, **cfg: object) -> History:
    c = config(workers_max=0, **cfg)  # type: ignore[arg-type]
    return build([observation(1, [sample(health, config=c)], account=account())])


def test_workers_max_zero_with_queued_jobs_is_critical() -> None:
    """workersMax 0 with jobs in the queue is critical, with a saveEndpoint raising it to 1."""
    found = endpoint_state.diagnose(zero_history(Health(in_queue=3)), TH)
    assert codes(found) == ["workers_max_zero"]
    d = found[0]
    assert d.severity == "critical"
    assert d.evidence["in_queue"] == 3
    assert d.evidence["suggested_workers_max"] == 1
    assert "saveEndpoint" in d.remedy
    assert "workersMax: 1" in d.remedy
    assert "3 jobs" in d.summary


def test_workers_max_zero_without_queue_is_warning() -> None:
    """workersMax 0 and an empty queue is a warning."""
    found = endpoint_state.diagnose(zero_history(Health()), TH)
    assert [(d.code, d.severity) for d in found] == [("workers_max_zero", "warning")]


def test_workers_max_zero_severity_uses_last_known_health() -> None:
    """With the latest /health unknown, the last known queue decides the severity."""
    c = config(workers_max=0)
    obs = [
        observation(1, [sample(Health(in_queue=2), config=c)], account=account()),
        observation(2, [sample(None, config=c)], account=account()),
    ]
    found = endpoint_state.diagnose(build(obs), TH)
    assert [(d.code, d.severity) for d in found] == [("workers_max_zero", "critical")]


def test_workers_max_one_raises_nothing() -> None:
    """workersMax 1 is the boundary just above: nothing."""
    h = build([observation(1, [sample(Health(in_queue=3), config=config(workers_max=1))],
                           account=account())])
    assert endpoint_state.diagnose(h, TH) == []


def test_workers_max_zero_target_respects_workers_min_and_earlier_max() -> None:
    """The suggested workersMax is at least workersMin and the workersMax seen earlier."""
    found = endpoint_state.diagnose(zero_history(Health(), workers_min=2), TH)
    assert "workersMax: 2" in found[0].remedy
    obs = [
        observation(1, [sample(Health(), config=config(workers_max=3))], account=account()),
        observation(2, [sample(Health(), config=config(workers_max=0))], account=account()),
    ]
    found = endpoint_state.diagnose(build(obs), TH)
    assert found[0].evidence["suggested_workers_max"] == 3


def test_workers_max_zero_needs_latest_graphql() -> None:
    """When the latest GraphQL answer failed, workers_max_zero says nothing (tracker holds)."""
    c = config(workers_max=0)
    obs = [
        observation(1, [sample(Health(in_queue=1), config=c)], account=account()),
        observation(2, [sample(Health(in_queue=1))], control_outcome="http_5xx"),
    ]
    assert endpoint_state.diagnose(build(obs), TH) == []


@pytest.mark.parametrize("balance", [-1.0, 50.0])
def test_workers_max_zero_and_404_are_independent(balance: float) -> None:
    """A 404 endpoint with workersMax 0 gets both the 404 reading and workers_max_zero."""
    c = config(workers_max=0)
    obs = [observation(i, [sample(None, outcome="http_404", config=c)],
                       account=account(balance)) for i in (1, 2)]
    found = codes(endpoint_state.diagnose(build(obs), TH))
    assert "workers_max_zero" in found
    assert len(found) == 2
