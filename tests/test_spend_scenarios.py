"""The spend traps are near misses, not blind spots: each trap scenario stays silent with
the shipped thresholds (tests/test_scenarios.py replays its `never:`) and raises its code
once a threshold is tightened past it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml
from structlog.testing import capture_logs

from monitor.commands.replay import replay
from monitor.simulator import Scenario

DIR = Path(__file__).resolve().parent / "scenarios"


def raised(name: str, rules: dict[str, Any]) -> set[str]:
    data = yaml.safe_load((DIR / name).read_text())
    data["monitor"] = {"rules": rules}
    data.pop("expect")
    with capture_logs():
        result = asyncio.run(replay(Scenario.from_dict(data), env={}))
    return {i.diagnosis.code for i in result.incidents}


@pytest.mark.parametrize(
    ("name", "rules", "code"),
    [
        ("trap-long-normal-job.yaml", {"job_overrun_factor": 1.5}, "job_overrun"),
        ("trap-empty-output-by-design.yaml", {"empty_output_expected": []}, "empty_output"),
        ("trap-cold-start-slightly-slower-release.yaml",
         {"cold_start_factor": 1.2, "cold_start_margin_s": 5}, "cold_start_regression"),
    ],
)
def test_a_trap_raises_once_its_threshold_is_tightened(
    name: str, rules: dict[str, Any], code: str
) -> None:
    assert code in raised(name, rules)


def test_a_first_cold_start_has_no_baseline_whatever_the_thresholds() -> None:
    loosest = {"cold_start_factor": 1.01, "cold_start_margin_s": 0,
               "cold_start_baseline_min": 1, "cold_start_recent": 1}
    assert "cold_start_regression" not in raised("first-cold-start.yaml", loosest)
