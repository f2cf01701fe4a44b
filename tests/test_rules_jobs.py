"""The jobs family: job_failures, with the error texts of failed jobs as evidence."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rulekit import (
    EID,
    TH,
    Health,
    Job,
    build,
    endpoint_history,
    healthy_traffic,
    job,
    prefixes,
)

from model.history import History
from monitor.state.codec import memory_from_json, memory_to_json
from rules import jobs
from rules.diagnosis import Diagnosis
from rules.jobs import counter_rise, error_text
from rules.thresholds import Thresholds


def codes(history: History, th: Thresholds = TH) -> list[str]:
    return [d.code for d in jobs.diagnose(history, th)]


def only(history: History, th: Thresholds = TH) -> Diagnosis:
    found = jobs.diagnose(history, th)
    assert [d.code for d in found] == ["job_failures"]
    return found[0]


def counts(*pairs: tuple[int, int]) -> list[Health | None]:
    """One sample per (completed, failed) pair."""
    return [Health(completed=c, failed=f) for c, f in pairs]


def rpjson(kind: str, message: str) -> str:
    """The `error` string the runpod SDK sends when a handler raises."""
    return json.dumps(
        {
            "error_type": f"<class '{kind}'>",
            "error_message": message,
            "error_traceback": "Traceback (most recent call last): ...",
            "hostname": "w-1",
            "worker_id": "w-1",
            "runpod_version": "1.7.9",
        }
    )


def with_failed(hs: Sequence[Health | None], failed: Sequence[Job]) -> History:
    """The samples, with `failed` jobs listed by /requests in the latest one."""
    listing: list[Sequence[Job] | None] = [None] * (len(hs) - 1) + [list(failed)]
    return endpoint_history(hs, jobs=listing)


def test_failed_rise_one_below_the_minimum_raises_nothing() -> None:
    """Two failures (under job_failures_min 3) with no completions raise nothing."""
    assert codes(endpoint_history(counts((10, 0), (10, 1), (10, 2)))) == []


def test_failed_rise_at_the_minimum_raises_a_warning() -> None:
    """Three failures and no completions raise job_failures, a warning, with the numbers."""
    d = only(endpoint_history(counts((10, 0), (10, 1), (10, 2), (10, 3))))
    assert d.severity == "warning"
    assert d.scope == "endpoint"
    assert d.endpoint_id == EID
    assert d.summary == (
        "mocha-video failed 3 of the 3 jobs it finished in the last 90 s (100%, threshold "
        "50%): the handler is raising."
    )
    assert d.evidence["failed_rise"] == 3
    assert d.evidence["completed_rise"] == 0
    assert d.evidence["failure_share"] == 1.0


def test_share_one_below_and_at_the_ratio() -> None:
    """3 failed of 7 finished (43%) raise nothing; 3 failed of 6 (50%) raise."""
    assert codes(endpoint_history(counts((10, 0), (14, 3)))) == []
    assert codes(endpoint_history(counts((10, 0), (13, 3)))) == ["job_failures"]


def test_thresholds_are_read_from_th() -> None:
    """job_failures_min and job_failures_ratio come from the thresholds."""
    th = Thresholds.model_validate({"job_failures_min": 5, "job_failures_ratio": 0.9})
    assert codes(endpoint_history(counts((0, 0), (0, 4))), th) == []
    assert codes(endpoint_history(counts((0, 0), (1, 5))), th) == []  # 83%
    assert codes(endpoint_history(counts((0, 0), (0, 5))), th) == ["job_failures"]


def test_failures_older_than_the_window_do_not_count() -> None:
    """A rise between t=570 and 600 s counts at t=1170 s (window from 570 s), not at 1200 s."""
    rise = [(10, 0)] * 20 + [(10, 3)] * 20  # 40 samples, latest t=1170
    assert codes(endpoint_history(counts(*rise))) == ["job_failures"]
    assert codes(endpoint_history(counts(*rise, (10, 3)))) == []  # latest t=1200


def test_unknown_samples_inside_the_window_neither_count_nor_break() -> None:
    """A rise across unknown samples counts; an unknown latest sample returns nothing."""
    hs: list[Health | None] = [Health(completed=10), None, None, Health(completed=10, failed=3)]
    assert codes(endpoint_history(hs)) == ["job_failures"]
    assert codes(endpoint_history([*hs, None])) == []


def test_counter_drops_are_not_rises() -> None:
    """A counter that falls (reset) adds nothing; only the rises count."""
    assert (
        counter_rise(
            [(0, Health(failed=5)), (30, Health(failed=0)), (60, Health(failed=2))], "failed"
        )
        == 2
    )
    assert codes(endpoint_history(counts((10, 5), (10, 0), (10, 2)))) == []


def test_occasional_failures_beside_completions_never_raise() -> None:
    """One failure every other cycle among steady completions never raises."""
    hs = counts(*[(10 + 3 * i, i // 2) for i in range(40)])
    for h in prefixes(endpoint_history(hs)):
        assert codes(h) == []


def test_evidence_quotes_the_worker_json_error_as_type_and_message() -> None:
    """A runpod SDK error JSON is quoted as 'ErrorType: message', also in the remedy."""
    err = rpjson("ValueError", "input.image_url is required")
    d = only(with_failed(counts((0, 0), (0, 3)), [job("j-9", "FAILED", error=err)]))
    assert d.evidence["error_1"] == "ValueError: input.image_url is required"
    assert d.evidence["error_1_job"] == "j-9"
    assert "- j-9: ValueError: input.image_url is required" in d.remedy
    assert "https://api.runpod.ai/v2/ep1/status/j-9" in d.remedy


def test_evidence_quotes_at_most_three_distinct_recent_errors() -> None:
    """Up to three errors, newest first, duplicates and non-FAILED jobs skipped."""
    failed = [
        job("j1", "FAILED", error="boom one"),
        job("j2", "FAILED", error="boom one"),
        job("j3", "COMPLETED", error="not an error"),
        job("j4", "FAILED", error=rpjson("RuntimeError", "CUDA out of memory")),
        job("j5", "FAILED", error="boom three"),
        job("j6", "FAILED", error="boom four"),
    ]
    d = only(with_failed(counts((0, 0), (0, 6)), failed))
    quoted = [d.evidence.get(f"error_{i}") for i in range(1, 5)]
    assert quoted == ["boom one", "RuntimeError: CUDA out of memory", "boom three", None]


def test_errors_are_truncated_to_about_200_characters() -> None:
    """A long error text is cut to 200 characters, ending with an ellipsis."""
    d = only(with_failed(counts((0, 0), (0, 3)), [job("j1", "FAILED", error="x" * 5000)]))
    assert len(d.evidence["error_1"]) == 200
    assert d.evidence["error_1"].endswith("…")


def test_errors_outside_the_window_are_not_quoted() -> None:
    """A failed job seen more than 10 min ago is not quoted."""
    old = [job("j-old", "FAILED", error="old failure")]
    hs = counts(*([(0, 0)] * 30 + [(0, 3)]))
    listing: list[Sequence[Job] | None] = [old] + [None] * 30
    d = only(endpoint_history(hs, jobs=listing))
    assert "error_1" not in d.evidence
    assert "No error text was seen" in d.remedy


def test_error_text_forms() -> None:
    """error_text reads the SDK JSON, plain strings, JSON without a message, and whitespace."""
    assert error_text(rpjson("KeyError", "'prompt'")) == "KeyError: 'prompt'"
    assert error_text('{"error_message": "bad"}') == "bad"
    assert error_text('{"detail": "x"}') == '{"detail": "x"}'
    assert error_text("  line one\n  line two ") == "line one line two"
    assert error_text("executionTimeout exceeded") == "executionTimeout exceeded"


def test_healthy_busy_endpoint_raises_nothing() -> None:
    """scenarios/healthy-traffic: completions and an old failure count raise nothing, ever."""
    for h in prefixes(healthy_traffic()):
        assert jobs.diagnose(h, TH) == []


def test_empty_history_returns_nothing() -> None:
    """No observation at all: nothing; a single sample has no rise: nothing."""
    assert jobs.diagnose(History(()), TH) == []
    assert codes(endpoint_history(counts((0, 9)))) == []


@given(st.lists(st.one_of(st.none(), st.tuples(st.integers(0, 40), st.integers(0, 40))),
                min_size=1, max_size=40))
def test_failed_rise_walk_agrees_with_the_window(pairs: list[tuple[int, int] | None]) -> None:
    """The cheap exit's walk-back rise equals counter_rise over the built window, any history."""
    history = endpoint_history(
        [None if p is None else Health(completed=p[0], failed=p[1]) for p in pairs]
    )
    now = history.observations[-1].t
    for since in (now - TH.job_failures_window_s, now - 90.0, 0.0):
        window = jobs._known_since(history, EID, since)
        assert jobs._failed_rise_since(history, EID, since) == counter_rise(window, "failed")


