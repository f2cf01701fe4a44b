"""Scenario files: validation messages name the field; the script replays into states."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from monitor.simulator import Scenario, ScenarioError, load_scenario
from monitor.simulator.cli import simulate_main
from monitor.simulator.world import Moment, World


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


BROKEN = [
    pytest.param(
        """
        description: no name here
        steps: [{cycles: 1}]
        """,
        "name: required",
        id="missing-name",
    ),
    pytest.param(
        """
        name: zero
        steps: [{cycles: 2}, {cycles: 1}, {cycles: 0}]
        """,
        "steps[2].cycles: must be >= 1 (got 0)",
        id="cycles-0",
    ),
    pytest.param(
        """
        name: bad-fault
        endpoints: [{id: ep1}]
        steps:
          - cycles: 1
            endpoints: {ep1: {rest: explode}}
        """,
        "steps[0].endpoints.ep1.rest: must be one of ok, 401, 403, 404, 429, 500, 502, 503,"
        " timeout, reset, malformed (got 'explode')",
        id="unknown-rest-fault",
    ),
    pytest.param(
        """
        name: bad-gql-fault
        steps: [{cycles: 1, graphql: 404}]
        """,
        "steps[0].graphql: must be one of ok, 401, 403, 429, 500, 502, 503, timeout, reset,"
        " malformed or {errors: message}, or retired / {retired: 404|410|200, message}"
        " (got 404)",
        id="unknown-graphql-fault",
    ),
    pytest.param(
        """
        name: wrong-type
        steps: [{cycles: three}]
        """,
        "steps[0].cycles: must be an integer (got 'three')",
        id="cycles-not-int",
    ),
    pytest.param(
        """
        name: wrong-type
        endpoints:
          - {id: ep1, health: {workers: {running: many}}}
        """,
        "endpoints[0].health.workers.running: must be an integer (got 'many')",
        id="health-not-int",
    ),
    pytest.param(
        """
        name: wrong-type
        account: {clientBalance: lots}
        """,
        "account.clientBalance: must be a number (got 'lots')",
        id="balance-not-number",
    ),
    pytest.param(
        """
        name: typo
        stepz: []
        """,
        "stepz: unknown field",
        id="unknown-top-level-key",
    ),
    pytest.param(
        """
        name: dangling
        endpoints: [{id: ep1}]
        steps: [{cycles: 1, endpoints: {ep2: {rest: 404}}}]
        """,
        "steps[0].endpoints.ep2: unknown endpoint id (not in endpoints or an add_endpoints so far)",
        id="unknown-endpoint-ref",
    ),
    pytest.param(
        """
        name: bad-status
        endpoints: [{id: ep1, jobs: [{id: j1, status: RUNNING}]}]
        """,
        "endpoints[0].jobs[0].status: must be one of 'IN_QUEUE', 'IN_PROGRESS', 'COMPLETED',"
        " 'FAILED', 'CANCELLED' or 'TIMED_OUT' (got 'RUNNING')",
        id="bad-job-status",
    ),
    pytest.param(
        """
        name: int-id
        endpoints: [{id: 12345}]
        """,
        "endpoints[0].id: must be a string (got 12345)",
        id="endpoint-id-int",
    ),
]


@pytest.mark.parametrize(("text", "message"), BROKEN)
def test_broken_scenarios_name_the_field(tmp_path: Path, text: str, message: str) -> None:
    """Each broken file is refused with a message naming the field, word for word."""
    with pytest.raises(ScenarioError) as exc:
        load_scenario(_write(tmp_path, text))
    assert str(exc.value) == message


def test_unreadable_and_bad_yaml(tmp_path: Path) -> None:
    """A missing file and a file that is not YAML both raise ScenarioError naming the file."""
    with pytest.raises(ScenarioError, match=r"cannot read scenario file .*nope\.yaml"):
        load_scenario(tmp_path / "nope.yaml")
    path = _write(tmp_path, "name: [unclosed\n")
    with pytest.raises(ScenarioError, match=r"scenario\.yaml: not valid YAML"):
        load_scenario(path)
    with pytest.raises(ScenarioError, match="must be a mapping"):
        Scenario.from_dict(["not", "a", "mapping"])


def test_shared_scenarios_load(sim_scenarios_dir: Path) -> None:
    """The three example scenarios load, with their step cycles summed."""
    totals = {}
    for path in sorted(sim_scenarios_dir.glob("*.yaml")):
        sc = load_scenario(path)
        totals[sc.name] = sc.total_cycles
        assert sc.interval_s == 30
        assert sc.expect, "the examples carry expectations"
    assert totals["balance-exhausted"] == 21
    assert totals["healthy-traffic"] == 18
    assert totals["throttled-capacity"] == 21


def test_defaults_and_raw_sections() -> None:
    """Defaults: interval 30 s, at least one cycle; `monitor` and `expect` stay raw."""
    sc = Scenario.from_dict(
        {
            "name": "tiny",
            "monitor": {"endpoints": ["abc"], "rules": {"x": 1}},
            "expect": [{"never": [{"code": "crash_loop"}]}],
        }
    )
    assert (sc.interval_s, sc.total_cycles) == (30.0, 1)
    assert sc.monitor == {"endpoints": ["abc"], "rules": {"x": 1}}
    assert sc.expect == [{"never": [{"code": "crash_loop"}]}]


def test_fault_forms() -> None:
    """Faults accept ints, strings, {code, retry_after} and GraphQL {errors: message}."""
    sc = Scenario.from_dict(
        {
            "name": "faults",
            "endpoints": [{"id": "ep1"}],
            "steps": [
                {"cycles": 1, "graphql": {"errors": "boom"}, "endpoints": {"ep1": {"rest": 404}}},
                {"cycles": 1, "graphql": "timeout", "endpoints": {"ep1": {"rest": "429"}}},
                {"cycles": 1, "endpoints": {"ep1": {"rest": {"code": 429, "retry_after": 7}}}},
            ],
        }
    )
    world = World(sc)
    got = [
        (
            st.graphql.kind,
            st.graphql.message,
            st.endpoints["ep1"].rest.kind,
            st.endpoints["ep1"].rest.retry_after,
        )
        for st in world.states
    ]
    assert got == [
        ("errors", "boom", "404", 2),
        ("timeout", "", "429", 2),
        ("timeout", "", "429", 7),
    ]


def test_merge_semantics_in_states(sim_scenarios_dir: Path) -> None:
    """health and account merge, jobs replace, the last step holds past the end."""
    world = World(load_scenario(sim_scenarios_dir / "healthy-traffic.yaml"))
    at = {k: world.state(Moment(k, (k - 1) * 30.0)) for k in (1, 4, 6, 10, 99)}
    h4 = at[4].endpoints["ep7healthy01"].health
    assert h4["jobs"] == {
        "completed": 1200,
        "failed": 3,
        "inProgress": 0,
        "inQueue": 6,
        "retried": 0,
    }
    assert h4["workers"]["initializing"] == 1
    h6 = at[6].endpoints["ep7healthy01"].health
    assert (h6["jobs"]["completed"], h6["jobs"]["failed"], h6["workers"]["running"]) == (1204, 3, 2)
    assert [j.id for j in at[6].endpoints["ep7healthy01"].jobs] == ["j-101", "j-103"]
    assert at[4].account["clientBalance"] == 250.0
    assert at[4].account["currentSpendPerHr"] == 1.95
    assert at[99].endpoints["ep7healthy01"].jobs == []
    assert at[99].account["currentSpendPerHr"] == 0.047


def test_simulate_main_refuses_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`simulate` exits 2 with `error: <message>` for a bad file, and without any API key."""
    bad = _write(tmp_path, "name: zero\nsteps: [{cycles: 0}]\n")
    assert simulate_main(str(bad), 0, None, "k") == 2
    assert capsys.readouterr().err == "error: steps[0].cycles: must be >= 1 (got 0)\n"
    good = _write(tmp_path, "name: ok\n")
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    assert simulate_main(str(good), 0, None, None) == 2
    assert "RUNPOD_API_KEY" in capsys.readouterr().err
    assert simulate_main(str(good), 0, 0.0, "k") == 2
    assert capsys.readouterr().err == "error: interval_s: must be > 0 (got 0.0)\n"
