"""The shared run helpers and the lazy known-health view they read: the newest-sample
shortcuts give what the full walk gives."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st
from rulekit import EID, Health, endpoint_history

from rules.signals import queue_stalled, stalled_run, trailing_run

healths = st.lists(
    st.one_of(st.none(), st.builds(
        Health, in_queue=st.integers(0, 2), in_progress=st.integers(0, 1),
        completed=st.integers(0, 2), throttled=st.integers(0, 1),
    )),
    min_size=1, max_size=12,
)


def walked_run(
    samples: list[tuple[float, Health]], holds: Callable[[Health], bool]
) -> list[tuple[float, Health]]:
    run = []
    for t, h in reversed(samples):
        if not holds(h):
            break
        run.append((t, h))
    return run[::-1]


def walked_stall(samples: list[tuple[float, Health]]) -> list[tuple[float, Health]]:
    run = []
    for i in range(len(samples) - 1, -1, -1):
        prev = samples[i - 1][1] if i > 0 else None
        if not queue_stalled(prev, samples[i][1]):
            break
        run.append(samples[i])
    return run[::-1]


@given(healths)
def test_known_health_and_runs_agree_with_the_plain_list(hs: list[Health | None]) -> None:
    """With the latest sample known or unknown: `[-1]`, truth, the runs and the stalled run
    of the lazy view equal those of the plain list of known samples."""
    history = endpoint_history(hs)
    series = history.known_health(EID)
    plain = [(o.t, s.health) for o in history.observations
             if (s := o.endpoints.get(EID)) is not None and s.health is not None]
    assert bool(series) == bool(plain)
    if plain:
        assert series[-1] == plain[-1]
    assert history.known_health(EID) is series  # one view per snapshot
    for holds in (lambda h: h.throttled > 0, lambda h: h.in_queue > 0 and h.in_progress == 0):
        assert trailing_run(series, holds) == walked_run(plain, holds)
    assert stalled_run(series) == walked_stall(plain)
    assert list(series) == plain