@given(st.lists(st.one_of(st.none(), st.tuples(st.integers(0, 40), st.integers(0, 9))),
                min_size=1, max_size=40), st.integers(0, 40))
def test_the_memory_of_failed_rises_agrees_with_the_walk(
    pairs: list[tuple[int, int] | None], restored_at: int
) -> None:
    """The memory's shortcut gives the walk's rise, with counter resets and unknown samples,
    with no memory, and with one restored from the store after `restored_at` cycles (the
    store does not keep those facts: it learns only from the observations after it)."""
    history = endpoint_history(
        [None if p is None else Health(completed=p[0], failed=p[1]) for p in pairs]
    )
    obs = history.observations
    memory = memory_from_json(memory_to_json(build(obs[:restored_at]).memory))
    for o in obs[restored_at:]:
        memory = memory.updated(o)
    now = obs[-1].t
    for h in (history, History(obs, memory), History(obs)):
        for since in (now - TH.job_failures_window_s, now - 90.0, now, 0.0):
            window = jobs._known_since(h, EID, since)
            assert jobs._failed_rise_since(h, EID, since) == counter_rise(window, "failed")


def test_the_memory_knows_when_failed_last_rose() -> None:
    """A rise, then a counter reset (failed going down) and steady counts: quiet since just
    after the rise, not before it; the store does not keep the facts (a restored memory
    knows no endpoint's rise, and the rule walks)."""
    history = endpoint_history(counts((0, 0), (0, 4), (0, 1), (0, 1), (0, 1)))  # t 0..120
    memory = history.memory
    assert (memory.failed_last, memory.failed_rose_t) == ({EID: 1}, {EID: 30.0})
    assert memory.failed_quiet_since(EID, 31.0)
    assert not memory.failed_quiet_since(EID, 30.0)
    assert not memory.failed_quiet_since("ep-never-seen", 31.0)
    restored = memory_from_json(json.loads(json.dumps(memory_to_json(memory))))
    assert (restored.failed_last, restored.failed_rose_t) == ({}, {})
    assert not restored.failed_quiet_since(EID, 31.0)


