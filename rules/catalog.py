"""The diagnosis catalog of spec/diagnoses.md: every code's record, collected from the
families' `RULES` (rules/rule.py says what a record holds)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rules import capacity
from rules.diagnosis import Scope, Severity
from rules.rule import Rule, Source


@dataclass(frozen=True, slots=True)
class CodeInfo:
    code: str
    scope: Scope
    severity: Severity  # the default; some rules raise it or lower it
    source: Source
    family: str


_ROWS: tuple[CodeInfo, ...] = (
    CodeInfo("crash_loop", "endpoint", "critical", "health", "lifecycle"),
    CodeInfo("workers_unhealthy", "endpoint", "critical", "health", "lifecycle"),
    CodeInfo("idle_workers_queued", "endpoint", "warning", "health", "lifecycle"),
    CodeInfo("job_failures", "endpoint", "warning", "health", "jobs"),
    CodeInfo("workers_max_zero", "endpoint", "critical", "graphql", "endpoint_state"),
    CodeInfo("balance_exhausted", "endpoint", "critical", "rest+graphql", "endpoint_state"),
    CodeInfo("endpoint_disabled", "endpoint", "critical", "rest+graphql", "endpoint_state"),
    CodeInfo("never_started", "endpoint", "warning", "rest+graphql", "endpoint_state"),
    CodeInfo("endpoint_not_found", "endpoint", "critical", "rest+graphql", "endpoint_state"),
    CodeInfo("auth_invalid", "account", "critical", "self", "account"),
    CodeInfo("runpod_api_errors", "account", "warning", "self", "account"),
    CodeInfo("low_balance", "account", "warning", "account", "account"),
    CodeInfo("idle_spend", "account", "info", "account", "account"),
    CodeInfo("secret_in_template", "endpoint", "critical", "graphql", "audit"),
    CodeInfo("volume_path_mismatch", "endpoint", "warning", "graphql", "audit"),
    CodeInfo("clone_failure_masked", "endpoint", "warning", "graphql", "audit"),
    CodeInfo("single_gpu_tier", "endpoint", "info", "graphql", "audit"),
    CodeInfo("container_disk_small", "endpoint", "warning", "graphql", "audit"),
)

ALL_RULES: tuple[Rule[Any] | CodeInfo, ...] = (*capacity.RULES, *_ROWS)
CATALOG: Mapping[str, Rule[Any] | CodeInfo] = {row.code: row for row in ALL_RULES}
CODES: tuple[str, ...] = tuple(CATALOG)
