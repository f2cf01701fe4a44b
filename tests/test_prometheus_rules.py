"""The Prometheus alert rules and config: valid for promtool, unit-tested, and complete."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from rules.catalog import CATALOG

ROOT = Path(__file__).resolve().parent.parent
PROM_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROM_DIR / "alerts.yml"
ALERTS_TEST = PROM_DIR / "alerts_test.yml"
CONFIG = PROM_DIR / "prometheus.yml"
INSTALL = ROOT / "scripts" / "install-system-deps"

# Codes whose default severity is lower but that the rules raise to critical.
ESCALATING = frozenset({"low_balance"})

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not on PATH (Debian package prometheus; scripts/install-system-deps "
           "installs it, and CI runs that first)",
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"] if "alert" in rule]


def rule_codes(expr: str) -> set[str]:
    """The diagnosis codes a `runpod_diagnosis_active{code=~"a|b"}` selector matches."""
    m = re.search(r'code=~?"([^"]*)"', expr)
    return set(m.group(1).split("|")) if m else set()


@needs_promtool
def test_promtool_check_rules() -> None:
    """`promtool check rules` accepts alerts.yml."""
    out = promtool("check", "rules", str(ALERTS))
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    """`promtool test rules` passes every case of alerts_test.yml."""
    out = promtool("test", "rules", str(ALERTS_TEST))
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_promtool_check_config() -> None:
    """`promtool check config` accepts prometheus.yml and the rule file it loads."""
    out = promtool("check", "config", str(CONFIG))
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_critical_code_has_exactly_one_alert() -> None:
    """Each diagnosis that can be critical is matched by one rule, on severity="critical"."""
    critical = {c for c, info in CATALOG.items() if info.severity == "critical"} | ESCALATING
    seen: dict[str, str] = {}
    for rule in alert_rules():
        if "runpod_diagnosis_active" not in rule["expr"]:
            continue
        assert 'severity="critical"' in rule["expr"], rule["alert"]
        for code in rule_codes(rule["expr"]):
            assert code in CATALOG, f"{rule['alert']}: unknown code {code}"
            assert code not in seen, f"{code} in {seen.get(code)} and {rule['alert']}"
            seen[code] = rule["alert"]
    assert set(seen) == critical


def test_every_rule_is_labelled_and_explained() -> None:
    """Every alert has severity, summary, description; diagnosis alerts cite the API."""
    names = set()
    for rule in alert_rules():
        names.add(rule["alert"])
        assert rule["labels"]["severity"] in {"critical", "warning", "none"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]
        if "runpod_diagnosis_active" in rule["expr"]:
            assert "/api/v1/diagnoses" in rule["annotations"]["description"], rule["alert"]
            if all(CATALOG[c].scope == "endpoint" for c in rule_codes(rule["expr"])):
                assert "{{ $labels.endpoint }}" in rule["annotations"]["summary"]
    assert {"RunPodMonitorStaleData", "RunPodMonitorDown", "Watchdog"} <= names


def test_every_rule_has_firing_and_quiet_unit_tests() -> None:
    """alerts_test.yml tests each rule firing and (Watchdog aside) not firing."""
    data = yaml.safe_load(ALERTS_TEST.read_text(encoding="utf-8"))
    assert data["rule_files"] == ["alerts.yml"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in data["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert firing == names
    assert quiet == names - {"Watchdog"}


def test_install_script_is_valid_bash() -> None:
    """scripts/install-system-deps is executable bash that parses."""
    assert os.access(INSTALL, os.X_OK)
    assert INSTALL.read_text(encoding="utf-8").startswith("#!/usr/bin/env bash\n")
    subprocess.run(["bash", "-n", str(INSTALL)], check=True, timeout=30)


def test_install_script_is_idempotent() -> None:
    """With its packages installed, the script only says so and exits 0 (no apt run)."""
    dpkg = shutil.which("dpkg-query")
    if dpkg is None:
        pytest.skip("not a Debian system: dpkg-query is missing")
    listed = re.search(r"^packages=\(([^)]*)\)", INSTALL.read_text(encoding="utf-8"), re.M)
    assert listed is not None
    packages = listed.group(1).split()
    assert {"prometheus", "prometheus-alertmanager"} <= set(packages)
    for pkg in packages:
        status = subprocess.run([dpkg, "-W", "-f=${Status}", pkg], capture_output=True,
                                text=True, timeout=30)
        if status.stdout != "install ok installed":
            pytest.skip(f"{pkg} is not installed, so a run would install it")
    out = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("already installed") == len(packages)
    assert "apt-get" not in out.stdout + out.stderr
