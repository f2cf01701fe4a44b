"""What the rules produce: a named problem with its evidence and remedy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["critical", "warning", "info"]
Scope = Literal["endpoint", "account"]

SEVERITY_ORDER: Mapping[str, int] = {"info": 0, "warning": 1, "critical": 2}

@dataclass(frozen=True, slots=True)
class Diagnosis:
    """A named problem with the numbers that raised it and what to do about it."""

    code: str
    scope: Scope
    severity: Severity
    summary: str
    remedy: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    endpoint_id: str | None = None
    endpoint_name: str | None = None

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.code, self.endpoint_id)


def evidence(**numbers: Any) -> dict[str, Any]:
    """An evidence mapping without the values that are None."""
    return {k: v for k, v in numbers.items() if v is not None}
