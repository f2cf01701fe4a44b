"""The records per diagnosis: the catalog, the docs table, the thresholds and the one
inhibition table all derive from them and agree."""

from __future__ import annotations

from pathlib import Path

import yaml

from rules.catalog import ALL_RULES, CATALOG, CODES, INHIBITIONS, markdown
from rules.diagnosis import Diagnosis, Scope
from rules.inhibit import holds, muted_by, suppress
from rules.thresholds import Thresholds

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "<!-- generated from the rules' records (rules/*.py RULES): python -m rules.catalog -->\n"
END = "<!-- end of generated -->\n"


def test_the_docs_table_is_the_records_rendered() -> None:
    """docs/diagnoses.md's tables and inhibitions are what the records say (regenerate
    with `python -m rules.catalog`)."""
    text = (ROOT / "docs" / "diagnoses.md").read_text()
    assert BEGIN in text
    assert END in text
    generated = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert generated == markdown(), "regenerate: python -m rules.catalog, between the markers"


def test_every_code_has_one_record_and_its_docs_row() -> None:
    assert len(CODES) == len(ALL_RULES) == 25
    rendered = markdown()
    for code in CODES:
        assert rendered.count(f"| `{code}` |") == 1, code


def test_every_threshold_belongs_to_a_record_and_every_record_key_exists() -> None:
    """The config schema's `rules:` keys and the records' thresholds are the same set,
    and so are the commented keys of config.yaml."""
    read = {key for rule in ALL_RULES for key in rule.thresholds}
    assert read == set(Thresholds.model_fields)
    example = yaml.safe_load((ROOT / "config.yaml").read_text())
    assert set(example["rules"]) == read


def test_each_family_module_holds_its_records() -> None:
    for rule in ALL_RULES:
        assert rule.check.__module__ == f"rules.{rule.family}", rule.code


def diag(code: str, eid: str | None = "ep1") -> Diagnosis:
    scope: Scope = "endpoint" if eid else "account"
    return Diagnosis(code, scope, "critical", f"{code} summary", "fix", {}, eid, eid)


def test_the_inhibition_table_comes_from_the_records_broader_cause_first() -> None:
    assert [code for code, _ in INHIBITIONS] == ["auth_invalid", "balance_exhausted"]
    assert all(CATALOG[code].inhibits is rule for code, rule in INHIBITIONS)


def test_auth_invalid_drops_endpoint_diagnoses_but_keeps_account_ones() -> None:
    kept = suppress([diag("auth_invalid", None), diag("crash_loop"), diag("low_balance", None),
                     diag("balance_exhausted", "ep2")])
    assert [d.code for d in kept] == ["auth_invalid", "low_balance"]


def test_auth_invalid_holds_endpoint_incidents_and_balance_exhausted_does_not() -> None:
    current = {("auth_invalid", None)}
    assert holds(diag("crash_loop"), current)
    assert not holds(diag("low_balance", None), current)
    assert not holds(diag("crash_loop"), {("balance_exhausted", "ep1")})


def test_muted_by_names_the_cause_the_router_reports() -> None:
    active = {("balance_exhausted", "ep1"), ("crash_loop", "ep1"), ("crash_loop", "ep2")}
    assert muted_by(("crash_loop", "ep1"), active) == "balance_exhausted"
    assert muted_by(("crash_loop", "ep2"), active) is None
    assert muted_by(("balance_exhausted", "ep1"), active) is None
    with_auth = active | {("auth_invalid", None)}
    # auth_invalid mutes everything else, account diagnoses too, and is named first
    assert muted_by(("crash_loop", "ep1"), with_auth) == "auth_invalid"
    assert muted_by(("low_balance", None), with_auth) == "auth_invalid"
    assert muted_by(("auth_invalid", None), with_auth) is None
