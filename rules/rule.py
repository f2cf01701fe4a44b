"""One record per diagnosis: what it is, what it reads, how it is checked, what it mutes.

Each family module ends with its `RULES`, one `Rule` per code beside the check that
decides it; `rules/catalog.py` collects them, and the catalog, the docs table
(docs/diagnoses.md), the thresholds each code reads and the inhibition table
(`rules/inhibit.py`) all derive from these records.

`source` tells the incident tracker when a rule cannot see its data, so that an active
diagnosis is held rather than resolved:
- ``health``: the endpoint's latest `/health` answer (data or a 404);
- ``rest+graphql``: both the latest `/health` answer and a successful GraphQL answer;
- ``graphql``: a successful GraphQL answer (configuration, templates);
- ``account``: the account data from GraphQL;
- ``self``: the rule decides itself (it is about the probes' outcomes);
- ``v2``: the endpoint's REST v2 worker records (`/workers`, with `/releases`): unknown
  in a cycle whose sample has no `/workers` answer (not asked, or the call failed), so an
  active diagnosis is held until an answer shows it gone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from rules.diagnosis import Diagnosis, Scope, Severity

Source = Literal["health", "rest+graphql", "graphql", "account", "self", "v2"]

Check = TypeVar("Check", bound=Callable[..., object])


@dataclass(frozen=True, slots=True)
class Inhibit:
    """What a cause does to the other diagnoses while it is active (Alertmanager's
    `inhibit_rules` in miniature; `rules/inhibit.py` applies it)."""

    # the diagnoses it explains, dropped before they become incidents: every endpoint's
    # ("endpoint_scope") or the other codes of its own endpoint ("same_endpoint")
    drops: Literal["endpoint_scope", "same_endpoint"]
    # True: an active incident it explains is held, not resolved (its data is unknown
    # while the cause lasts); False: it resolves, with the cause named
    holds: bool
    # the active incidents whose notifications it mutes, and whose resolution it explains
    mutes: Literal["all", "same_endpoint"]


@dataclass(frozen=True, slots=True)
class Finding:
    """What a check found; its record adds the code and scope, its family the endpoint."""

    severity: Severity
    summary: str
    remedy: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    # which code, where one check decides several (the 404 readings of endpoint_state)
    code: str | None = None


@dataclass(frozen=True, slots=True)
class Rule(Generic[Check]):
    """One diagnosis code and everything about it. The family's `diagnose` calls `check`
    (one signature per family; one check may decide several codes) and turns its
    `Finding` into the Diagnosis with `diagnosis()`."""

    code: str
    scope: Scope
    severity: Severity  # the default; `severity_doc` says when the check changes it
    source: Source
    family: str
    check: Check
    raised_when: str  # docs/diagnoses.md's "raised when", without the threshold keys
    thresholds: tuple[str, ...] = ()  # the `Thresholds` keys (config.yaml `rules:`) it reads
    severity_doc: str = ""  # the docs' severity column, when it is not just `severity`
    inhibits: Inhibit | None = None

    def diagnosis(
        self, found: Finding, endpoint_id: str | None = None, endpoint_name: str | None = None
    ) -> Diagnosis:
        """The Diagnosis of a finding of this rule's check."""
        return Diagnosis(
            code=self.code,
            scope=self.scope,
            severity=found.severity,
            summary=found.summary,
            remedy=found.remedy,
            evidence=found.evidence,
            endpoint_id=endpoint_id,
            endpoint_name=endpoint_name,
        )
