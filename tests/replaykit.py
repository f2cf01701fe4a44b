"""Scenario replays shared by the test modules that read them: each scenario replayed once
per process and control plane."""

from __future__ import annotations

import asyncio
from functools import cache
from pathlib import Path

from structlog.testing import capture_logs

from monitor.commands.replay import ReplayResult, replay
from monitor.simulator import load_scenario


def replayed(path: Path, control_plane: str | None = None) -> ReplayResult:
    """Replay one scenario in-process (once per process and mode), with no API key from the
    env; `control_plane` None: the scenario's (auto unless it says)."""
    return _replayed(path.resolve(), control_plane)


@cache
def _replayed(path: Path, control_plane: str | None) -> ReplayResult:
    with capture_logs():  # the per-cycle log lines are not what these tests read
        return asyncio.run(replay(load_scenario(path), env={}, control_plane=control_plane))

