"""The diagnosis catalog of spec/diagnoses.md: every code's record, collected from the
families' `RULES` in engine order (rules/rule.py says what a record holds)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from model.history import History
from rules import account, audit, capacity, endpoint_state, jobs, lifecycle, releases, spend
from rules.diagnosis import Diagnosis
from rules.rule import Inhibit, Rule
from rules.thresholds import Thresholds


class Family(Protocol):
    """A family module: its records, and `diagnose`, which runs their checks."""

    @property
    def RULES(self) -> Sequence[Rule[Any]]: ...

    def diagnose(self, history: History, th: Thresholds) -> list[Diagnosis]: ...


# The families in evaluation order (the order of the diagnoses, the catalog and CODES).
FAMILIES: tuple[Family, ...] = (
    capacity, lifecycle, releases, jobs, spend, endpoint_state, account, audit
)

ALL_RULES: tuple[Rule[Any], ...] = tuple(rule for family in FAMILIES for rule in family.RULES)

CATALOG: Mapping[str, Rule[Any]] = {rule.code: rule for rule in ALL_RULES}
CODES: tuple[str, ...] = tuple(CATALOG)

# The inhibition table (rules/inhibit.py applies it): each cause and what it does, the
# broader cause first, as it is the one named when two apply (auth_invalid, then
# balance_exhausted).
INHIBITIONS: tuple[tuple[str, Inhibit], ...] = tuple(
    sorted(
        ((rule.code, rule.inhibits) for rule in ALL_RULES if rule.inhibits is not None),
        key=lambda pair: pair[1].mutes != "all",
    )
)


def _row(rule: Rule[Any]) -> str:
    when = rule.raised_when
    if rule.thresholds:
        when += " [" + ", ".join(f"`{key}`" for key in rule.thresholds) + "]"
    cells = (f"`{rule.code}`", rule.severity_doc or rule.severity, when)
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _table(title: str, rules: list[Rule[Any]]) -> list[str]:
    return [f"## {title}", "", "| code | severity | raised when |", "|---|---|---|",
            *(_row(r) for r in rules), ""]


def _inhibition(code: str, inhibit: Inhibit) -> str:
    if inhibit.drops == "endpoint_scope":
        dropped = "drops every endpoint diagnosis"
    else:
        dropped = "drops the other diagnoses of its endpoint"
    fate = ("holds the active ones (their data is hidden while it lasts)" if inhibit.holds
            else "lets the active ones resolve, naming it as the cause")
    muted = ("every other diagnosis" if inhibit.mutes == "all"
             else "its endpoint's other diagnoses")
    return f"- `{code}` {dropped} and {fate}; it mutes the notifications of {muted}."


def markdown() -> str:
    """docs/diagnoses.md's tables and inhibitions, rendered from the records."""
    endpoint = [r for r in ALL_RULES if r.scope == "endpoint" and r.family != "audit"]
    account_scope = [r for r in ALL_RULES if r.scope == "account"]
    audit_rules = [r for r in ALL_RULES if r.family == "audit"]
    lines = [
        *_table("Endpoint scope", endpoint),
        *_table("Account scope", account_scope),
        *_table("Template audit (endpoint scope)", audit_rules),
        "## Causes mute their symptoms",
        "",
        *(_inhibition(code, inhibit) for code, inhibit in INHIBITIONS),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
