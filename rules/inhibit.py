"""The one inhibition table, read by the incident tracker and the alert router.

The table is `rules.catalog.INHIBITIONS`, derived from the `inhibits` of each
diagnosis's record (rules/rule.py). Three readers: `suppress` drops the symptoms a cause
explains before they become incidents, `holds` keeps an explained incident active while
its data is hidden, and `muted_by` names the cause that mutes an incident's
notifications or explains its resolution.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from rules.catalog import INHIBITIONS
from rules.diagnosis import Diagnosis, Scope
from rules.rule import Inhibit

Key = tuple[str, str | None]


def _explains(rule: Inhibit, cause: str, cause_endpoints: Collection[str | None],
              code: str, scope: Scope, endpoint_id: str | None) -> bool:
    if code == cause:
        return False
    if rule.drops == "endpoint_scope":
        return scope == "endpoint"
    return endpoint_id is not None and endpoint_id in cause_endpoints


def suppress(found: Iterable[Diagnosis]) -> list[Diagnosis]:
    """The diagnoses without the symptoms a cause among them explains."""
    kept = list(found)
    for cause, rule in INHIBITIONS:
        endpoints = {d.endpoint_id for d in kept if d.code == cause}
        if endpoints:
            kept = [
                d for d in kept
                if not _explains(rule, cause, endpoints, d.code, d.scope, d.endpoint_id)
            ]
    return kept


def holds(diagnosis: Diagnosis, current: Collection[Key]) -> bool:
    """True when a cause in this cycle's `current` keys hides `diagnosis`'s data, so that
    its incident is held rather than resolved."""
    for cause, rule in INHIBITIONS:
        if not rule.holds:
            continue
        endpoints = {eid for code, eid in current if code == cause}
        if endpoints and _explains(
            rule, cause, endpoints, diagnosis.code, diagnosis.scope, diagnosis.endpoint_id
        ):
            return True
    return False


def muted_by(key: Key, active: Collection[Key]) -> str | None:
    """The active cause that mutes the incident `key` (or explains why it ended), if any."""
    code, endpoint_id = key
    for cause, rule in INHIBITIONS:
        if code == cause:
            continue
        endpoints = {eid for c, eid in active if c == cause}
        if not endpoints:
            continue
        if rule.mutes == "all" or (endpoint_id is not None and endpoint_id in endpoints):
            return cause
    return None
