"""Runs every rule family over a history: the one entry point the pipeline calls."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from model.history import History
from rules import account, audit, capacity, endpoint_state, jobs, lifecycle
from rules.diagnosis import Diagnosis
from rules.thresholds import Thresholds

Family = Callable[[History, Thresholds], list[Diagnosis]]

FAMILIES: Sequence[Family] = (
    capacity.diagnose,
    lifecycle.diagnose,
    jobs.diagnose,
    endpoint_state.diagnose,
    account.diagnose,
    audit.diagnose,
)


def evaluate(history: History, thresholds: Thresholds) -> list[Diagnosis]:
    """Every diagnosis the history supports now, in family order."""
    found: list[Diagnosis] = []
    for family in FAMILIES:
        found.extend(family(history, thresholds))
    return found