# --- what a failure surge has cost so far (issue 15 part 6) ----------------------------


def test_surge_cost_counts_from_the_first_failure_of_the_surge() -> None:
    """A failure every 4 min for 29 min, then a burst, one worker running throughout: the
    10 min window decides, but the surge began 29 min ago and that is what it has cost
    (AMPERE_48 at list price: 1.22 USD/h x 29 min = 0.59 USD)."""
    hs: list[Health | None] = [Health(completed=100, failed=0, running=1)] * 3
    failed = 0
    for k in range(1, 66):  # 65 more cycles of 30 s; a failure every 8th cycle
        if k % 8 == 0:
            failed += 1
        hs.append(Health(completed=100, failed=failed + 3 * (k >= 60), running=1))
    history = endpoint_history(hs)
    d = only(history)
    began = jobs.surge_start(history, EID, TH.job_failures_window_s, history.observations[-1].t)
    assert began == 9 * 30.0  # the sample before the first rise (cycle 10 -> 11)
    assert d.evidence["surge_since_s"] == 67 * 30 - began == 1740
    assert d.evidence["cost_so_far_usd"] == pytest.approx(0.00034 * 1740, abs=1e-4)
    assert "It has cost about 0.59 USD of GPU time since it began" in d.summary


def test_surge_start_stops_at_a_quiet_gap() -> None:
    """Two failures an hour ago, then quiet, then the surge: it began with the surge."""
    hs = counts((0, 0), (0, 1), (0, 2)) + counts(*[(0, 2)] * 30) + counts(
        (0, 3), (0, 4), (0, 5))
    history = endpoint_history(hs)
    began = jobs.surge_start(history, EID, TH.job_failures_window_s, history.observations[-1].t)
    assert began == 32 * 30.0


def test_surge_cost_from_v2_billing() -> None:
    from dataclasses import replace

    h = endpoint_history(counts((10, 0), (10, 1), (10, 2), (10, 3)))
    *older, last = h.observations
    h = History((*older, replace(last, endpoint_spend={EID: 3.6})), h.memory)
    d = only(h)
    assert d.evidence["cost_so_far_usd"] == pytest.approx(3.6 * 90 / 3600)  # 0.09
    assert d.evidence["cost_basis"] == "v2 billing's 3.60 USD/h over 90 s (an estimate)"
    assert "about 0.09 USD of GPU time" in d.summary
