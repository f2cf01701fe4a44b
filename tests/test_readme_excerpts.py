"""The README's example excerpts are what scripts/readme_excerpts.py generates from real
runs (the demo's console, a replay, a Slack message), not typed text."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.integration
def test_readme_excerpts_are_generated() -> None:
    """`readme_excerpts.py --check` finds README.md as it would write it; the terminal
    excerpt shows a raised block, resolved lines and no JSON, none over 300 characters."""
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "readme_excerpts.py"), "--check"],
        capture_output=True, text=True, timeout=180, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    (terminal,) = re.findall(r"<!-- excerpt:terminal -->\n~~~text\n(.*?)\n~~~", readme, re.S)
    lines = terminal.splitlines()
    assert any(re.match(r"\d\d:\d\d:\d\d  cycle \d+ +RAISED ", line) for line in lines)
    assert any(" RESOLVED " in line for line in lines)
    assert "    fix   " in terminal
    assert not any(line.startswith("{") for line in lines)
    assert max(map(len, lines)) <= 300
    # the quick start is still two commands
    quick = readme.split("## Quick start", 1)[1].split("## A short tour", 1)[0]
    assert re.findall(r"```sh\n(.*?)\n```", quick, re.S) == [
        "python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/runpod-monitor demo",
        "scripts/test",
    ]
