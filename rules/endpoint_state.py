"""Placeholder until the family lands."""

from __future__ import annotations

from rules.model import Diagnosis, History, Thresholds


def diagnose(history: History, th: Thresholds) -> list[Diagnosis]:
    """No diagnoses yet."""
    return []
