"""Runs every rule family over a history: the one entry point the pipeline calls."""

from __future__ import annotations

from model.history import History
from rules.catalog import FAMILIES
from rules.diagnosis import Diagnosis
from rules.thresholds import Thresholds


def evaluate(history: History, thresholds: Thresholds) -> list[Diagnosis]:
    """Every diagnosis the history supports now, in family order."""
    found: list[Diagnosis] = []
    for family in FAMILIES:
        found.extend(family.diagnose(history, thresholds))
    return found
