"""The diagnosis catalog of spec/diagnoses.md: every code's record, collected from the
families' `RULES` in engine order (rules/rule.py says what a record holds)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rules import account, audit, capacity, endpoint_state, jobs, lifecycle
from rules.rule import Rule

ALL_RULES: tuple[Rule[Any], ...] = (
    *capacity.RULES,
    *lifecycle.RULES,
    *jobs.RULES,
    *endpoint_state.RULES,
    *account.RULES,
    *audit.RULES,
)

CATALOG: Mapping[str, Rule[Any]] = {rule.code: rule for rule in ALL_RULES}
CODES: tuple[str, ...] = tuple(CATALOG)
