"""Runs every rule family over a history: the one entry point the pipeline calls."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from model.history import History
from rules import releases
from rules.catalog import FAMILIES
from rules.diagnosis import Diagnosis
from rules.log_evidence import attach_logs
from rules.thresholds import Thresholds

# Passes over every family's diagnoses, in order: each may annotate them (never add or
# drop one) with what one family cannot see alone: the release a problem began after, the
# worker logs that explain crash_loop, workers_unhealthy, ...
PostPass = Callable[[History, Thresholds, Sequence[Diagnosis]], list[Diagnosis]]
POST_PASSES: tuple[PostPass, ...] = (releases.correlate, attach_logs)


def evaluate(history: History, thresholds: Thresholds) -> list[Diagnosis]:
    """Every diagnosis the history supports now, in family order."""
    found: list[Diagnosis] = []
    for family in FAMILIES:
        found.extend(family.diagnose(history, thresholds))
    for post in POST_PASSES:
        found = post(history, thresholds, found)
    return found
