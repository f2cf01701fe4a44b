"""Small pure helpers the rule families share: runs of samples, stalled queues."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from model.observation import Health

T = TypeVar("T")


def trailing_run(
    samples: Sequence[tuple[float, T]], holds: Callable[[T], bool]
) -> list[tuple[float, T]]:
    """The newest unbroken run of samples for which `holds` is true, oldest first.

    Pass only known samples: unknown ones neither count toward a run nor break it.
    """
    newest = _newest(samples)
    if newest is None or not holds(newest):
        return []  # most endpoints, most cycles: decided by the newest sample alone
    run: list[tuple[float, T]] = []
    for t, value in reversed(samples):
        if not holds(value):
            break
        run.append((t, value))
    run.reverse()
    return run


def _newest(samples: Sequence[tuple[float, T]]) -> T | None:
    # `[-1]`, not reversed(): the known-health view answers it without a walk
    try:
        return samples[-1][1]
    except IndexError:
        return None


def run_seconds(run: Sequence[tuple[float, object]]) -> float:
    """Seconds between the first and the last sample of a run (0 for one sample)."""
    return run[-1][0] - run[0][0] if len(run) > 1 else 0.0


def queue_stalled(prev: Health | None, cur: Health) -> bool:
    """Jobs queued, none in progress, and completed / failed unchanged since `prev`."""
    if cur.in_queue <= 0 or cur.in_progress != 0:
        return False
    if prev is None:
        return True
    return cur.completed == prev.completed and cur.failed == prev.failed


def stalled_run(samples: Sequence[tuple[float, Health]]) -> list[tuple[float, Health]]:
    """The newest unbroken run of known samples in which the queue was stalled.

    Walks back from the newest sample (reversed()), one sample past the run at most.
    """
    newest = _newest(samples)
    if newest is None or not queue_stalled(None, newest):
        return []  # nothing waits now, whatever came before: most endpoints
    run: list[tuple[float, Health]] = []
    older = reversed(samples)
    current = next(older, None)
    while current is not None:
        prev = next(older, None)
        if not queue_stalled(prev[1] if prev is not None else None, current[1]):
            break
        run.append(current)
        current = prev
    run.reverse()
    return run


def plural(n: float, word: str) -> str:
    """'1 cycle', '3 cycles'."""
    return f"{n:g} {word}" if n == 1 else f"{n:g} {word}s"


def minutes(seconds: float) -> str:
    """Seconds as a short human duration: '45 s', '5 min', '2.5 h'."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
